"""Sybil cluster detector: planted swarms fire, fleets and launches do not, state stays bounded."""

from __future__ import annotations

import pickle
import random

import pytest

from detectors.flows import AgentActivity, PairFlow
from detectors.sybil import SybilClusterDetector
from detectors.venue_base import AgentFacts, WindowView


class Ctx:
    venue = "v"

    def __init__(self, facts: dict[str, AgentFacts] | None = None) -> None:
        self.registry = facts or {}
        self.seen: dict[str, float] = {}

    def facts(self, agent: str) -> AgentFacts | None:
        return self.registry.get(agent)

    def first_seen(self, agent: str) -> float | None:
        return self.seen.get(agent)


def window(start: float, *, swarm: list[str], inside: bool, rng: random.Random,
           crowd: int = 30, every: float = 9.0, qty: float = 1.4) -> WindowView:
    """One minute: ``swarm`` buys ``qty`` from makers in the same second every ``every`` s
    (a member misses a tick now and then), pairs of members cross (``inside``), and a crowd of
    honest ids trades at random moments and sizes."""
    trades: list[tuple[str, str, float, float]] = []
    t = start + 1.0
    while t < start + 60.0:
        for a in swarm:
            if rng.random() < 0.85:
                trades.append((a, rng.choice(["mm1", "mm2"]), qty, t))
        if inside and swarm and rng.random() < 0.6:
            b, s = rng.sample(swarm, 2)
            trades.append((b, s, qty, t))
        t += every
    for _ in range(4 * crowd):
        b, s = rng.sample([f"h{i}" for i in range(crowd)] + ["mm1", "mm2"], 2)
        trades.append((b, s, round(rng.lognormvariate(0, 0.6), 1) + 0.1,
                       start + rng.uniform(0, 60)))
    pairs: dict[tuple[str, str], PairFlow] = {}
    acts: dict[str, AgentActivity] = {}
    for i, (b, s, q, ts) in enumerate(trades):
        p = pairs.setdefault((b, s), PairFlow(b, s, 0, 0.0, 0.0, ts, ts, []))
        p.count, p.qty, p.notional = p.count + 1, p.qty + q, p.notional + q
        p.first_ts, p.last_ts = min(p.first_ts, ts), max(p.last_ts, ts)
        p.trade_ids.append(f"t{start:.0f}-{i}")
        for a, side in ((b, 0), (s, 1)):
            x = acts.setdefault(a, AgentActivity(a, 0.0, 0.0, 0.0, 0.0, 0, ts, ts, 0))
            x.buy_qty, x.sell_qty = x.buy_qty + q * (side == 0), x.sell_qty + q * (side == 1)
            x.trades, x.first_ts, x.last_ts = x.trades + 1, min(x.first_ts, ts), max(x.last_ts, ts)
    vol = sum(q for _, _, q, _ in trades)
    return WindowView(venue="v", instrument="BW", window_start=start, window_end=start + 60,
                      trades=len(trades), volume=vol, notional=vol, first_price=1.0,
                      last_price=1.0, vwap=1.0, pairs=sorted(pairs.values(), key=lambda p: -p.qty),
                      agents=list(acts.values()))


def run(det: SybilClusterDetector, ctx: Ctx, *, swarm: list[str], inside: bool, joins: float,
        minutes: int = 30, seed: int = 1, crowd: int = 30) -> list:
    rng, out = random.Random(seed), []
    for k in range(minutes):
        start = k * 60.0
        view = window(start, swarm=swarm if start >= joins else [], inside=inside, rng=rng,
                      crowd=crowd)
        for a in view.agents:
            ctx.seen.setdefault(a.agent, a.first_ts)
        out += det.observe(view, ctx)
        out += det.end_window(start, start + 60, ctx)
    return out


SWARM = [f"s{i:02d}" for i in range(14)]


def swarm_facts(ids: list[str], **kw: object) -> dict[str, AgentFacts]:
    base = {"owner": None, "funded_by": "acct-x", "kind": "cdn-node"}
    base.update(kw)
    return {a: AgentFacts(base["owner"], base["funded_by"], 895.0 + i, base["kind"])  # type: ignore[arg-type]
            for i, a in enumerate(ids)}


