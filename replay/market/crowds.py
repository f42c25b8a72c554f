"""Honest crowds that look suspicious: the false positives an agent-level detector must survive.

Each class is an honest :class:`~replay.market.agents.Trader` (no label); :func:`add_crowds`
puts a dose of them into a market (every scenario gets the ``moderate`` dose, the ``honest``
scenario the ``busy`` one).

- :class:`SisterBots` (looks like wash trading): one declared owner runs several bots (noise
  traders); now and then one bot's passive order inside the spread is taken by a sister bot —
  an accident: random pair, random direction, independent sizes, no return leg, every 5-25 min.
- :class:`MakerCross` (looks like circular trading): a market maker (most often the most loaded
  one) lays off inventory by taking 20-100 % of another maker's quote at the touch, on average
  every 5 min per instrument (``busy``: 90 s; about half find a maker's quote at the touch); with
  three makers the trade graph has cycles A→B→C→A of unrelated sizes.
- :class:`LaunchDevice` (looks like a Sybil burst): a product launch registers 15-40 new ids of
  one device kind within minutes, funded by many different accounts and owned by different
  customers; each starts trading on its own schedule (own rate, own size scale, own start).
- :class:`FleetDevice` + :class:`GridFeeder` (look like lockstep Sybils): a declared fleet of
  10-30 devices (registry ``owner`` set, one funder, ``kind`` e.g. ``ev-charger``) buys energy on a
  timetable: every device at its fixed offset in a 5/10/15-minute cycle, similar sizes (±5 %),
  sometimes the same second; a utility's feeder sells the same energy back over time.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

import numpy as np

from replay.market.agents import Market, MarketMaker, NoiseTrader, Side, Trader

if TYPE_CHECKING:
    from replay.market.sim import People

__all__ = ["DOSES", "FleetDevice", "GridFeeder", "LaunchDevice", "MakerCross", "SisterBots",
           "add_crowds", "fresh"]

#: How many of each crowd: (sister owners, bots per owner, MM cross mean gap s, launches,
#: ids per launch, fleets, devices per fleet).
DOSES: dict[str, tuple[int, tuple[int, int], float, int, tuple[int, int], int, tuple[int, int]]] = {
    "moderate": (2, (3, 6), 300.0, 1, (15, 26), 1, (10, 21)),
    "busy": (5, (3, 9), 90.0, 3, (15, 41), 3, (10, 31)),
}
#: Device kinds of a product launch and the instrument each one trades.
LAUNCH_KINDS = {"storage-node": "STORAGE-TB-MO", "cdn-node": "BW-10G-1H",
                "gpu-cluster": "GPU-H100-1H", "battery-controller": "KWH-SA-GRID"}
ENERGY = "KWH-SA-GRID"


def fresh(prefix: str, rng: np.random.Generator) -> str:
    """A new owner (``org``) or funder (``acct``) account, the format of ``People``."""
    return f"{prefix}-{int(rng.integers(0, 16**6)):06x}"


def _inside_random(m: Market, inst: str) -> float | None:
    """A random price strictly inside the spread, or ``None`` when the spread is one tick."""
    bid, ask = m.best(inst)
    if bid is None or ask is None:
        return None
    tick = m.tick_of(inst)
    lo, hi = round(bid / tick) + 1, round(ask / tick) - 1
    if hi < lo:
        return None
    return m.rnd(inst, int(m.rng.integers(lo, hi + 1)) * tick)


class SisterBots(Trader):
    """Accidental crosses between bots of one owner (the bots themselves are noise traders)."""

    def __init__(self, ids: Sequence[str], insts: Sequence[str], *, start: float,
                 every: float, rng: np.random.Generator) -> None:
        super().__init__(ids[0])
        self.ids, self.insts, self.every = list(ids), list(insts), every
        self.next = start + float(rng.exponential(every))
        self.resting: deque[tuple[float, str, str]] = deque()
        self.crosses = 0

    def act(self, m: Market) -> None:
        while self.resting and self.resting[0][0] <= m.t:
            _, inst, oid = self.resting.popleft()
            m.cancel(oid)
        if m.t < self.next:
            return
        self.next = m.t + max(float(m.rng.exponential(self.every)), 60.0)
        inst = self.insts[int(m.rng.integers(len(self.insts)))]
        price = _inside_random(m, inst)
        if price is None:
            return
        i, j = m.rng.choice(len(self.ids), 2, replace=False)
        maker, taker = self.ids[int(i)], self.ids[int(j)]
        side: Side = "buy" if m.rng.random() < 0.5 else "sell"
        other: Side = "sell" if side == "buy" else "buy"
        lot = m.specs[inst].lot
        q_make = max(round(lot * float(m.rng.lognormal(0.0, 0.6)), 1), 0.1)
        q_take = max(round(lot * float(m.rng.lognormal(-0.3, 0.6)), 1), 0.1)
        oid, _ = m.submit(maker, inst, side, q_make, price)
        if m.alive(inst, oid):
            self.resting.append((m.t + float(m.rng.uniform(20.0, 120.0)), inst, oid))
            # the sister bot, a few steps later, happens to take it (its own IOC, its own size)
            trades = m.submit(taker, inst, other, q_take, price, tif="IOC")[1]
            self.crosses += sum(1 for t in trades if {t.buyer, t.seller} == {maker, taker})


class MakerCross(Trader):
    """Market makers of one instrument taking each other's quotes to lay off inventory."""

    def __init__(self, makers: Sequence[MarketMaker], inst: str, *, start: float, every: float,
                 rng: np.random.Generator) -> None:
        super().__init__(makers[0].id)
        self.makers, self.inst, self.every = list(makers), inst, every
        self.next = start + float(rng.exponential(every))

    def act(self, m: Market) -> None:
        if m.t < self.next or len(self.makers) < 2:
            return
        self.next = m.t + float(m.rng.exponential(self.every))
        invs = np.array([abs(m.position(mm.id, self.inst)) / mm.limit for mm in self.makers])
        p = (invs + 0.2) / float((invs + 0.2).sum())  # the most loaded maker lays off most often
        a = int(m.rng.choice(len(self.makers), p=p))
        taker = self.makers[a]
        inv = m.position(taker.id, self.inst)
        side: Side = ("sell" if inv > 0 else "buy") if inv else (
            "buy" if m.rng.random() < 0.5 else "sell")
        want: Literal["buy", "sell"] = "sell" if side == "buy" else "buy"
        bid, ask = m.best(self.inst)
        touch = ask if side == "buy" else bid
        best: tuple[str, float] | None = None
        for mm in self.makers:
            if mm is taker:
                continue
            for oid, (s, px) in mm.quotes.items():
                if s == want and abs(px - (touch or -1.0)) < 1e-12 and m.alive(self.inst, oid):
                    best = (oid, px)
        if best is None:
            return
        left = m.ex.books[self.inst].remaining(best[0]) or 0.0
        qty = round(left * float(m.rng.uniform(0.2, 1.0)), 4)
        m.submit(taker.id, self.inst, side, qty, best[1], tif="IOC")


