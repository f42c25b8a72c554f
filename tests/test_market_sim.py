"""Agent-based market simulator: determinism, contracts, ground truth, realism, detectors."""

from __future__ import annotations

import itertools
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from exchange.venue import Exchange, MemorySink
from replay.calvano import CalvanoConfig, nash_and_monopoly
from replay.market import SCENARIOS, SimResult, report, run_live, simulate, write_outputs
from replay.market.agents import INSTRUMENTS, Market
from replay.market.sim import COLLUSION_INSTRUMENT, People, populate
from replay.tape import read_agents, read_labels, read_tape
from streams.contracts import parse_ts
from streams.pipeline import Surveillance

#: Short Calvano run (a few seconds) so the collusion scenarios stay fast.
FAST = CalvanoConfig(sessions=2, beta=1e-4, max_periods=120_000, converge_periods=10_000, seed=3)
DURATION = {"calm": 900.0, "flash_crash": 600.0, "spike": 600.0, "wash": 900.0,
            "circular": 900.0, "sybil": 900.0, "collusion": 900.0, "competitive": 900.0,
            "mixed": 1200.0, "honest": 900.0}
EXPECTED = {"calm": set(), "wash": {"wash_trade"}, "circular": {"circular_trading"},
            "sybil": {"sybil_cluster"}, "flash_crash": {"flash_crash", "contagion"},
            "spike": {"price_spike"}, "collusion": {"price_collusion"}, "competitive": set(),
            "mixed": {"wash_trade", "circular_trading", "sybil_cluster", "flash_crash",
                      "contagion", "price_spike", "price_collusion"}, "honest": set()}
ID = re.compile(r"^agent-[0-9a-f]{6}$")


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("calvano")


@pytest.fixture(scope="module")
def runs(cache: Path) -> dict[str, SimResult]:
    return {s: simulate(s, seed=11, duration_s=DURATION[s], cache_dir=cache, calvano_cfg=FAST)
            for s in SCENARIOS}


def _prices(r: SimResult, inst: str, t0: float, t1: float) -> list[float]:
    return [t.price for t in r.trades if t.instrument == inst and t0 <= float(t.ts) <= t1]


def test_deterministic_for_a_seed(cache: Path) -> None:
    a = simulate("mixed", seed=5, duration_s=400, cache_dir=cache, calvano_cfg=FAST)
    b = simulate("mixed", seed=5, duration_s=400, cache_dir=cache, calvano_cfg=FAST)
    c = simulate("mixed", seed=6, duration_s=400, cache_dir=cache, calvano_cfg=FAST)
    assert a.trades == b.trades
    assert a.agents == b.agents
    assert a.labels == b.labels
    assert len(a.trades) > 500
    assert a.trades != c.trades
    assert a.agents != c.agents


def test_unknown_scenario() -> None:
    with pytest.raises(ValueError, match="unknown scenario"):
        simulate("nope", seed=0, duration_s=10)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_outputs_round_trip(scenario: str, runs: dict[str, SimResult], tmp_path: Path) -> None:
    r = runs[scenario]
    paths = write_outputs(r, tmp_path)
    tape = read_tape(paths["tape"])
    assert tape.rejects == []
    assert tape.rows == len(r.trades) > 0
    assert [t.trade_id for t in tape.trades] == [t.trade_id for t in r.trades]
    agents = read_agents(paths["agents"])
    assert agents.rejects == []
    assert [a.agent_id for a in agents.agents] == [a.agent_id for a in r.agents]
    assert all(isinstance(a.created_ts, float) for a in agents.agents)
    assert read_labels(paths["labels"]) == r.labels
    assert {lab["kind"] for lab in r.labels} == EXPECTED[scenario]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_labels_point_at_real_trades(scenario: str, runs: dict[str, SimResult]) -> None:
    r = runs[scenario]
    registry = {a.agent_id for a in r.agents}
    hidden = {a for lab in r.labels if "absent from the registry" in lab["note"]
              for a in lab["agents"]}  # Sybils the venue never registered
    traders = {x for t in r.trades for x in (t.buyer, t.seller)}
    assert traders <= registry | hidden
    assert not hidden & registry
    assert all(ID.match(a) for a in registry | traders)  # manipulators' ids look like everyone's
    registry |= hidden
    for lab in r.labels:
        t0, t1 = parse_ts(lab["t_start"]), parse_ts(lab["t_end"])
        assert lab["instruments"]
        if lab["kind"] != "contagion":
            assert lab["agents"]
        for agent in lab["agents"]:
            assert agent in registry
            assert any(agent in (t.buyer, t.seller) and t.instrument in lab["instruments"]
                       and t0 - 1e-6 <= float(t.ts) <= t1 + 1e-6 for t in r.trades), (lab, agent)


