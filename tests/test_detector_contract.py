"""One contract test over every detector (river's ``check_estimator`` idea, STYLE.md).

A new detector plugs in by adding a :class:`Case` to ``CASES``: how to build it, how to read the
findings from what ``update`` returns, and seeded streams of normal and planted-anomaly trades.
Every check below then runs against it.
"""

from __future__ import annotations

import math
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detectors.base import Finding, TradeColumns, score_ratio
from detectors.market import MarketConfig, MarketMonitor
from streams.contracts import ALERT_KINDS

__all__: list[str] = []

T0 = 1_700_000_000.0
VENUE, INSTRUMENT = "v", "GPU-H100-1H"


# ------------------------------------------------------------------------------ streams
def market(seed: int, *, seconds: int = 900, rate: int = 10, sigma: float = 0.0005,
           move: float = 0.0, move_at: int = 600, move_s: float = 20.0, mover: str = "planted",
           unique_agents: bool = False) -> TradeColumns:
    """A seeded random walk of evenly spaced trades, optionally with one planted move.

    During the move ``mover`` is the seller (a crash) or the buyer (a spike) of every trade.
    """
    rng = np.random.default_rng(seed)
    n = seconds * rate
    steps = rng.normal(0.0, sigma / math.sqrt(rate), n)
    t = np.arange(n) / rate
    level = np.exp(np.cumsum(steps))
    inside = (t >= move_at) & (t < move_at + move_s)
    ramp = np.clip((t - move_at) / move_s, 0.0, 1.0)
    price = (2.0 * level * (1.0 + move * ramp)).tolist()
    who = rng.integers(0, 20, (n, 2))
    if unique_agents:
        buyers = [f"b{i:07d}" for i in range(n)]
        sellers = [f"s{i:07d}" for i in range(n)]
    else:
        buyers = [f"agent-{b:02d}" for b in who[:, 0]]
        sellers = [f"agent-{s:02d}" for s in who[:, 1]]
    for i in np.flatnonzero(inside).tolist():
        if move < 0:
            sellers[i] = mover
        else:
            buyers[i] = mover
    return TradeColumns(VENUE, INSTRUMENT, (T0 + t).round(6).tolist(),
                        [f"t{i:07d}" for i in range(n)], price,
                        rng.integers(1, 5, n).astype(float).tolist(), buyers, sellers)


def normal_markets(seed: int) -> list[TradeColumns]:
    return [market(seed), market(seed + 100, sigma=0.002, rate=4, seconds=1800),
            market(seed + 200, sigma=0.0001, rate=25)]


def planted_markets(seed: int) -> list[TradeColumns]:
    return [market(seed, move=-0.30), market(seed, move=2.0, move_s=10.0),
            market(seed, move=-0.12, move_s=180.0, seconds=1000)]


