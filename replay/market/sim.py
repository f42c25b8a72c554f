"""Driver of the agent-based market: scenarios, outputs, the Calvano report and a live loop.

:func:`simulate` builds a :class:`~replay.market.agents.Market` (the reference exchange in
process, event time in steps of 0.5 s, no wall clock), populates it with honest agents, plants the
scenario's episodes and runs it. Everything is a function of the seed (one
``numpy.random.Generator``). The registry has ~45 honest agents run by 8 owners (a firm runs
several bots; ~20 % of agents have no known owner) and funded by 4 shared accounts; planted agents
get ids, kinds, owners and funders drawn the same way.

Every scenario's honest background also holds a ``moderate`` dose of the honest look-alikes of
:mod:`replay.market.crowds` (bots of one owner crossing by accident, market makers trading with
one another, a product launch of 15-25 new ids, a declared fleet of 10-20 devices buying energy on
a timetable): ~90 agents in all. The ``honest`` scenario is a busy honest day with the ``busy`` dose
(5 owners' bots, market makers crossing every ~90 s per instrument, 3 launches of 15-40 ids, 3
fleets of 10-30 devices; ~200 agents) and no labels. ``stats["crowds"]`` lists their ids.

Scenario timing is relative to ``duration_s`` (D); see :data:`SCENARIOS` and the module notes
of :mod:`replay.market.scenarios` for sizes. Collusion uses a cached Calvano training run:
:data:`DEMO_CALVANO` (4 sessions, β = 2e-5 instead of 4e-6, convergence after 25k unchanged
periods instead of 100k, at most 800k periods): ~11 s of training once, then loaded from
``var/cache/calvano``; measured Δ = 0.78 (s.d. 0.04), all 4 converged, mean price 1.745 (paper
baseline: Δ ≈ 0.85). :func:`report` uses the paper's full configuration by default.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from exchange.venue import Exchange
from replay import calvano
from replay.market.agents import (
    INSTRUMENTS,
    Arbitrageur,
    FundamentalTrader,
    Instrument,
    Market,
    MarketMaker,
    NoiseTrader,
)
from replay.market.crowds import add_crowds, fresh
from replay.market.scenarios import (
    BuyingFrenzy,
    CircularRing,
    Episode,
    PricingSellers,
    SellProgram,
    SybilCluster,
    WashRing,
)
from replay.tape import write_labels, write_tape
from streams.contracts import Agent, Trade

__all__ = [
    "COLLUSION_INSTRUMENT",
    "DEMO_CALVANO",
    "SCENARIOS",
    "People",
    "SimResult",
    "report",
    "run_live",
    "populate",
    "simulate",
    "write_outputs",
]

SCENARIOS = ("calm", "wash", "circular", "sybil", "flash_crash", "spike", "collusion",
             "competitive", "mixed", "honest")
#: Reduced Calvano run for the demo (documented in the module notes).
DEMO_CALVANO = calvano.CalvanoConfig(sessions=4, beta=2e-5, max_periods=800_000,
                                     converge_periods=25_000, seed=1)
#: The posted-price market of the collusion scenarios (Calvano units: marginal cost 1.0).
COLLUSION_INSTRUMENT = Instrument(name="GPU-A100-1H", asset_class="compute", price=1.7,
                                  sigma=0.0, tick=0.001, lot=4.0)
_MM = {"GPU-H100-1H": (3, 0.002), "KWH-SA-GRID": (3, 0.004), "STORAGE-TB-MO": (3, 0.002),
       "BW-10G-1H": (2, 0.006)}
_LINKED = {"GPU-H100-1H": "KWH-SA-GRID", "KWH-SA-GRID": "GPU-H100-1H"}
_DEVICE = {"GPU-H100-1H": "gpu-cluster", "KWH-SA-GRID": "battery-controller",
           "STORAGE-TB-MO": "storage-node", "BW-10G-1H": "cdn-node"}


@dataclass
class SimResult:
    """Output of :func:`simulate`: trades in event-time order, registry, labels, statistics."""

    trades: list[Trade]
    agents: list[Agent]
    labels: list[dict[str, Any]]
    stats: dict[str, Any] = field(default_factory=dict)


class People:
    """Owners and funders shared by honest and planted agents alike."""

    def __init__(self, m: Market) -> None:
        self.m = m
        self.owners = [f"org-{int(m.rng.integers(0, 16**6)):06x}" for _ in range(8)]
        self.funders = [f"acct-{int(m.rng.integers(0, 16**6)):06x}" for _ in range(4)]

    def add(self, kind: str, owner: str | None = "", funder: str | None = "",
            created_ts: float | None = None) -> str:
        rng = self.m.rng
        if owner == "":
            owner = None if rng.random() < 0.2 else self.owners[int(rng.integers(8))]
        if funder == "":
            funder = self.funders[int(rng.choice(4, p=[0.4, 0.3, 0.2, 0.1]))]
        return self.m.register(owner=owner, funded_by=funder, kind=kind, created_ts=created_ts)


def populate(m: Market, p: People, insts: list[str], *, dose: str | None = "moderate",
             horizon: float = 3600.0, crowds: dict[str, list[list[str]]] | None = None
             ) -> list[str]:
    """Honest agents on ``insts``, plus a ``dose`` of the honest look-alike crowds of
    :mod:`replay.market.crowds` (``None``: none; their ids by crowd go into ``crowds``);
    returns the arbitrageurs' ids."""
    rng = m.rng
    for name in insts:
        n_mm, spread = _MM[name]
        lot = m.specs[name].lot
        for _ in range(n_mm):
            kind = "mm-bot" if rng.random() < 0.6 else "pricing-bot"
            m.traders.append(MarketMaker(p.add(kind), name, spread=spread, size=3 * lot,
                                         levels=3, limit=40 * lot, rng=rng,
                                         linked=_LINKED.get(name)))
        for _ in range(2):
            m.traders.append(FundamentalTrader(p.add("trading-bot"), name, threshold=0.006,
                                               size=4 * lot, limit=30 * lot, rng=rng))
    for _ in range(24):
        k = int(rng.integers(1, 4))
        mine = [insts[int(i)] for i in rng.choice(len(insts), min(k, len(insts)), replace=False)]
        kind = _DEVICE.get(mine[0], "trading-bot") if rng.random() < 0.7 else "trading-bot"
        m.traders.append(NoiseTrader(p.add(kind), mine, rate=0.25, scale=1.0))
    arbs: list[str] = []
    if "GPU-H100-1H" in insts and "KWH-SA-GRID" in insts:
        for _ in range(3):
            aid = p.add("arb-bot")
            arbs.append(aid)
            m.traders.append(Arbitrageur(aid, gpu="GPU-H100-1H", energy="KWH-SA-GRID",
                                         threshold=0.02, size=5 * m.specs["GPU-H100-1H"].lot,
                                         limit=60 * m.specs["GPU-H100-1H"].lot))
    if dose is not None:
        ids = add_crowds(m, p, insts, dose=dose, horizon=horizon)
        if crowds is not None:
            crowds.update(ids)
    return arbs