def test_manipulators_blend_in(runs: dict[str, SimResult]) -> None:
    r = runs["mixed"]
    bad = {a for lab in r.labels for a in lab["agents"] if lab["kind"] != "contagion"}
    honest = [a for a in r.agents if a.agent_id not in bad]
    kinds = {a.kind for a in honest}
    assert {a.kind for a in r.agents if a.agent_id in bad} <= kinds
    # honest owners run several bots and funders are shared by many honest agents
    per_owner: dict[str | None, int] = defaultdict(int)
    per_funder: dict[str | None, int] = defaultdict(int)
    for a in honest:
        per_owner[a.owner] += 1
        per_funder[a.funded_by] += 1
    assert max(n for o, n in per_owner.items() if o) >= 3
    assert max(per_funder.values()) >= 10


def test_calm_has_no_labels_and_no_halts(runs: dict[str, SimResult]) -> None:
    r = runs["calm"]
    assert r.labels == []
    for seed in (11, 12):
        trades = r.trades if seed == 11 else simulate("calm", seed=seed, duration_s=900).trades
        engine = Surveillance()
        out = engine.process(trades)
        out.extend(engine.flush())
        assert out.halts == [], [(h.instrument, h.reason, h.ts) for h in out.halts]


def test_market_makers_keep_two_sided_books() -> None:
    m = Market(np.random.default_rng(3), start=1_767_225_600.0)
    populate(m, People(m), [i.name for i in INSTRUMENTS])
    spreads: dict[str, list[float]] = defaultdict(list)
    for k in range(600):
        m.step()
        if k >= 10:
            for inst in m.specs:
                bid, ask = m.best(inst)
                assert bid is not None, (inst, k)
                assert ask is not None, (inst, k)
                assert bid < ask, (inst, k)
                spreads[inst].append(ask / bid - 1)
    for inst, s in spreads.items():
        assert 0 < float(np.median(s)) < 0.01, inst
    assert len(m.trades) > 300


def test_flash_crash_crashes_and_halts(runs: dict[str, SimResult]) -> None:
    r = runs["flash_crash"]
    lab = next(x for x in r.labels if x["kind"] == "flash_crash")
    t0, t1 = parse_ts(lab["t_start"]), parse_ts(lab["t_end"])
    inst = lab["instruments"][0]
    pre = float(np.mean(_prices(r, inst, t0 - 120, t0 - 1e-9)))
    assert min(_prices(r, inst, t0, t1)) <= 0.85 * pre
    assert _prices(r, inst, t1 - 30, t1)[-1] > 0.95 * pre  # recovers
    engine = Surveillance()
    out = engine.process(r.trades)
    assert any(h.instrument == inst and h.state != "TRADING" for h in out.halts)


def test_spike_spikes_and_halts(runs: dict[str, SimResult]) -> None:
    r = runs["spike"]
    lab = r.labels[0]
    t0, t1 = parse_ts(lab["t_start"]), parse_ts(lab["t_end"])
    inst = lab["instruments"][0]
    pre = float(np.mean(_prices(r, inst, t0 - 120, t0 - 1e-9)))
    assert max(_prices(r, inst, t0, t1)) >= 2.0 * pre
    assert t1 - t0 < 60
    out = Surveillance().process(r.trades)
    assert any(h.instrument == inst and h.state != "TRADING" for h in out.halts)


def _round_trips_matched(r: SimResult, lab: dict[str, Any], least: int = 4) -> None:
    ids = set(lab["agents"])
    inner = [t for t in r.trades if t.buyer in ids and t.seller in ids]
    assert len(inner) >= least
    assert len(inner) % 2 == 0  # every round trip is completed
    for go, back in zip(inner[::2], inner[1::2], strict=True):
        assert go.qty == back.qty
        assert (go.buyer, go.seller) == (back.seller, back.buyer)
    assert {t.instrument for t in inner} == set(lab["instruments"])