class LaunchDevice(NoiseTrader):
    """A newly launched device: a noise trader that starts at ``begin`` with its own habits."""

    def __init__(self, agent_id: str, insts: list[str], *, rate: float, scale: float,
                 begin: float) -> None:
        super().__init__(agent_id, insts, rate=rate, scale=scale)
        self.begin = begin

    def act(self, m: Market) -> None:
        if m.t >= self.begin:
            super().act(m)


class FleetDevice(Trader):
    """A scheduled device: buys ``size`` of energy at ``offset`` into every ``period`` seconds."""

    def __init__(self, agent_id: str, inst: str, *, start: float, period: float,
                 offset: float, size: float, skip: float) -> None:
        super().__init__(agent_id)
        self.inst, self.period, self.size, self.skip = inst, period, size, skip
        self.next = start + offset
        self.bought = 0.0

    def act(self, m: Market) -> None:
        if m.t < self.next:
            return
        self.next += self.period * max(1, int((m.t - self.next) // self.period) + 1)
        if m.rng.random() < self.skip:  # already charged
            return
        qty = round(self.size * float(m.rng.uniform(0.98, 1.02)), 1)
        trades = m.submit(self.id, self.inst, "buy", qty, m.last[self.inst] * 1.01, tif="IOC")[1]
        self.bought += sum(t.qty for t in trades)


class GridFeeder(Trader):
    """A utility selling, in small slices, the energy its fleet customers bought."""

    def __init__(self, agent_id: str, inst: str, fleet: Sequence[FleetDevice], *,
                 start: float) -> None:
        super().__init__(agent_id)
        self.inst, self.fleet = inst, list(fleet)
        self.next = start + 30.0
        self.sold = 0.0

    def act(self, m: Market) -> None:
        if m.t < self.next:
            return
        self.next = m.t + float(m.rng.uniform(5.0, 15.0))
        owed = sum(d.bought for d in self.fleet) - self.sold
        lot = m.specs[self.inst].lot
        if owed < 0.5 * lot:
            return
        qty = round(min(owed, lot * float(m.rng.uniform(1.0, 3.0))), 1)
        bid = m.best(self.inst)[0]
        if bid is None:
            return
        trades = m.submit(self.id, self.inst, "sell", qty, bid, tif="IOC")[1]
        self.sold += sum(t.qty for t in trades)


def add_crowds(m: Market, p: People, insts: Sequence[str], *, dose: str = "moderate",
               horizon: float = 3600.0) -> dict[str, list[list[str]]]:
    """Add a dose of the honest look-alike crowds; returns their ids by crowd.

    ``horizon`` (the planned length of the day) places the product launches in its first 60 %.
    """
    rng, start = m.rng, m.start
    n_owners, per_owner, mm_gap, n_launch, per_launch, n_fleet, per_fleet = DOSES[dose]
    out: dict[str, list[list[str]]] = {"sisters": [], "makers": [], "launches": [], "fleets": []}
    owners = rng.choice(len(p.owners), min(n_owners, len(p.owners)), replace=False)
    for k in owners:
        owner = p.owners[int(k)]
        funder = p.funders[int(rng.integers(len(p.funders)))]
        ids = []
        mine = [insts[int(i)] for i in rng.choice(len(insts), min(2, len(insts)), replace=False)]
        for _ in range(int(rng.integers(*per_owner))):
            aid = p.add("trading-bot", owner=owner,
                        funder=funder if rng.random() < 0.7 else "")
            ids.append(aid)
            m.traders.append(NoiseTrader(aid, mine, rate=float(rng.uniform(0.05, 0.2)),
                                         scale=float(rng.uniform(0.6, 1.5))))
        m.traders.append(SisterBots(ids, mine, start=start, every=float(rng.uniform(300, 1500)),
                                    rng=rng))
        out["sisters"].append(ids)
    for inst in insts:
        makers = [t for t in m.traders if isinstance(t, MarketMaker) and t.inst == inst]
        if len(makers) >= 2:
            m.traders.append(MakerCross(makers, inst, start=start,
                                        every=mm_gap * float(rng.uniform(0.7, 1.3)), rng=rng))
            out["makers"].append([mm.id for mm in makers])
    kinds = [k for k, v in LAUNCH_KINDS.items() if v in insts]
    for _ in range(n_launch if kinds else 0):
        kind = kinds[int(rng.integers(len(kinds)))]
        t_launch = start + float(rng.uniform(0.05, 0.6)) * horizon
        n = int(rng.integers(*per_launch))
        created = t_launch + np.sort(rng.uniform(0.0, float(rng.uniform(120.0, 600.0)), n))
        ids = []
        for c in created:
            funder = fresh("acct", rng) if rng.random() < 0.75 else ""
            buyer: str | None = None  # a customer the venue does not know, or a new or known one
            if rng.random() >= 0.5:
                buyer = fresh("org", rng) if rng.random() < 0.6 else ""
            aid = p.add(kind, owner=buyer, funder=funder, created_ts=float(c))
            ids.append(aid)
            m.traders.append(LaunchDevice(
                aid, [LAUNCH_KINDS[kind]], rate=0.25 * float(rng.lognormal(-1.5, 0.8)),
                scale=float(rng.lognormal(-0.3, 0.6)),
                begin=float(c) + float(rng.uniform(5.0, 300.0))))
        out["launches"].append(ids)
    for _ in range(n_fleet if ENERGY in insts else 0):
        owner, funder = fresh("org", rng), fresh("acct", rng)
        kind = str(rng.choice(["ev-charger", "ev-charger", "heat-pump", "battery-controller"]))
        period = float(rng.choice([300.0, 600.0, 900.0]))
        window = float(rng.uniform(0.0, period))
        gap = float(rng.choice([0.0, 0.5, 1.0, 2.0, 5.0]))
        base = m.specs[ENERGY].lot * float(rng.uniform(0.25, 0.5))
        skip = float(rng.uniform(0.0, 0.15))
        n = int(rng.integers(*per_fleet))
        fleet = []
        for i in range(n):
            aid = p.add(kind, owner=owner, funder=funder)
            fleet.append(FleetDevice(aid, ENERGY, start=start, period=period,
                                     offset=(window + i * gap) % period,
                                     size=base * float(rng.uniform(0.95, 1.05)), skip=skip))
        m.traders.extend(fleet)
        feeder = p.add("grid-feeder", owner=fresh("org", rng))
        m.traders.append(GridFeeder(feeder, ENERGY, fleet, start=start))
        out["fleets"].append([d.id for d in fleet])
    return out
