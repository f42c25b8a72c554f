"""PriceCollusionDetector: screens on hand-built windows, state bounds, one simulator check."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from detectors.base import Finding
from detectors.collusion import PriceCollusionDetector
from detectors.flows import PairFlow
from detectors.venue_base import WindowView

W = 60.0


def window(i: int, prices: dict[str, float], *, inst: str = "GPU", qty: float = 10.0,
           buyer: str = "buyer") -> WindowView:
    """Window ``i`` where each seller sells ``qty`` at its price to one buyer."""
    t = W * i
    pairs = [PairFlow(buyer, s, 2, qty, qty * p, t, t + 30,
                      [f"{inst}-{s}-{i}-a", f"{inst}-{s}-{i}-b"]) for s, p in prices.items()]
    vol = qty * len(prices)
    notional = sum(p.notional for p in pairs)
    return WindowView(venue="v", instrument=inst, window_start=t, window_end=t + W,
                      trades=2 * len(prices), volume=vol, notional=notional,
                      first_price=min(prices.values()), last_price=max(prices.values()),
                      vwap=notional / vol, pairs=pairs, agents=[])


def run(det: PriceCollusionDetector, views: list[WindowView]) -> list[Finding]:
    out: list[Finding] = []
    for v in views:
        out += det.observe(v, None)
        out += det.end_window(v.window_start, v.window_end, None)
    return out


def collusive(n: int = 40, *, high: float = 1.8, war: tuple[float, ...] = (1.62, 1.58, 1.7),
              at: int = 12) -> list[WindowView]:
    """A steady high price pair, one deviation answered by the rival, then back to the plateau."""
    out = []
    for i in range(n):
        if at <= i < at + len(war):
            k = i - at
            p1, p2 = (war[k], high) if k == 0 else (war[k], war[k] * 0.99)  # rival punishes
        else:
            p1, p2 = high, high * 1.01
        out.append(window(i, {"s1": p1, "s2": p2}))
    return out


def competitive(seed: int, n: int = 300, *, p0: float = 1.47, noise: float = 0.01,
                jump: float = 0.05) -> list[WindowView]:
    """Best-response-like sellers: small noise, and now and then one seller tries a random
    price for a window while the other barely reacts."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        p = p0 * (1 + rng.normal(0, noise, 2))
        if rng.random() < 0.1:
            j = int(rng.integers(2))
            p[j] = p0 * (1 + rng.uniform(-jump, jump))
            p[1 - j] += 0.2 * (p[j] - p0)
        out.append(window(i, {"s1": float(p[0]), "s2": float(p[1])}))
    return out


def test_punished_deviation_on_a_high_plateau_is_flagged_once() -> None:
    found = run(PriceCollusionDetector(), collusive(60))
    assert len(found) == 1
    f = found[0]
    assert (f.kind, f.instrument, f.agents, f.ts) == ("price_collusion", "GPU", ["s1", "s2"],
                                                      W * 16)
    assert 50 <= f.score <= 100
    assert {"level", "punishment"} <= set(f.evidence["crossed"])
    ep = f.evidence["punishment_episodes"][-1]
    assert ep["start"] == W * 12
    assert ep["windows"] == 3
    assert ep["cutters"] == ["s1", "s2"]
    assert f.evidence["level_ratio"] > 1.03
    assert len(f.evidence["trade_ids"]) <= 20
    assert f.summary.count(".") == 1
    assert f.summary.endswith(".")
    assert set(f.evidence["seller_prices"]) == {"s1", "s2"}


def test_finding_is_deterministic_and_cooldown_covers_a_second_deviation() -> None:
    views = collusive(40) + [window(40 + i, {"s1": p, "s2": p}) for i, p in
                             enumerate([1.6, 1.55, 1.8] + [1.8] * 10)]
    a, b = run(PriceCollusionDetector(), views), run(PriceCollusionDetector(), views)
    assert [f.key for f in a] == [f.key for f in b]
    assert len(a) == 1
    again = run(PriceCollusionDetector(cooldown_s=600.0), views)
    assert len(again) == 2
    assert again[0].key != again[1].key