def test_wash_round_trips_are_matched(runs: dict[str, SimResult]) -> None:
    r = runs["wash"]
    lab = r.labels[0]
    ids = set(lab["agents"])
    members = [a for a in r.agents if a.agent_id in ids]
    owners = {a.owner for a in members}
    assert len(owners) == 1
    if owners == {None}:  # hidden owner: a different funder per id
        assert len({a.funded_by for a in members}) == len(members)
    _round_trips_matched(r, lab)


def _member_flows(r: SimResult, ids: list[str]) -> tuple[dict[str, float], dict[str, float],
                                                          set[tuple[str, str]]]:
    pos: dict[str, float] = defaultdict(float)
    vol: dict[str, float] = defaultdict(float)
    edges = set()
    for t in r.trades:
        if t.buyer in ids and t.seller in ids:
            pos[t.buyer] += t.qty
            pos[t.seller] -= t.qty
            vol[t.buyer] += t.qty
            vol[t.seller] += t.qty
            edges.add((t.seller, t.buyer))
    return pos, vol, edges


def test_circular_ring_is_flat(runs: dict[str, SimResult]) -> None:
    r = runs["circular"]
    ids = r.labels[0]["agents"]
    assert 3 <= len(ids) <= 6
    pos, vol, edges = _member_flows(r, ids)
    # each leg's quantity is off by at most 1 % (0.1 rounding): nearly flat
    assert all(abs(pos[a]) <= 0.011 * vol[a] + 0.1 for a in ids)
    if "jittered" not in r.labels[0]["note"]:
        assert all(abs(v) < 1e-6 for v in pos.values())
    assert len(edges) == len(ids)  # one cycle through every member


def test_sybil_burst_lockstep(runs: dict[str, SimResult]) -> None:
    r = runs["sybil"]
    lab = r.labels[0]
    ids = set(lab["agents"])
    t0, t1 = parse_ts(lab["t_start"]), parse_ts(lab["t_end"])
    assert 5 <= len(ids) <= 30
    members = [a for a in r.agents if a.agent_id in ids]
    if "absent from the registry" in lab["note"]:
        assert members == []
    else:
        assert len(members) == len(ids)
        assert 1 <= len({a.funded_by for a in members}) <= 4
        assert all(t0 <= float(a.created_ts or 0) <= t1 for a in members)
    buys: dict[float, set[str]] = defaultdict(set)
    for t in r.trades:
        if t.buyer in ids and t.seller not in ids:
            buys[float(t.ts)].add(t.buyer)
    assert max(len(v) for v in buys.values()) >= len(ids) // 2


def test_planted_episodes_vary_across_seeds(cache: Path) -> None:
    """Short days: every shape of wash ring, circular ring and Sybil cluster turns up, labelled."""
    notes: dict[str, set[str]] = defaultdict(set)
    sizes: dict[str, set[int]] = defaultdict(set)
    for seed in range(8):
        r = simulate("mixed", seed=seed, duration_s=400, cache_dir=cache, calvano_cfg=FAST)
        registry = {a.agent_id: a for a in r.agents}
        for lab in r.labels:
            note, ids = lab["note"], lab["agents"]
            if lab["kind"] == "wash_trade":
                notes["wash"].add("hidden" if "hidden owner" in note else "declared")
                sizes["wash"].add(int(note.split()[0]))
                if "hidden owner" in note:
                    assert {registry[a].owner for a in ids} == {None}
                _round_trips_matched(r, lab, least=2)
            elif lab["kind"] == "circular_trading":
                notes["circular"].add("jitter" if "jittered" in note else "exact")
                qty = {t.qty for t in r.trades if t.buyer in ids and t.seller in ids}
                assert (len(qty) > 1) == ("jittered" in note)
                assert max(qty) <= 1.01 / 0.99 * min(qty) + 0.2  # legs jittered by <= 1 %
            elif lab["kind"] == "sybil_cluster":
                sizes["sybil"].add(int(note.split()[0]))
                funders = {registry[a].funded_by for a in ids if a in registry}
                notes["sybil"].add("absent" if not funders else
                                   "one" if len(funders) == 1 else "several")
    assert notes["wash"] == {"hidden", "declared"}
    assert notes["circular"] == {"jitter", "exact"}
    assert notes["sybil"] == {"absent", "one", "several"}
    assert len(sizes["wash"]) >= 2
    assert max(sizes["wash"]) <= 4
    assert min(sizes["sybil"]) >= 5
    assert max(sizes["sybil"]) <= 30
    assert len(sizes["sybil"]) >= 4


