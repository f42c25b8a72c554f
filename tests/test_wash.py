"""WashTradeDetector: planted round trips, honest look-alikes, registry, state, one simulation."""

from __future__ import annotations

import pickle
import random
from collections import defaultdict

import pytest

from detectors.base import Finding
from detectors.flows import PairFlow
from detectors.venue_base import AgentFacts, WindowView
from detectors.wash import WashTradeDetector
from replay.stage2 import venue_findings
from streams.contracts import Agent, Trade

W = 60.0
#: (ts, seller, buyer, qty)
Leg = tuple[float, str, str, float]


def views(legs: list[Leg], *, inst: str = "TB", price: float = 2.0) -> list[WindowView]:
    """One view per 60-s window from ``legs`` (empty windows included, as stage 2 skips none
    that traded)."""
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


def run(det: WashTradeDetector, vs: list[WindowView], ctx: object = None) -> list[Finding]:
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


def ring(ids: list[str], trips: int, *, t0: float = 0.0, qty: float = 5.0, gap: float = 40.0,
         seed: int = 0, vary: bool = True) -> list[Leg]:
    """Round trips between neighbours of ``ids`` in turn: sell, then buy the same quantity
    back (a new random quantity per trip if ``vary``)."""
    rng, t, legs = random.Random(seed), t0, []
    for k in range(trips):
        a, b = ids[k % len(ids)], ids[(k + 1) % len(ids)]
        a, b = (a, b) if k % 2 else (b, a)
        q = round(qty * rng.uniform(0.5, 2.0), 1) if vary else qty
        legs += [(t, a, b, q), (t + gap, b, a, q)]
        t += 2 * gap + rng.uniform(10, 60)
    return legs


def market(n_windows: int, *, seed: int = 1, makers: int = 3, noise: int = 12,
           inst: str = "TB") -> list[Leg]:
    """Honest background: makers trade with noise traders and with each other (random sizes,
    both directions)."""
    rng, legs = random.Random(seed), []
    mm = [f"mm{i}" for i in range(makers)]
    nt = [f"nt{i}" for i in range(noise)]
    for w in range(n_windows):
        for _ in range(rng.randint(5, 15)):
            a, b = rng.choice(mm), rng.choice(nt + mm)
            if a != b:
                s, bb = (a, b) if rng.random() < 0.5 else (b, a)
                legs.append((w * W + rng.uniform(0, 59), s, bb, round(rng.lognormvariate(0, 0.7), 1)
                             + 0.1))
    return legs


def test_planted_round_trips_fire_once_with_evidence() -> None:
    found = run(WashTradeDetector(), views(ring(["a", "b", "c"], 6) + market(20)))
    assert len(found) == 1
    f = found[0]
    assert (f.kind, f.agents, f.instrument, f.score) == ("wash_trade", ["a", "b", "c"], "TB", 50.0)
    assert f.ts % W == 0
    assert f.key.startswith("wash-")
    ev = f.evidence
    assert ev["round_trips"] == 3
    assert ev["registry"] == {}
    assert ev["max_mismatch"] == 0
    assert 0 < len(ev["trade_ids"]) <= 20
    assert {(e["seller"], e["buyer"]) for e in ev["edges"]} <= {
        (x, y) for x in "abc" for y in "abc" if x != y}
    assert sum(e["qty"] for e in ev["edges"]) == pytest.approx(2 * ev["volume_each_way"])
    assert f.summary.endswith("ending flat")
    assert "\n" not in f.summary


def test_accidental_crosses_of_one_owner_are_not_wash() -> None:
    rng = random.Random(3)
    bots = [f"bot{i}" for i in range(5)]
    legs = market(40)
    for k in range(8):  # a cross every ~5 min: random pair, direction and size, no return leg
        a, b = rng.sample(bots, 2)
        legs.append((k * 300.0 + 7, a, b, round(rng.lognormvariate(0, 0.6), 1) + 0.1))
    reg = Registry({b: AgentFacts("org-1", "acct-1", None, "bot") for b in bots})
    assert run(WashTradeDetector(), views(legs), reg) == []


def test_market_makers_trading_each_other_with_random_sizes_are_not_wash() -> None:
    legs = market(120, makers=4, noise=3, seed=5)
    reg = Registry({f"mm{i}": AgentFacts("org-mm", "acct-1", None, "mm-bot") for i in range(4)})
    assert run(WashTradeDetector(), views(legs), reg) == []


def test_hub_with_single_matched_trips_to_many_counterparties_is_not_wash() -> None:
    # a market maker buys back exactly what it sold from each of several noise traders, once
    legs = [leg for i in range(6) for leg in ((i * 200.0, "mm", f"n{i}", 3.0),
                                               (i * 200.0 + 50, f"n{i}", "mm", 3.0))]
    legs += market(25, seed=9)
    legs += [(w * W + 5, "mm", f"x{w}", 1.0 + w) for w in range(25)]  # the maker's real business
    assert run(WashTradeDetector(), views(legs)) == []


def test_self_trades_repeated_fire_single_does_not() -> None:
    det = WashTradeDetector()
    assert run(det, views([(10.0, "s", "s", 4.0)] + market(10))) == []
    found = run(WashTradeDetector(), views([(i * 100.0, "s", "s", 4.0) for i in range(3)]))
    assert [(f.agents, f.evidence["self_trades"]) for f in found] == [(["s"], 3)]
    assert "with itself 3 times" in found[0].summary