def _prices(scenario: str, n: int, seed: int, cache_dir: Path,
            cfg: calvano.CalvanoConfig) -> list[tuple[float, float]]:
    rng = np.random.default_rng(seed)
    if scenario == "collusion":
        res = calvano.load_or_train(cfg, cache_dir)
        devs = sorted({int(n * f) for f in (0.3, 0.6)} - {0})
        return calvano.price_path(res, cfg, periods=n, session=seed % cfg.sessions,
                                  deviations=devs, seed=seed)
    grid = np.linspace(calvano.price_grid(cfg)[0], calvano.price_grid(cfg)[-1], 400)
    pn = calvano.nash_and_monopoly(cfg)[0]
    p = [pn * float(rng.uniform(0.98, 1.02)), pn * float(rng.uniform(0.98, 1.02))]
    out = []
    for _ in range(n):
        new = []
        for i in range(2):
            own = calvano.profits(grid, p[1 - i], cfg)[0]
            best = float(grid[int(np.argmax(own))])
            new.append(best * float(1.0 + rng.normal(0.0, 0.01)) if rng.random() < 0.1 else best)
        p = new
        out.append((p[0], p[1]))
    return out


def _plant(scenario: str, m: Market, p: People, arbs: list[str], seed: int, d: float,
           cache_dir: Path, cfg: calvano.CalvanoConfig) -> list[Episode]:
    rng, s = m.rng, m.start
    eps: list[Episode] = []
    mixed = scenario == "mixed"
    lot = {k: v.lot for k, v in m.specs.items()}
    if scenario in ("wash", "mixed"):
        n = int(rng.integers(2, 5))
        hidden = bool(rng.random() < 0.35)
        if hidden:  # the venue does not know the owner; each id has its own funder
            ids = [p.add("trading-bot", owner=None, funder=fresh("acct", rng))
                   for _ in range(n)]
        else:
            owner = p.owners[int(rng.integers(8))] if rng.random() < 0.5 else fresh("org", rng)
            ids = [p.add("trading-bot", owner=owner) for _ in range(n)]
        a, b = (0.1, 0.35) if mixed else (0.3, 0.8)
        eps.append(WashRing(ids, "STORAGE-TB-MO", s + a * d, s + b * d, rng,
                            lot["STORAGE-TB-MO"], hidden=hidden, vary=bool(rng.random() < 0.5)))
    if scenario in ("circular", "mixed"):
        ids = [p.add(str(rng.choice(["trading-bot", "battery-controller"])))
               for _ in range(int(rng.integers(3, 7)))]
        a, b = (0.15, 0.4) if mixed else (0.3, 0.8)
        jitter = float(rng.uniform(0.002, 0.01)) if rng.random() < 0.5 else 0.0
        eps.append(CircularRing(ids, "KWH-SA-GRID", s + a * d, s + b * d, rng,
                                lot["KWH-SA-GRID"], jitter=jitter))
    if scenario in ("sybil", "mixed"):
        a, b = (0.2, 0.4) if mixed else (0.35, 0.8)
        t0 = s + a * d
        created = t0 + np.sort(rng.uniform(0.0, 25.0, int(rng.integers(5, 31))))
        u = rng.random()
        if u < 0.25:  # never registered: the venue knows nothing of them
            funding = "unregistered"
            ids = [m.new_id() for _ in created]
        else:
            k = 1 if u < 0.7 else int(rng.integers(2, 5))
            funders = [fresh("acct", rng) for _ in range(k)]
            funding = "one funder" if k == 1 else f"{k} funders"
            ids = [p.add("cdn-node", owner=None, funder=funders[i % k], created_ts=float(c))
                   for i, c in enumerate(created)]
        eps.append(SybilCluster(ids, "BW-10G-1H", t0, s + b * d, rng, lot["BW-10G-1H"],
                                funding=funding))
    if scenario in ("flash_crash", "mixed"):
        t0 = s + (0.55 if mixed else 0.5) * d
        seller = p.add("trading-bot")
        eps.append(SellProgram(seller, "GPU-H100-1H", t0, t0 + min(60.0, 0.15 * d),
                               chunk=6 * lot["GPU-H100-1H"], related="KWH-SA-GRID",
                               watchers=arbs))
    if scenario in ("spike", "mixed"):
        t0 = s + (0.8 if mixed else 0.5) * d
        ids = [p.add("trading-bot") for _ in range(int(rng.integers(4, 8)))]
        eps.append(BuyingFrenzy(ids, "BW-10G-1H", t0, t0 + 25.0, rng, lot["BW-10G-1H"],
                                peak=float(rng.uniform(3.0, 5.0))))
    if scenario in ("collusion", "competitive", "mixed"):
        inst, period = COLLUSION_INSTRUMENT.name, 15.0
        kind = "collusion" if scenario != "competitive" else "competitive"
        n = max(int((0.95 * d) // period), 1)
        prices = _prices(kind, n, seed, cache_dir, cfg)
        sellers = [p.add("pricing-bot") for _ in range(2)]
        buyers = [p.add("gpu-cluster") for _ in range(6)]
        note = (f"two pricing bots post Calvano Q-learning prices (session {seed % cfg.sessions}"
                f", forced deviations at periods {int(n * 0.3)} and {int(n * 0.6)}), "
                f"period {period:g} s, cost 1.0") if kind == "collusion" else "control"
        eps.append(PricingSellers(
            sellers, buyers, inst, s + 0.05 * d, s + d, prices=prices, period_s=period,
            scale=1.0, size=40.0, demand=lambda p1, p2: calvano.demand(p1, p2, cfg),
            collusive=kind == "collusion", note=note))
    return eps


def simulate(scenario: str, *, seed: int, duration_s: float, start: float = 1_767_225_600.0,
             cache_dir: Path | str = "var/cache/calvano",
             calvano_cfg: calvano.CalvanoConfig | None = None, dt: float = 0.5) -> SimResult:
    """Run ``scenario`` for ``duration_s`` event-time seconds; deterministic in ``seed``.

    ``calvano_cfg`` (collusion only) defaults to :data:`DEMO_CALVANO` (training cached in
    ``cache_dir``).
    """
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; choose from {', '.join(SCENARIOS)}")
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    collusive = scenario in ("collusion", "competitive", "mixed")
    insts = INSTRUMENTS + ((COLLUSION_INSTRUMENT,) if collusive else ())
    m = Market(rng, start=start, dt=dt, instruments=insts)
    people = People(m)
    crowds: dict[str, list[list[str]]] = {}
    arbs = populate(m, people, [i.name for i in INSTRUMENTS],
                    dose="busy" if scenario == "honest" else "moderate", horizon=duration_s,
                    crowds=crowds)
    cfg = calvano_cfg or DEMO_CALVANO
    episodes = _plant(scenario, m, people, arbs, seed, duration_s, Path(cache_dir), cfg)
    m.traders.extend(episodes)
    for _ in range(int(round(duration_s / dt))):
        m.step()
    m.ex.flush()
    labels = [lab for ep in episodes for lab in ep.labels(m)]
    elapsed = time.perf_counter() - t0
    trades = m.trades
    stats: dict[str, Any] = {
        "scenario": scenario, "seed": seed, "duration_s": duration_s, "trades": len(trades),
        "orders": m.orders, "agents": len(m.registry), "labels": len(labels),
        "runtime_s": round(elapsed, 3),
        "trades_per_instrument": {k: sum(1 for t in trades if t.instrument == k)
                                  for k in m.specs},
        "exchange": {"trades": m.ex.counters.trades, "cancels": m.ex.counters.cancels,
                     "rejects": dict(m.ex.counters.rejects)},
        "crowds": crowds,
    }
    return SimResult(trades=trades, agents=list(m.registry), labels=labels, stats=stats)


def write_outputs(result: SimResult, out_dir: Path | str) -> dict[str, Path]:
    """Write ``tape.parquet``, ``agents.parquet`` and ``labels.jsonl`` into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"tape": out / "tape.parquet", "agents": out / "agents.parquet",
             "labels": out / "labels.jsonl"}
    write_tape(result.trades, paths["tape"])
    frame = pl.DataFrame(
        {"agent_id": [a.agent_id for a in result.agents],
         "owner": [a.owner for a in result.agents],
         "funded_by": [a.funded_by for a in result.agents],
         "created_ts": [float(a.created_ts) * 1e6 if a.created_ts is not None else None
                        for a in result.agents],
         "kind": [a.kind for a in result.agents],
         "venue": [a.venue for a in result.agents]},
        schema={"agent_id": pl.String, "owner": pl.String, "funded_by": pl.String,
                "created_ts": pl.Float64, "kind": pl.String, "venue": pl.String},
    ).with_columns(pl.col("created_ts").cast(pl.Int64).cast(pl.Datetime("us", "UTC")))
    frame.write_parquet(paths["agents"])
    write_labels(result.labels, paths["labels"])
    return paths


def report(scenario: str, *, seed: int, sessions: int,
           cfg: calvano.CalvanoConfig | None = None,
           cache_dir: Path | str = "var/cache/calvano") -> dict[str, Any]:
    """Calvano summary (``p_nash``, ``p_monopoly``, ``prices``, ``delta_mean``, ``delta_sd``,
    ``sessions``, ``runtime_s``...) for ``"collusion"`` (trained, cached) or ``"competitive"``.

    ``cfg`` defaults to the paper's baseline with ``sessions`` and ``seed``.
    """
    base = replace(cfg or calvano.CalvanoConfig(), sessions=sessions, seed=seed)
    t0 = time.perf_counter()
    if scenario == "collusion":
        out = calvano.report(calvano.load_or_train(base, Path(cache_dir)), base)
    elif scenario == "competitive":
        out = calvano.competitive(base)
    else:
        raise ValueError(f"report covers 'collusion' or 'competitive', not {scenario!r}")
    out["wall_s"] = time.perf_counter() - t0
    return out


def run_live(exchange: Exchange, *, stop: Callable[[], bool], speed: float = 1.0,
             seed: int = 0, dt: float = 0.5, sleep: Callable[[float], None] = time.sleep,
             clock: Callable[[], float] = time.time, every: float = 0.0,
             **planter: Any) -> Market:
    """Step the honest agents against a live ``exchange`` (wall-clock event time) until
    ``stop()``; ``speed`` > 1 steps faster than real time. With ``every`` > 0 a
    :class:`~replay.market.live.Planter` plants an episode about every ``every`` s where the
    market trades and has settled (``planter``: its options; a
    :class:`~replay.market.live.LiveMarket` gives access to it). Returns the market."""
    from replay.market.live import LiveMarket

    live = LiveMarket(exchange, seed=seed, start=clock(), dt=dt, every=every, **planter)
    while not stop():
        live.step(clock())
        sleep(dt / speed)
    return live.m