def test_collusion_prices_above_competitive(runs: dict[str, SimResult]) -> None:
    inst = COLLUSION_INSTRUMENT.name
    col = [t.price for t in runs["collusion"].trades if t.instrument == inst]
    comp = [t.price for t in runs["competitive"].trades if t.instrument == inst]
    pn, pm = nash_and_monopoly(FAST)
    assert len(col) > 100
    assert len(comp) > 100
    assert abs(float(np.median(comp)) - pn) < 0.05
    assert float(np.median(col)) > float(np.median(comp)) + 0.05
    assert runs["competitive"].labels == []
    sellers = set(runs["collusion"].labels[0]["agents"])
    assert {t.seller for t in runs["collusion"].trades if t.instrument == inst} == sellers


def test_report(cache: Path) -> None:
    comp = report("competitive", seed=0, sessions=3)
    assert comp["sessions"] == 3
    assert abs(comp["price_mean"] - comp["p_nash"]) < 0.01
    col = report("collusion", seed=3, sessions=2, cfg=FAST, cache_dir=cache)
    for key in ("p_nash", "p_monopoly", "prices", "delta_mean", "delta_sd", "sessions",
                "runtime_s"):
        assert key in col
    with pytest.raises(ValueError, match="report covers"):
        report("calm", seed=0, sessions=1)


def test_run_live_steps_a_live_exchange() -> None:
    clock = [1_767_225_600.0]
    sink = MemorySink()
    ex = Exchange("live", [i.name for i in INSTRUMENTS], sink=sink, clock=lambda: clock[0])
    steps = [0]

    def stop() -> bool:
        steps[0] += 1
        return steps[0] > 200

    def sleep(s: float) -> None:
        clock[0] += s

    m = run_live(ex, stop=stop, sleep=sleep, clock=lambda: clock[0])
    ex.flush()
    assert len(sink.trades) > 20
    assert len(m.registry) > 30


def test_honest_day_lookalikes(runs: dict[str, SimResult]) -> None:
    """The honest crowds that resemble manipulation are there, declared and unlabelled."""
    r = runs["honest"]
    assert r.labels == []
    reg = {a.agent_id: a for a in r.agents}
    crowds = r.stats["crowds"]
    assert len(crowds["sisters"]) == 5
    assert len(crowds["launches"]) == 3
    assert len(crowds["fleets"]) == 3
    # bots of one declared owner trade with each other now and then, sizes unmatched
    for ids in crowds["sisters"]:
        assert len(ids) >= 3
        assert len({reg[a].owner for a in ids}) == 1
        assert reg[ids[0]].owner is not None
    inner = [t for ids in crowds["sisters"] for t in r.trades
             if t.buyer in ids and t.seller in ids]
    assert len(inner) >= 10
    assert len({t.qty for t in inner}) >= 0.7 * len(inner)
    # market makers take each other's quotes: fills of unrelated sizes, a cycle somewhere
    edges: set[tuple[str, str]] = set()
    fills = []
    for ids in crowds["makers"]:
        fills += [t for t in r.trades if t.buyer in ids and t.seller in ids]
        edges |= {(t.seller, t.buyer) for t in fills}
    assert len(fills) >= 12
    assert len({t.qty for t in fills}) == len(fills)
    assert any((b, c) in edges and (c, a) in edges for a, b in edges for c in {y for _, y in edges})
    # product launches: a burst of new ids, many funders, each trading on its own schedule
    for ids in crowds["launches"]:
        assert 15 <= len(ids) <= 40
        created = [float(reg[a].created_ts or 0) for a in ids]
        assert max(created) - min(created) <= 600
        assert len({reg[a].funded_by for a in ids}) >= 0.5 * len(ids)
        assert len({reg[a].kind for a in ids}) == 1
        first: dict[str, float] = {}
        for t in r.trades:
            for a in (t.buyer, t.seller):
                if a in ids:
                    first.setdefault(a, float(t.ts))
        assert len(first) >= 0.6 * len(ids)
        assert all(first[a] >= float(reg[a].created_ts or 0) for a in first)
        assert len({round(v) for v in first.values()}) >= 0.8 * len(first)
    # declared fleets: one owner, one funder, energy on a timetable, similar sizes
    for ids in crowds["fleets"]:
        assert 10 <= len(ids) <= 30
        assert len({(reg[a].owner, reg[a].funded_by, reg[a].kind) for a in ids}) == 1
        assert reg[ids[0]].owner is not None
        buys: dict[str, list[float]] = defaultdict(list)
        sizes = []
        for t in r.trades:
            if t.buyer in ids:
                assert t.instrument == "KWH-SA-GRID"
                if not buys[t.buyer] or float(t.ts) > buys[t.buyer][-1]:
                    buys[t.buyer].append(float(t.ts))
                    sizes.append(t.qty)
        assert len(buys) >= 0.8 * len(ids)
        gaps = {round(b - a, 3) for ts in buys.values() for a, b in itertools.pairwise(ts)}
        period = min(gaps, default=900.0)  # one buy each when the cycle is the whole day
        assert period in (300.0, 600.0, 900.0)
        assert all(g % period == 0 for g in gaps)
        phases = sorted({ts[0] % period for ts in buys.values()})
        wrap = [b - a for a, b in itertools.pairwise([*phases, phases[0] + period])]
        assert period - max(wrap) <= 5.0 * len(ids)  # the whole fleet within minutes