def test_split_and_slightly_off_return_legs_count_as_round_trips() -> None:
    legs = []
    for k, (a, b) in enumerate([("a", "b"), ("b", "a"), ("a", "b")]):
        t = k * 400.0
        legs += [(t, a, b, 10.0), (t + 70, b, a, 4.0), (t + 130, b, a, 5.96)]  # 0.4 % short
    [f] = run(WashTradeDetector(), views(legs))
    assert f.evidence["round_trips"] == 3
    assert f.evidence["max_mismatch"] == 0.004


def test_no_registry_works_and_registry_raises_score() -> None:
    vs = views(ring(["a", "b", "c"], 4, gap=30.0))
    plain = run(WashTradeDetector(), vs)
    unknown = run(WashTradeDetector(), vs, Registry({}))
    owned = run(WashTradeDetector(), vs,
                Registry({a: AgentFacts("org-9", f"acct-{a}", 5.0, "bot") for a in "abc"}))
    assert [f.score for f in plain] == [f.score for f in unknown] == [50.0]
    assert [f.key for f in plain] == [f.key for f in owned]
    [f] = owned
    assert f.score > 60
    assert "of one owner" in f.summary
    assert f.evidence["registry"]["a"]["owner"] == "org-9"
    assert f.evidence["linked_share"] == 1.0


def test_episode_alerts_once_then_on_growth() -> None:
    legs = ring(["a", "b"], 12, gap=30.0, seed=2)
    t = legs[-1][0] + 100
    legs += [leg for k in range(3) for leg in ((t + k * 150, "b", "c", 6.0),
                                               (t + k * 150 + 40, "c", "b", 6.0))]
    found = run(WashTradeDetector(), views(legs))
    assert [f.agents for f in found] == [["a", "b"], ["a", "b"], ["a", "b", "c"]]
    assert [f.evidence["round_trips"] for f in found][:2] == [3, 9]


def test_pickle_round_trip_continues_identically() -> None:
    vs = views(ring(["a", "b", "c", "d"], 16, seed=4) + market(45))
    whole = run(WashTradeDetector(), vs)
    det = WashTradeDetector()
    first = run(det, vs[:10])
    rest = run(pickle.loads(pickle.dumps(det)), vs[10:])
    assert len(whole) >= 1
    assert first + rest == whole


def test_other_instruments_do_not_change_findings() -> None:
    mine = views(ring(["a", "b", "c"], 8) + market(30))
    other = views(ring(["x", "y"], 8, seed=8) + market(30, seed=2), inst="ZZ")
    mixed = sorted(mine + other, key=lambda v: (v.window_start, v.instrument))
    both = run(WashTradeDetector(), mixed)
    assert [f for f in both if f.instrument == "TB"] == run(WashTradeDetector(), mine)
    assert {f.instrument for f in both} == {"TB", "ZZ"}


def test_batching_through_both_stages_does_not_matter() -> None:
    legs = ring(["a", "b", "c"], 8) + market(25)
    trades = [Trade(ts=1_767_225_600.0 + t, trade_id=f"t{i}", instrument="TB", price=2.0,
                    qty=q, buyer=b, seller=s) for i, (t, s, b, q) in enumerate(legs)]
    reg = [Agent(agent_id=a, owner="org-1", venue="default") for a in "abc"]
    small = venue_findings(trades, agents=reg, detectors=[WashTradeDetector()], batch_size=37)
    large = venue_findings(trades, agents=reg, detectors=[WashTradeDetector()])
    assert small == large
    assert [f.agents for f in small] == [["a", "b", "c"]]
    assert "of one owner" in small[0].summary


def test_memory_is_bounded_after_many_distinct_agents() -> None:
    det = WashTradeDetector(max_pairs=50, max_agents=80, max_trips=20, max_instruments=3)
    rng = random.Random(0)
    for w in range(150):
        legs = []
        for k in range(60):
            a, b = f"u{w}-{k}", f"u{w}-{k + 1}"
            legs += [(w * W + 1, a, b, 1.0), (w * W + 2, b, a, 1.0 + rng.random())]
        legs += [(w * W + 3, f"s{w}", f"s{w}", 1.0)]  # self-trades: trips of fresh ids
        for v in views(legs, inst=f"I{w % 5}"):
            det.observe(v, None)
    assert len(det._books) <= 3
    for book in det._books.values():
        assert len(book.pairs) <= 50
        assert len(book.agents) <= 80
        assert len(book.trips) <= 20
        assert len(book.episodes) <= 64
    assert len(pickle.dumps(det)) < 200_000


def test_simulated_wash_ring_is_found_and_nothing_else() -> None:
    from replay.market.sim import simulate

    res = simulate("wash", seed=1, duration_s=1200.0)
    [label] = [lab for lab in res.labels if lab["kind"] == "wash_trade"]
    found = venue_findings(res.trades, agents=res.agents, detectors=[WashTradeDetector()])
    assert found, "the planted ring was missed"
    for f in found:
        assert set(f.agents) <= set(label["agents"])
        assert f.instrument == label["instruments"][0]
