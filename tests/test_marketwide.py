"""MarketWideBreaker: broad, fast falls of the venue index halt the venue (MWC1/2/3)."""

from __future__ import annotations

import math
import pickle

import numpy as np

from detectors.marketwide import MarketWideBreaker, cap_weights
from detectors.venue_base import HaltDecision, PriceBucket, Tick

T0 = 1_767_225_600.0
NAMES = [f"I{i:02d}" for i in range(10)]


def bucket(t: float, px: dict[str, float]) -> PriceBucket:
    return PriceBucket("v", t, t + 5.0, {n: Tick(p, p, p, p, 30.0, 30.0 * p, 30)
                                         for n, p in sorted(px.items())})


def walk(n: int, *, seed: int, names: list[str] = NAMES, sd: float = 0.002
         ) -> list[dict[str, float]]:
    rng = np.random.default_rng(seed)
    paths = 100.0 * np.exp(np.cumsum(rng.normal(0.0, sd, (n, len(names))), axis=0))
    return [{nm: float(paths[i, j]) for j, nm in enumerate(names)} for i in range(n)]


def fall(start: dict[str, float], to: float, n: int, who: list[str] | None = None
         ) -> list[dict[str, float]]:
    """``n`` buckets falling geometrically to ``to`` x the start (only ``who``)."""
    who = list(start) if who is None else who
    return [{k: p * (to ** ((i + 1) / n) if k in who else 1.0) for k, p in start.items()}
            for i in range(n)]


def run(det: MarketWideBreaker, prices: list[dict[str, float]], start: float = T0
        ) -> tuple[list, list[HaltDecision]]:
    found, halts = [], []
    for i, px in enumerate(prices):
        b = bucket(start + 5.0 * i, px)
        for out in (det.advance(b.start, None), det.observe_prices(b, None)):
            found += out[0]
            halts += out[1]
    return found, halts


def test_cap_weights_sum_to_one_and_cap() -> None:
    w = cap_weights([50.0, 20.0, 10.0, 5.0, 5.0, 5.0, 5.0], 0.2)
    assert math.isclose(sum(w), 1.0)
    assert max(w) <= 0.2 + 1e-12


def test_levels_escalate_and_mwc3_does_not_resume() -> None:
    calm = walk(240, seed=1)
    crash = fall(calm[-1], 0.75, 60)  # -25 % over 5 minutes, every constituent
    found, halts = run(MarketWideBreaker(), calm + crash)
    assert [(h.instrument, h.state, h.reason) for h in halts] == [
        ("*", "HALTED", "MWC1"), ("*", "HALTED", "MWC2"), ("*", "HALTED", "MWC3")]
    assert [h.resume_at is not None and h.resume_at - h.ts for h in halts] == [900.0, 900.0,
                                                                              False]
    assert [f.kind for f in found] == ["flash_crash"] * 3
    assert all(f.instrument is None and f.agents == [] for f in found)
    assert [f.evidence["level"] for f in found] == ["MWC1", "MWC2", "MWC3"]
    assert found[0].evidence["breadth"]["decliners"] == 10
    assert halts[0].alert_ids == (found[0].key,)


def test_mwc1_resumes_after_15_minutes_stamped_at_resume_at() -> None:
    calm = walk(240, seed=2)
    det = MarketWideBreaker()
    _, halts = run(det, calm + fall(calm[-1], 0.91, 12) + [calm[-1]] * 10)
    [halt] = halts
    assert halt.reason == "MWC1"
    assert halt.resume_at == halt.ts + 900.0
    assert det.advance(halt.ts + 899.0, None) == ([], [])
    assert det.advance(halt.ts + 5_000.0, None)[1] == [
        HaltDecision(halt.ts + 900.0, "*", "TRADING", "RESUME", None)]
    assert det.advance(halt.ts + 6_000.0, None) == ([], [])


def test_each_level_once_per_24_hours() -> None:
    calm = walk(240, seed=3)
    dip = fall(calm[-1], 0.91, 12)
    back = [calm[-1]] * 240
    det = MarketWideBreaker()
    _, first = run(det, calm + dip + back)
    _, again = run(det, dip + back, start=T0 + 5.0 * 600)  # same day: no second MWC1
    _, later = run(det, calm + dip + back, start=T0 + 86_400.0 + 3_600.0)
    assert [h.reason for h in first] == ["MWC1", "RESUME"]
    assert [h.reason for h in again] == []
    assert [h.reason for h in later] == ["MWC1", "RESUME"]


def test_one_instrument_crash_or_spike_does_not_halt_the_venue() -> None:
    names = NAMES[:4]  # four equally weighted constituents: -50 % of one is -12.5 %
    calm = walk(240, seed=4, names=names)
    crash = fall(calm[-1], 0.5, 6, who=["I00"])
    spike = fall(calm[-1], 4.0, 6, who=["I01"])
    revert = fall(spike[-1], 0.25, 6, who=["I01"])
    assert run(MarketWideBreaker(), calm + crash + [crash[-1]] * 60) == ([], [])
    assert run(MarketWideBreaker(), calm + spike + revert + [revert[-1]] * 60) == ([], [])


def test_calm_random_walks_never_halt() -> None:
    for seed in range(3):
        assert run(MarketWideBreaker(), walk(1_440, seed=seed)) == ([], [])


def test_pickle_round_trip_continues_identically() -> None:
    calm = walk(240, seed=5)
    prices = calm + fall(calm[-1], 0.8, 60) + [calm[-1]] * 200
    det = MarketWideBreaker()
    head = run(det, prices[:250])
    twin = pickle.loads(pickle.dumps(det))
    tail = run(det, prices[250:], start=T0 + 5.0 * 250)
    assert tail[1]
    assert tail == run(twin, prices[250:], start=T0 + 5.0 * 250)
    assert run(MarketWideBreaker(), prices) == (head[0] + tail[0], head[1] + tail[1])


def test_memory_bound_with_10k_instruments() -> None:
    det = MarketWideBreaker(max_instruments=2_000)
    liquid = walk(200, seed=6)
    for k in range(200):
        px = {**liquid[k], **{f"J{(k * 500 + i) % 10_000:05d}": 50.0 for i in range(500)}}
        det.advance(T0 + 5.0 * k, None)
        det.observe_prices(bucket(T0 + 5.0 * k, px), None)
    assert len(det._insts) <= 2_000
    assert len(det._members) <= 50
    assert set(NAMES) <= set(det._insts)  # constituents are never evicted
    assert len(det._highs) <= 61