def long_market(seed: int, events: int) -> TradeColumns:
    return market(seed, seconds=events // 20, rate=20, unique_agents=True)


# ------------------------------------------------------------------------------ cases
@dataclass(frozen=True)
class Case:
    id: str
    make: Callable[[], Any]
    findings: Callable[[Any], list[Finding]]
    normal: Callable[[int], list[TradeColumns]]
    planted: Callable[[int], list[TradeColumns]]
    long: Callable[[int, int], TradeColumns]


CASES = [
    Case(id="market", make=lambda: MarketMonitor(VENUE, INSTRUMENT, MarketConfig()),
         findings=lambda out: out.findings, normal=normal_markets, planted=planted_markets,
         long=long_market),
]


@pytest.fixture(params=CASES, ids=[c.id for c in CASES])
def case(request: pytest.FixtureRequest) -> Case:
    return request.param  # type: ignore[no-any-return]


def feed(case: Case, detector: Any, cols: TradeColumns, *, cuts: list[int] | None = None,
         repickle: bool = False) -> tuple[Any, list[Finding]]:
    """Feed ``cols`` (optionally in pieces, optionally pickling between pieces)."""
    bounds = [0, *sorted(cuts or []), len(cols)]
    found: list[Finding] = []
    for lo, hi in zip(bounds, bounds[1:], strict=False):
        found += case.findings(detector.update(cols.slice(lo, hi)))
        if repickle:
            detector = pickle.loads(pickle.dumps(detector))
    return detector, found


# ------------------------------------------------------------------------------ the contract
def test_has_the_detector_protocol(case: Case) -> None:
    detector = case.make()
    assert isinstance(detector.name, str)
    assert detector.name
    assert isinstance(detector.version, str)
    assert detector.version
    assert case.findings(detector.update(TradeColumns.from_rows(VENUE, INSTRUMENT, []))) == []


@pytest.mark.parametrize("seed", [0, 1])
def test_normal_markets_give_no_findings(case: Case, seed: int) -> None:
    for cols in case.normal(seed):
        _, found = feed(case, case.make(), cols)
        assert found == [], [f.summary for f in found]


@pytest.mark.parametrize("seed", [0, 1])
def test_planted_anomalies_score_higher_than_normal(case: Case, seed: int) -> None:
    normal = [f.score for cols in case.normal(seed) for f in feed(case, case.make(), cols)[1]]
    for cols in case.planted(seed):
        _, found = feed(case, case.make(), cols)
        assert found, "a planted anomaly was missed"
        assert max(f.score for f in found) > max(normal, default=0.0)


@pytest.mark.parametrize("seed", [0, 1])
def test_findings_are_finite_explained_and_well_formed(case: Case, seed: int) -> None:
    for cols in case.planted(seed):
        _, found = feed(case, case.make(), cols)
        planted_agent = "planted"
        assert any(planted_agent in f.agents for f in found)
        for f in found:
            assert isinstance(f.score, float)
            assert math.isfinite(f.score)
            assert 0.0 <= f.score <= 100.0
            assert f.kind in ALERT_KINDS
            assert f.venue == VENUE
            assert f.instrument == INSTRUMENT
            assert cols.ts[0] <= f.ts <= cols.ts[-1]
            assert isinstance(f.summary, str)
            assert f.summary.strip()
            assert "\n" not in f.summary
            assert "\r" not in f.summary
            assert isinstance(f.evidence, dict)
            assert f.evidence
            assert all(isinstance(a, str) for a in f.agents)
            assert f.key, "findings need a stable key for the deterministic alert id"
        assert len({f.key for f in found}) == len(found)


def test_same_input_gives_same_output(case: Case) -> None:
    for cols in case.planted(3):
        _, a = feed(case, case.make(), cols)
        _, b = feed(case, case.make(), cols)
        assert a
        assert a == b


@pytest.mark.parametrize("pieces", [2, 17, 500])
def test_batching_does_not_change_findings(case: Case, pieces: int) -> None:
    for cols in case.planted(4):
        _, whole = feed(case, case.make(), cols)
        cuts = list(range(len(cols) // pieces, len(cols), max(1, len(cols) // pieces)))
        _, split = feed(case, case.make(), cols, cuts=cuts)
        assert split == whole


def test_pickles_fresh_and_mid_stream(case: Case) -> None:
    fresh = pickle.loads(pickle.dumps(case.make()))
    for cols in case.planted(5):
        _, whole = feed(case, case.make(), cols)
        cuts = [len(cols) // 5, len(cols) // 2, len(cols) * 2 // 3, len(cols) - 1]
        _, restored = feed(case, case.make(), cols, cuts=cuts, repickle=True)
        assert restored == whole
    _, after_roundtrip = feed(case, fresh, case.planted(5)[0])
    assert after_roundtrip == feed(case, case.make(), case.planted(5)[0])[1]


def test_memory_is_bounded_after_many_events_and_agents(case: Case) -> None:
    """State does not grow with events or with the number of distinct agents ever seen."""
    stream = case.long(6, 120_000)  # every trade has a never-seen buyer and seller
    detector = case.make()
    sizes = []
    for lo in range(0, len(stream), 20_000):
        detector.update(stream.slice(lo, lo + 20_000))
        sizes.append(len(pickle.dumps(detector)))
    assert len(sizes) == 6
    assert max(sizes[1:]) <= 1.1 * sizes[1], sizes


# ------------------------------------------------------------------------------ scores
@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(st.floats(allow_nan=True, allow_infinity=True), st.floats(0.0, 50.0))
def test_score_ratio_is_bounded_and_monotone(ratio: float, more: float) -> None:
    score = score_ratio(ratio)
    assert math.isfinite(score)
    assert 0.0 <= score <= 100.0
    if ratio == ratio:  # not NaN
        assert score_ratio(ratio + more) >= score


def test_score_ratio_anchors() -> None:
    assert score_ratio(1.0) == 50.0
    assert score_ratio(2.0) == 75.0
    assert score_ratio(3.0) == 87.5
    assert score_ratio(0.0) == 0.0
    assert score_ratio(-1.0) == 0.0
    assert score_ratio(math.inf) == 100.0