def test_rise_with_variance_collapse_is_flagged() -> None:
    """Competitive noise for 2 hours, then prices step up and stop moving (variance screen)."""
    views = competitive(3, 120, jump=0.0)
    views += [window(120 + i, {"s1": 1.60, "s2": 1.61}) for i in range(30)]
    found = run(PriceCollusionDetector(), views)
    assert len(found) == 1
    f = found[0]
    assert set(f.evidence["crossed"]) >= {"level", "variance"}
    assert f.evidence["variance_ratio"] < 0.5
    assert f.ts <= W * (120 + 15)


@pytest.mark.parametrize("seed", range(8))
def test_competitive_noise_is_not_flagged(seed: int) -> None:
    assert run(PriceCollusionDetector(), competitive(seed)) == []


def test_a_price_cut_that_sticks_is_not_punishment() -> None:
    views = [window(i, {"s1": 1.8, "s2": 1.8}) for i in range(10)]
    views += [window(10 + i, {"s1": 1.6, "s2": 1.6}) for i in range(40)]
    assert run(PriceCollusionDetector(), views) == []


def test_tight_spread_order_book_market_keeps_no_state() -> None:
    rng = np.random.default_rng(7)
    det = PriceCollusionDetector()
    views = []
    for i in range(200):
        mid = 100 * (1 + 0.002 * np.sin(i / 7))
        sellers = {f"mm{k}": float(mid * (1 + rng.normal(0, 0.0005))) for k in range(12)}
        views.append(window(i, sellers, inst="KWH"))
    # a crash-and-recovery on a deep market is no punishment either
    views += [window(200 + i, {f"mm{k}": 90.0 + i for k in range(12)}, inst="KWH")
              for i in range(10)]
    assert run(det, views) == []
    assert not det._inst


def test_pickle_round_trip_continues_identically() -> None:
    views = competitive(1, 60, jump=0.0) + collusive(60)
    views = [window(i, {s: p.notional / p.qty for s, p in ((p.seller, p) for p in v.pairs)})
             for i, v in enumerate(views)]
    det = PriceCollusionDetector()
    head = run(det, views[:70])
    clone = pickle.loads(pickle.dumps(det))
    tail, tail_clone = run(det, views[70:]), run(clone, views[70:])
    assert tail == tail_clone
    assert len(head + tail) >= 1


def test_memory_is_bounded_by_instruments_and_sellers() -> None:
    det = PriceCollusionDetector(max_instruments=50, history=100)
    for i in range(150):
        for k in range(80):  # 80 instruments, each with fresh seller ids every window
            sellers = {f"s{i}-{k}-{j}": 1.0 + 0.01 * j for j in range(3)}
            sellers[f"big{i}-{k}"] = 2.0
            det.observe(window(i, sellers, inst=f"I{k}", qty=10.0), None)
        det.end_window(W * i, W * (i + 1), None)
    assert len(det._inst) == 50
    for st in det._inst.values():
        assert len(st.idx) <= 100
        assert len(st.ids) <= 20
        assert all(len(w) <= det.max_sellers for w in st.sellers)
        assert len(st.sellers) <= st.sellers.maxlen  # type: ignore[operator]
    assert len(pickle.dumps(det)) < 5_000_000
    det.end_window(W * 1000, W * 1001, None)  # idle instruments are forgotten
    assert not det._inst


def test_simulated_calvano_sellers_flagged_competitive_control_not() -> None:
    from replay.market.sim import COLLUSION_INSTRUMENT, simulate
    from replay.stage2 import venue_findings

    for seed in (0, 1):
        res = simulate("collusion", seed=seed, duration_s=1800.0)
        found = venue_findings(res.trades, agents=res.agents,
                               detectors=[PriceCollusionDetector()])
        [label] = [lab for lab in res.labels if lab["kind"] == "price_collusion"]
        assert [(f.instrument, sorted(f.agents)) for f in found] == [
            (COLLUSION_INSTRUMENT.name, sorted(label["agents"]))]
        control = simulate("competitive", seed=seed, duration_s=1800.0)
        assert venue_findings(control.trades, agents=control.agents,
                              detectors=[PriceCollusionDetector()]) == []
