"""MarketMonitor on posted-price markets: repricing (a price war) does not pause, a pump halts."""

from __future__ import annotations

import pickle

import numpy as np

from detectors.base import TradeColumns
from detectors.market import MarketMonitor, MonitorOutput
from tests.test_market import T0, Tape, run, states

__all__: list[str] = []

Row = tuple[float, str, float, float, str, str]


def posted(path: list[tuple[float, float]], seed: int = 0, period: float = 15.0) -> list[Row]:
    """Two sellers post one price each per period; six buyers take them at random moments."""
    rng = np.random.default_rng(seed)
    rows: list[Row] = []
    for k, prices in enumerate(path):
        for w in np.sort(rng.uniform(0.0, period - 0.5, int(rng.integers(4, 8)))):
            s = int(rng.integers(2))
            rows.append((round(T0 + k * period + float(w), 3), f"t{len(rows):06d}", prices[s],
                         float(rng.integers(1, 5)), f"buyer-{rng.integers(6)}", f"seller-{s}"))
    return rows


def feed(rows: list[Row]) -> tuple[MarketMonitor, MonitorOutput]:
    m = MarketMonitor("v", "GPU")
    return m, m.update(TradeColumns.from_rows("v", "GPU", rows))


def war(depth: float) -> list[tuple[float, float]]:
    high = (1.9, 1.9)
    low = 1.9 * (1.0 - depth)
    return [high] * 80 + [(low, 1.9), (low, low * 1.02), (low, low)] * 2 + [high] * 40


def test_a_price_war_of_30_percent_and_back_does_not_pause() -> None:
    m, out = feed(posted(war(0.30)))
    assert (m.posted or (False,))[0], "two sellers posting prices: a posted-price market"
    assert out.transitions == [], [f.summary for f in out.findings]
    assert out.findings == []


def test_the_same_war_pauses_without_the_regime() -> None:
    import dataclasses

    from detectors.market import MarketConfig
    m = MarketMonitor("v", "GPU", dataclasses.replace(MarketConfig(), posted_sellers=0))
    out = m.update(TradeColumns.from_rows("v", "GPU", posted(war(0.30))))
    assert out.transitions, "the control: an order-book monitor would pause this war"


def test_a_pump_of_150_percent_in_a_posted_market_halts() -> None:
    path = [(1.9, 1.9)] * 80 + [(1.9 * (1 + 0.15 * k), 1.9 * (1 + 0.15 * k))
                                for k in range(1, 11)] + [(4.75, 4.75)] * 20
    m, out = feed(posted(path))
    assert out.transitions
    assert any(t.state == "HALTED" for t in out.transitions), states(out)
    first = out.findings[0]
    assert first.kind == "price_spike"
    assert first.evidence["regime"] == "posted_price"


def test_an_order_book_market_never_enters_the_regime() -> None:
    m, out = run(Tape(1, rate=2).calm(900).ramp(20, -0.30, seller="dumper").calm(600))
    assert not (m.posted or (False,))[0]
    assert ("PAUSED", "VELOCITY") in states(out)
    # one seller walking the price down a slope prints a new price each time: not posted
    m, out = run(Tape(1, rate=2).calm(900).ramp(3000, -0.35, seller="bleeder").calm(60))
    assert not (m.posted or (False,))[0]
    assert out.transitions


def test_regime_survives_pickling_and_batching() -> None:
    rows = posted(war(0.30), seed=3)
    _, whole = feed(rows)
    m = MarketMonitor("v", "GPU")
    out = MonitorOutput()
    for a in range(0, len(rows), 37):
        out.extend(m.update(TradeColumns.from_rows("v", "GPU", rows[a:a + 37])))
        m = pickle.loads(pickle.dumps(m, protocol=pickle.HIGHEST_PROTOCOL))
    assert repr((out.findings, out.transitions, out.bars)) == repr(
        (whole.findings, whole.transitions, whole.bars))
    assert (m.posted or (False,))[0]
