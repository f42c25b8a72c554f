"""CircularTradingDetector: planted rings, honest cycles, registry, state, one simulation."""

from __future__ import annotations

import pickle
import random
import time
from collections import defaultdict

import pytest

from detectors.base import Finding
from detectors.circular import CircularTradingDetector
from detectors.flows import PairFlow
from detectors.venue_base import AgentFacts, WindowView
from replay.stage2 import venue_findings
from streams.contracts import Agent, Trade

W = 60.0
#: (ts, seller, buyer, qty)
Leg = tuple[float, str, str, float]


def views(legs: list[Leg], *, inst: str = "KWH", price: float = 2.0) -> list[WindowView]:
    """One view per 60-s window that traded."""
    by: dict[int, dict[tuple[str, str], list[Leg]]] = defaultdict(lambda: defaultdict(list))
    for leg in legs:
        by[int(leg[0] // W)][(leg[2], leg[1])].append(leg)
    out = []
    for w in sorted(by):
        pairs = [PairFlow(b, s, len(ls), sum(x[3] for x in ls), price * sum(x[3] for x in ls),
                          min(x[0] for x in ls), max(x[0] for x in ls),
                          [f"{inst}-{x[0]:g}-{s}-{b}" for x in ls])
                 for (b, s), ls in by[w].items()]
        pairs.sort(key=lambda p: -p.qty)
        vol = sum(p.qty for p in pairs)
        out.append(WindowView(venue="v", instrument=inst, window_start=w * W,
                              window_end=(w + 1) * W, trades=sum(p.count for p in pairs),
                              volume=vol, notional=price * vol, first_price=price,
                              last_price=price, vwap=price, pairs=pairs, agents=[]))
    return out


def run(det: CircularTradingDetector, vs: list[WindowView], ctx: object = None) -> list[Finding]:
    out: list[Finding] = []
    for v in vs:
        out += det.observe(v, ctx)  # type: ignore[arg-type]
        out += det.end_window(v.window_start, v.window_end, ctx)  # type: ignore[arg-type]
    return out


class Registry:
    venue = "v"

    def __init__(self, facts: dict[str, AgentFacts]) -> None:
        self.known = facts

    def facts(self, agent: str) -> AgentFacts | None:
        return self.known.get(agent)

    def first_seen(self, agent: str) -> float | None:
        return None


def ring(ids: list[str], rounds: int, *, t0: float = 0.0, qty: float = 7.0, hop: float = 2.0,
         every: float = 100.0, spread: float = 30.0, jitter: float = 0.0, vary: bool = False,
         seed: int = 0) -> list[Leg]:
    """``rounds`` rounds of ``ids[0] → ids[1] → … → ids[0]``, one hop every ``hop`` s."""
    rng, t, legs = random.Random(seed), t0, []
    for _ in range(rounds):
        q = round(qty * rng.uniform(0.5, 2.0), 1) if vary else qty
        for k, s in enumerate(ids):
            legs.append((t + k * hop, s, ids[(k + 1) % len(ids)],
                         round(q * (1 + rng.uniform(-jitter, jitter)), 3)))
        t += every + rng.uniform(0, spread)
    return legs


def makers(n_windows: int, *, seed: int = 1, n: int = 3, noise: int = 10) -> list[Leg]:
    """Market makers taking each other's quotes and trading with noise traders: cycles among
    makers of unrelated sizes and times."""
    rng, legs = random.Random(seed), []
    mm = [f"mm{i}" for i in range(n)]
    nt = [f"nt{i}" for i in range(noise)]
    for w in range(n_windows):
        for _ in range(rng.randint(6, 14)):
            a, b = rng.sample(mm, 2) if rng.random() < 0.4 else (rng.choice(mm), rng.choice(nt))
            s, bb = (a, b) if rng.random() < 0.5 else (b, a)
            legs.append((w * W + rng.uniform(0, 59), s, bb, round(rng.lognormvariate(0, 0.7), 2)
                         + 0.01))
    return legs


@pytest.mark.parametrize("size", [3, 4, 6])
def test_planted_ring_fires_once_with_evidence(size: int) -> None:
    ids = [f"r{i}" for i in range(size)]
    found = run(CircularTradingDetector(), views(ring(ids, 8, jitter=0.008) + makers(16)))
    assert len(found) == 1
    f = found[0]
    assert (f.kind, f.agents, f.instrument, f.score) == ("circular_trading", ids, "KWH", 50.0)
    ev = f.evidence
    assert ev["agents"] == ids
    assert len(ev["edges"]) == size
    assert ev["windows"] == 3
    legs = [(e["seller"], e["buyer"]) for e in ev["edges"]]
    assert legs == list(zip(ids, ids[1:] + ids[:1], strict=True))
    assert ev["max_net_share"] <= 0.03
    assert 0 < len(ev["trade_ids"]) <= 20
    assert f.summary.startswith(f"{size} ids passed 7")
    assert "units of KWH around a cycle 3 times in" in f.summary
    assert f.ts % W == 0
    assert f.key.startswith("circ-")


def test_long_cycles_and_one_off_cycles_do_not_fire() -> None:
    seven = [f"r{i}" for i in range(7)]
    assert run(CircularTradingDetector(), views(ring(seven, 8, hop=1.0))) == []
    assert run(CircularTradingDetector(), views(ring(["a", "b", "c"], 2))) == []


def test_rounds_straddling_windows_and_varying_quantities_are_caught() -> None:
    legs = ring(["a", "b", "c", "d"], 6, t0=50.0, hop=6.0, every=120.0, spread=0.0,
                vary=True)
    assert all(int(legs[4 * k][0] // W) != int(legs[4 * k + 3][0] // W) for k in range(6))
    [f] = run(CircularTradingDetector(), views(legs + makers(14, seed=4)))
    assert f.agents == ["a", "b", "c", "d"]
    assert f.evidence["rounds"] == 3


def test_market_makers_cycles_of_unrelated_sizes_do_not_fire() -> None:
    legs = makers(120, n=4, seed=7)
    reg = Registry({f"mm{i}": AgentFacts(f"org-{i}", "acct-1", None, "mm-bot") for i in range(4)})
    assert run(CircularTradingDetector(), views(legs), reg) == []


def test_back_and_forth_wash_is_not_a_circle() -> None:
    legs: list[Leg] = []
    for k in range(10):  # a→b, b→c, c→a with the same size, each undone at once
        for s, b in (("a", "b"), ("b", "c"), ("c", "a")):
            legs += [(k * 100.0 + len(legs) % 9, s, b, 5.0), (k * 100.0 + 9, b, s, 5.0)]
    legs += [(k * 100.0 + 20, "s", "s", 5.0) for k in range(10)]
    assert run(CircularTradingDetector(), views(legs)) == []


def test_no_registry_works_and_registry_raises_score() -> None:
    vs = views(ring(["a", "b", "c"], 4))
    plain = run(CircularTradingDetector(), vs)
    unknown = run(CircularTradingDetector(), vs, Registry({}))
    funded = run(CircularTradingDetector(), vs,
                 Registry({a: AgentFacts(None, "acct-7", None, "bot") for a in "abc"}))
    assert [f.score for f in plain] == [f.score for f in unknown] == [50.0]
    [f] = funded
    assert f.score > 60
    assert f.summary.startswith("3 ids of one funder passed")
    assert f.evidence["registry"]["b"]["funded_by"] == "acct-7"
    assert f.evidence["linked_share"] == 1.0


def test_episode_alerts_once_then_on_growth() -> None:
    found = run(CircularTradingDetector(), views(ring(["a", "b", "c"], 12)))
    assert [f.evidence["windows"] for f in found] == [3, 9]


def test_pickle_round_trip_continues_identically() -> None:
    vs = views(ring(["a", "b", "c", "d", "e"], 14, jitter=0.005) + makers(26))
    whole = run(CircularTradingDetector(), vs)
    det = CircularTradingDetector()
    first = run(det, vs[:4])
    rest = run(pickle.loads(pickle.dumps(det)), vs[4:])
    assert len(whole) >= 1
    assert first + rest == whole


def test_other_instruments_do_not_change_findings() -> None:
    mine = views(ring(["a", "b", "c"], 8) + makers(20))
    other = views(ring(["x", "y", "z", "w"], 8, qty=3.0) + makers(20, seed=3), inst="GPU")
    both = run(CircularTradingDetector(),
               sorted(mine + other, key=lambda v: (v.window_start, v.instrument)))
    assert [f for f in both if f.instrument == "KWH"] == run(CircularTradingDetector(), mine)
    assert {f.instrument for f in both} == {"KWH", "GPU"}


def test_batching_through_both_stages_does_not_matter() -> None:
    legs = ring(["a", "b", "c", "d"], 6, hop=5.0) + makers(14)
    trades = [Trade(ts=1_767_225_600.0 + t, trade_id=f"t{i}", instrument="KWH", price=2.0,
                    qty=q, buyer=b, seller=s) for i, (t, s, b, q) in enumerate(legs)]
    reg = [Agent(agent_id=a, owner=f"org-{a}", venue="default") for a in "abcd"]
    small = venue_findings(trades, agents=reg, detectors=[CircularTradingDetector()],
                           batch_size=29)
    large = venue_findings(trades, agents=reg, detectors=[CircularTradingDetector()])
    assert small == large
    assert [f.agents for f in small] == [["a", "b", "c", "d"]]
    assert small[0].evidence["registry"]["a"]["owner"] == "org-a"


def test_memory_is_bounded_after_many_distinct_agents() -> None:
    det = CircularTradingDetector(max_tracked=30, max_instruments=3, max_edges=300)
    for w in range(120):  # a fresh 3-cycle of fresh ids in every window
        legs = [leg for k in range(40)
                for leg in ring([f"u{w}-{k}-{j}" for j in range(3)], 1, t0=w * W, qty=1.0 + k)]
        for v in views(legs, inst=f"I{w % 5}"):
            det.observe(v, None)
    assert len(det._books) <= 3
    for book in det._books.values():
        assert len(book.cycles) <= 30
        assert len(book.prev) <= 300
        assert len(book.episodes) <= 64
    assert len(pickle.dumps(det)) < 200_000


def test_a_band_of_one_round_size_traded_by_everyone_stays_cheap() -> None:
    rng = random.Random(2)
    ids = [f"d{i}" for i in range(40)]
    legs: list[Leg] = []
    for w in range(10):
        for _ in range(300):
            s, b = rng.sample(ids, 2)
            legs.append((w * W + rng.uniform(0, 59), s, b, 1.0))
    t = time.perf_counter()
    run(CircularTradingDetector(), views(legs))
    assert time.perf_counter() - t < 5.0


def test_simulated_ring_is_found_and_nothing_else() -> None:
    from replay.market.sim import simulate

    res = simulate("circular", seed=2, duration_s=1200.0)
    [label] = [lab for lab in res.labels if lab["kind"] == "circular_trading"]
    found = venue_findings(res.trades, agents=res.agents, detectors=[CircularTradingDetector()])
    assert found, "the planted ring was missed"
    for f in found:
        assert set(f.agents) == set(label["agents"])
        assert f.instrument == label["instruments"][0]