def test_honest_day_has_no_halts(runs: dict[str, SimResult]) -> None:
    engine = Surveillance()
    out = engine.process(runs["honest"].trades)
    out.extend(engine.flush())
    assert out.halts == [], [(h.instrument, h.reason, h.ts) for h in out.halts]


# ---------------------------------------------------------------- the live demo market


class _Halts:
    """A halt source the test sets by hand: state per instrument (default trading)."""

    def __init__(self) -> None:
        self.states: dict[str, str] = {}

    def state(self, venue: str, instrument: str) -> str:
        return self.states.get(instrument, "TRADING")

    def reference_price(self, venue: str, instrument: str) -> float | None:
        return None


def _live(halts: Any = None, **planter: Any) -> Any:
    from replay.market.live import LiveMarket

    clock = [1_767_225_600.0]
    ex = Exchange("m2m-sim", [i.name for i in INSTRUMENTS], halts=halts, sink=MemorySink(),
                  clock=lambda: clock[0], batch_size=10**9, linger_ms=1e12,
                  wall_clock=lambda: 0.0)
    return LiveMarket(ex, seed=4, start=clock[0], **planter)


def test_live_planter_skips_closed_and_cooling_instruments_and_rotates() -> None:
    halts = _Halts()
    live = _live(halts, every=30.0, warmup=30.0, cooldown=120.0, settle=60.0)
    m, start = live.m, live.m.t
    closed = {"BW-10G-1H": (0.0, 500.0), "STORAGE-TB-MO": (200.0, 700.0)}
    seen: list[tuple[float, str, str]] = []
    while m.t < start + 1500:
        k = m.t - start
        for inst, (a, b) in closed.items():
            halts.states[inst] = "PAUSED" if a <= k < b else "TRADING"
        state = {i: halts.state("m2m-sim", i) for i in m.specs}
        done = live.step()
        if done is not None:
            seen.append((k, done.instrument, state[done.instrument]))
            assert abs(m.last[done.instrument] / m.fair[done.instrument] - 1) <= 0.05
    planted = live.planter.planted
    assert len(planted) >= 6
    assert all(s == "TRADING" for _, _, s in seen)  # never planted on a closed instrument
    for k, inst, _ in seen:
        if inst in closed:  # nor within `settle` of its reopening
            assert not closed[inst][0] <= k < closed[inst][1] + 60.0, (k, inst)
    for a, b in itertools.combinations(planted, 2):  # one episode at a time, then a cool-down
        if a.instrument == b.instrument:
            assert b.t0 - 2.0 >= a.t1 + 120.0, (a, b)
    gaps = np.diff([p.t0 for p in planted])
    assert gaps.min() >= 0.8 * 30.0 - 1e-6
    assert len({p.kind for p in planted}) >= 4  # rotates over kinds...
    assert len({p.instrument for p in planted}) >= 3  # ...and instruments
    assert len(m.trades) > 1000