@pytest.mark.parametrize("registry", [True, False])
def test_planted_swarm_fires_once(registry: bool) -> None:
    ctx = Ctx(swarm_facts(SWARM) if registry else None)
    found = run(SybilClusterDetector(), ctx, swarm=SWARM, inside=True, joins=900.0)
    assert len(found) == 1
    f = found[0]
    assert f.kind == "sybil_cluster"
    assert set(f.agents) == set(SWARM)
    assert 50 <= f.score <= 100
    assert f.ts == 960.0
    assert f.key.startswith("sybil-")
    assert len(f.evidence["trade_ids"]) <= 20
    assert f.evidence["signals"]["funded_as_one"] is registry
    assert all(e["buyer"] in SWARM and e["seller"] in SWARM for e in f.evidence["edges"])
    assert f.summary.count(".") <= 1
    assert str(len(SWARM)) in f.summary


def test_small_swarm_in_thin_market_fires() -> None:
    small = SWARM[:6]
    found = run(SybilClusterDetector(), Ctx(), swarm=small, inside=True, joins=900.0, crowd=8)
    assert [set(f.agents) for f in found] == [set(small)]


def test_swarm_absent_from_registry_fires() -> None:
    ctx = Ctx({f"h{i}": AgentFacts("org-h", "acct-h", 0.0, "bot") for i in range(30)})
    found = run(SybilClusterDetector(), ctx, swarm=SWARM[:8], inside=True, joins=900.0)
    assert [set(f.agents) for f in found] == [set(SWARM[:8])]


@pytest.mark.parametrize("registry", [True, False])
def test_declared_fleet_is_not_a_sybil(registry: bool) -> None:
    """One declared owner, lockstep on a timetable, no trades among the devices."""
    facts = swarm_facts(SWARM, owner="org-ev", funded_by="acct-ev", kind="ev-charger")
    ctx = Ctx(facts if registry else None)
    assert run(SybilClusterDetector(), ctx, swarm=SWARM, inside=False, joins=900.0) == []
    ctx = Ctx(facts)  # even trading among themselves, a declared fleet is disclosed
    assert run(SybilClusterDetector(), ctx, swarm=SWARM, inside=True, joins=900.0) == []


def test_launch_from_many_funders_is_not_a_sybil() -> None:
    """New ids created together, funded by many accounts, even in step: a product launch."""
    facts = {a: AgentFacts(None, f"acct-{i}", 895.0 + i, "cdn-node") for i, a in enumerate(SWARM)}
    assert run(SybilClusterDetector(), Ctx(facts), swarm=SWARM, inside=False, joins=900.0) == []


def test_pickle_round_trip_continues_identically() -> None:
    det, ctx = SybilClusterDetector(), Ctx()
    rng = random.Random(3)
    views = [window(k * 60.0, swarm=SWARM if k >= 15 else [], inside=True, rng=rng)
             for k in range(20)]
    for v in views:
        for a in v.agents:
            ctx.seen.setdefault(a.agent, a.first_ts)
    for v in views[:15]:
        det.observe(v, ctx)
    twin = pickle.loads(pickle.dumps(det))
    assert [det.observe(v, ctx) for v in views[15:]] == [twin.observe(v, ctx) for v in views[15:]]


def test_memory_bound_after_many_distinct_agents() -> None:
    det, ctx = SybilClusterDetector(max_episodes=8), Ctx()
    for k in range(500):  # 100k distinct ids in lockstep groups of 20, each seen once
        ids = [f"x{k}-{i}" for i in range(200)]
        pairs = [PairFlow(a, "mm", 2, 2.0, 2.0, k * 60.0 + t, k * 60.0 + t + 10, [])
                 for j in range(10) for t, a in ((j, a) for a in ids[20 * j:20 * j + 20])]
        view = WindowView(venue="v", instrument="BW", window_start=k * 60.0,
                          window_end=k * 60.0 + 60, trades=400, volume=400.0, notional=400.0,
                          first_price=1.0, last_price=1.0, vwap=1.0, pairs=pairs, agents=[])
        det.observe(view, ctx)
    assert len(det._episodes) <= 8
    assert sum(len(e.members) for e in det._episodes) <= 8 * det.max_members
    assert len(pickle.dumps(det)) < 200_000


def test_simulator_sybil_day_fast() -> None:
    from replay.market.sim import simulate
    from replay.stage2 import venue_findings

    res = simulate("sybil", seed=1, duration_s=1500)
    [label] = [lab for lab in res.labels if lab["kind"] == "sybil_cluster"]
    for agents in (res.agents, None):
        found = venue_findings(res.trades, agents=agents, detectors=[SybilClusterDetector()])
        assert len(found) == 1
        assert len(set(found[0].agents) & set(label["agents"])) >= 0.9 * len(found[0].agents)