def _pumped(skip: bool) -> tuple[Market, Any, float]:
    from replay.market.scenarios import BuyingFrenzy

    m = Market(np.random.default_rng(8), start=1_767_225_600.3)
    p = People(m)
    populate(m, p, [i.name for i in INSTRUMENTS])
    ids = [p.add("trading-bot") for _ in range(5)]
    inst = "BW-10G-1H"
    ep = BuyingFrenzy(ids, inst, m.t + 60.0, m.t + 85.0, m.rng, m.specs[inst].lot, peak=4.0)
    m.traders.append(ep)
    start = m.t
    while m.t < start + 100:
        late = skip and ep.t1 - 1.0 <= m.t < ep.t1 - m.dt
        m.step()
        if late:  # a live loop late on the wall clock jumps over the step before t1
            m.t = ep.t1 + 0.3
    return m, ep, start


def test_fundamentals_ignore_a_pump_and_the_price_reverts() -> None:
    m, ep, start = _pumped(False)
    inst = ep.insts[0]
    ref = m.specs[inst].price
    prices = [t.price for t in m.trades if t.instrument == inst]
    assert max(prices) >= 2.0 * ref  # the pump worked
    assert abs(m.fair[inst] / ref - 1) < 0.03  # fundamentals did not follow it
    fair_seen, back = [], None
    while m.t < ep.t1 + 600:
        m.step()
        fair_seen.append(m.fair[inst])
        if back is None and abs(m.last[inst] / m.fair[inst] - 1) < 0.05:
            back = m.t - ep.t1
    assert max(fair_seen) < 1.05 * ref
    assert back is not None
    assert back < 300  # back to fundamentals within minutes
    assert abs(m.last[inst] / m.fair[inst] - 1) < 0.05


def test_pump_withdraws_its_bids_when_the_live_clock_skips_its_last_step() -> None:
    m, ep, _ = _pumped(True)
    ids = set(ep.agents)
    book = m.ex.books[ep.insts[0]]
    assert ep.mine  # it bought
    assert ep.bids == []
    assert not [o for o in book._index.values() if o.agent in ids]  # no stale bids left


def test_fair_values_revert_to_the_reference_price() -> None:
    m = Market(np.random.default_rng(2), start=0.0, revert_s=600.0)
    m._walk = {k: 1.5 for k in m._walk}
    for _ in range(int(1800 / m.dt)):
        m.step_fair()
        m.t += m.dt
    for name, spec in m.specs.items():
        assert abs(m.fair[name] / spec.price - 1) < 0.15, name  # 1.5 -> ~1.05 in 3 half-lives


def test_reopening_auction_trades_are_booked() -> None:
    halts = _Halts()
    inst = "STORAGE-TB-MO"
    clock = [1_767_225_600.0]
    ex = Exchange("m2m-sim", [inst], halts=halts, sink=MemorySink(), clock=lambda: clock[0])
    m = Market(np.random.default_rng(0), start=clock[0], exchange=ex,
               instruments=tuple(i for i in INSTRUMENTS if i.name == inst))
    halts.states[inst] = "PAUSED"
    m.step()
    m.submit("a", inst, "buy", 2.0, 21.0)
    m.submit("b", inst, "sell", 2.0, 20.5)
    assert m.trades == []
    halts.states[inst] = "TRADING"
    m.step()
    assert len(m.trades) == 1
    assert 20.5 <= m.last[inst] <= 21.0
    assert m.position("a", inst) == 2.0
    assert m.position("b", inst) == -2.0


def test_run_live_plants_episodes() -> None:
    clock = [1_767_225_600.0]
    ex = Exchange("live", [i.name for i in INSTRUMENTS], sink=MemorySink(),
                  clock=lambda: clock[0])
    steps = [0]

    def stop() -> bool:
        steps[0] += 1
        return steps[0] > 800

    def sleep(s: float) -> None:
        clock[0] += s

    m = run_live(ex, stop=stop, sleep=sleep, clock=lambda: clock[0], every=60.0, warmup=30.0)
    planted = [t for t in m.traders if t.__class__.__module__ == "replay.market.scenarios"]
    assert len(planted) >= 3
