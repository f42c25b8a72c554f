"""Planted episodes: manipulators and market events, each with its ground-truth label.

Every episode is a :class:`~replay.market.agents.Trader` that acts through the exchange like any
other agent; its ids come from :meth:`Market.register` (same format, same kinds and the same kind
of owners and funders as honest agents). An episode records the trades it took part in, so its
label (DESIGN §3.4) names exactly the agents, instruments and time span of what it did.

- :class:`WashRing` (``wash_trade``): 2-4 ids of one owner pass the same quantity back and forth
  inside the spread (round trips every 20-90 s). About a third of rings hide their owner (registry
  ``owner`` None, a different fresh funder per id); half draw a new quantity per round trip.
- :class:`CircularRing` (``circular_trading``): 3-6 ids of different owners pass one quantity
  around a cycle A→B→…→A, every round leaving each position flat; half of the rings jitter each
  leg's quantity by up to 0.2-1 % (positions then stay nearly flat).
- :class:`SybilCluster` (``sybil_cluster``): a burst of 5-30 new ids buys in lockstep (same size,
  same moment) then sells, trading among themselves too; in the registry they have one fresh
  funder (~45 %), 2-4 fresh funders (~30 %), or are absent altogether (~25 %).
- :class:`SellProgram` (``flash_crash``): a large market-sell program (May 2010 style) that runs
  until its quantity is sold; the arbitrageurs' reaction on energy is labelled ``contagion``.
- :class:`BuyingFrenzy` (``price_spike``): momentum bots ladder bids up 3-9 % per step in a thin
  market until the price is 3-5× where it started.
- :class:`PricingSellers` (``price_collusion`` or control): two pricing bots posting the prices of
  Calvano Q-learning agents (or myopic best responses) to logit demand from honest buyers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from replay.market.agents import Market, Side, Trader
from streams.contracts import Trade, iso

__all__ = [
    "BuyingFrenzy",
    "CircularRing",
    "Episode",
    "PricingSellers",
    "SellProgram",
    "SybilCluster",
    "WashRing",
]


class Episode(Trader):
    """A planted episode: acts in ``[t0, t1)``, remembers its trades, produces its label."""

    kind = "anomaly"

    def __init__(self, agents: Sequence[str], insts: Sequence[str], t0: float, t1: float,
                 note: str) -> None:
        super().__init__(agents[0] if agents else "")
        self.agents, self.insts, self.note = list(agents), list(insts), note
        self.t0, self.t1 = t0, t1
        self.mine: list[Trade] = []

    def keep(self, trades: Sequence[Trade]) -> None:
        self.mine.extend(trades)

    def act(self, m: Market) -> None:
        if self.t0 <= m.t < self.t1:
            self.run(m)

    def run(self, m: Market) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def labels(self, m: Market) -> list[dict[str, Any]]:
        """Ground truth: the agents that traded, where, first to last trade."""
        if not self.mine:
            return []
        traded = {a for t in self.mine for a in (t.buyer, t.seller)}
        ts = [float(t.ts) for t in self.mine]
        return [{"kind": self.kind, "t_start": iso(min(ts)), "t_end": iso(max(ts)),
                 "instruments": sorted({t.instrument for t in self.mine}),
                 "agents": [a for a in self.agents if a in traded], "note": self.note}]


def _inside(m: Market, inst: str) -> float | None:
    """A price strictly inside the spread (so a cross there matches only each other)."""
    bid, ask = m.best(inst)
    if bid is None or ask is None:
        return None
    tick = m.tick_of(inst)
    if ask - bid < 2 * tick - 1e-12:
        return None
    lo, hi = round(bid / tick) + 1, round(ask / tick) - 1
    return m.rnd(inst, (lo + (hi - lo) // 2) * tick)


def cross(m: Market, seller: str, buyer: str, inst: str, qty: float) -> list[Trade]:
    """``seller`` rests an ask inside the spread, ``buyer`` lifts exactly it (same step)."""
    price = _inside(m, inst)
    if price is None:
        return []
    oid, _ = m.submit(seller, inst, "sell", qty, price)
    _, trades = m.submit(buyer, inst, "buy", qty, price, tif="IOC")
    m.cancel(oid)
    return trades


class WashRing(Episode):
    """Ids of one (declared or hidden) owner, matched round trips (same quantity both ways).

    A round trip is two crosses 20-90 s apart between one pair of the ids (drawn afresh, in
    either direction, per round trip); ``vary`` draws a new quantity per round trip. A round trip
    started before ``t1`` is completed, so every position ends flat.
    """

    kind = "wash_trade"

    def __init__(self, agents: Sequence[str], inst: str, t0: float, t1: float,
                 rng: np.random.Generator, lot: float, *, hidden: bool = False,
                 vary: bool = False) -> None:
        super().__init__(agents, [inst], t0, t1, "")
        self.lot, self.vary = lot, vary
        self.qty = float(round(lot * rng.integers(3, 8), 1))
        self.next = t0
        self.leg = 0
        self.pair = (0, 1)
        who = ("one hidden owner (no owner in the registry, different funders)" if hidden
               else "one owner")
        size = (f"{self.qty:g} units" if not vary else
                "the same quantity both ways (a new one per round trip)")
        self.note = (f"{len(agents)} ids of {who} wash {size} of {inst} back and forth inside "
                     "the spread (round trips every 20-90 s)")

    def act(self, m: Market) -> None:
        if self.t0 <= m.t and (m.t < self.t1 or self.leg % 2):
            self.run(m)

    def run(self, m: Market) -> None:
        if m.t < self.next:
            return
        if self.leg % 2 == 0:
            i, j = m.rng.choice(len(self.agents), 2, replace=False)
            self.pair = (int(i), int(j))
            if self.vary and self.leg:
                self.qty = float(round(self.lot * m.rng.integers(3, 8), 1))
        i, j = self.pair if self.leg % 2 == 0 else self.pair[::-1]
        trades = cross(m, self.agents[i], self.agents[j], self.insts[0], self.qty)
        if trades:
            self.keep(trades)
            self.leg += 1
            self.next = m.t + float(m.rng.uniform(20.0, 90.0))


class CircularRing(Episode):
    """A ring of ids passing one quantity around A→B→…→A within seconds, every round."""

    kind = "circular_trading"

    def __init__(self, agents: Sequence[str], inst: str, t0: float, t1: float,
                 rng: np.random.Generator, lot: float, *, jitter: float = 0.0) -> None:
        super().__init__(agents, [inst], t0, t1, "")
        self.qty = float(round(lot * rng.uniform(4, 10), 1))
        self.jitter = jitter
        self.next, self.hop = t0, 0
        flat = ("positions stay flat" if not jitter else
                f"each leg's quantity jittered by up to {100 * jitter:.1f} %, so positions stay "
                "nearly flat")
        self.note = (f"ring of {len(agents)} ids passes {self.qty:g} units of {inst} around a "
                     f"cycle, one hop every 1-3 s, a round every 60-150 s; {flat}")

    def act(self, m: Market) -> None:
        # a round started before t1 is completed, so every position ends flat
        if self.t0 <= m.t and (m.t < self.t1 or self.hop % len(self.agents)):
            self.run(m)

    def run(self, m: Market) -> None:
        if m.t < self.next:
            return
        n = len(self.agents)
        seller, buyer = self.agents[self.hop % n], self.agents[(self.hop + 1) % n]
        qty = self.qty
        if self.jitter:
            qty = float(round(qty * (1.0 + float(m.rng.uniform(-self.jitter, self.jitter))), 1))
        trades = cross(m, seller, buyer, self.insts[0], qty)
        if not trades:
            return
        self.keep(trades)
        self.hop += 1
        gap = (1.0, 3.0) if self.hop % n else (60.0, 150.0)
        self.next = m.t + float(m.rng.uniform(*gap))


class SybilCluster(Episode):
    """New ids of one operator: lockstep buys (same size, same moment), inside trades, exit.

    ``funding`` says how the registry shows them: ``"one funder"``, ``"N funders"`` or
    ``"unregistered"``. The lockstep size shrinks for big clusters (the total stays ~15 lots).
    """

    kind = "sybil_cluster"

    def __init__(self, agents: Sequence[str], inst: str, t0: float, t1: float,
                 rng: np.random.Generator, lot: float, *, funding: str = "one funder") -> None:
        super().__init__(agents, [inst], t0, t1, "")
        per = lot * float(rng.uniform(0.5, 1.0)) * min(1.0, 15.0 / max(len(agents), 1))
        self.qty = float(max(round(per, 1), 0.1))
        self.every = float(rng.uniform(6.0, 12.0))
        self.next = t0 + 30.0  # the ids are created in the first 25 s
        how = {"one funder": "funded by one account",
               "unregistered": "absent from the registry"}.get(funding, f"funded by {funding}")
        self.note = (f"{len(agents)} ids created in a burst, {how}, buy "
                     f"{self.qty:g} units of {inst} each in lockstep every {self.every:.0f} s, "
                     "pass units among themselves and sell in lockstep at the end")

    def run(self, m: Market) -> None:
        if m.t < self.next:
            return
        self.next = m.t + self.every
        inst = self.insts[0]
        exiting = m.t >= self.t0 + 0.75 * (self.t1 - self.t0)
        side: Side = "sell" if exiting else "buy"
        for a in self.agents:
            if exiting and m.position(a, inst) <= 0:
                continue
            q = min(self.qty, m.position(a, inst)) if exiting else self.qty
            limit = m.last[inst] * (0.97 if exiting else 1.03)
            self.keep(m.submit(a, inst, side, q, limit, tif="IOC")[1])
        if not exiting and m.rng.random() < 0.5:
            i, j = m.rng.choice(len(self.agents), 2, replace=False)
            self.keep(cross(m, self.agents[int(i)], self.agents[int(j)], inst, self.qty))

    def labels(self, m: Market) -> list[dict[str, Any]]:
        out = super().labels(m)
        for label in out:  # the episode starts with the burst of new ids
            label["t_start"] = iso(self.t0)
        return out


class SellProgram(Episode):
    """A large sell program at market, sized far beyond the book (plus a contagion label)."""

    kind = "flash_crash"

    def __init__(self, agent: str, inst: str, t0: float, t1: float, *, chunk: float,
                 related: str | None, watchers: Sequence[str]) -> None:
        super().__init__([agent], [inst], t0, t1, "")
        self.chunk, self.related, self.watchers = chunk, related, list(watchers)
        self.note = (f"sell program: market sells of {chunk:g} units of {inst} every 0.5 s "
                     f"for {t1 - t0:.0f} s while market makers withdraw")

    def run(self, m: Market) -> None:
        self.keep(m.submit(self.agents[0], self.insts[0], "sell", self.chunk)[1])

    def labels(self, m: Market) -> list[dict[str, Any]]:
        if not self.mine:
            return []
        start, end = float(self.mine[0].ts), float(self.mine[-1].ts) + 120.0
        out = [{"kind": self.kind, "t_start": iso(start), "t_end": iso(end),
                "instruments": list(self.insts), "agents": list(self.agents),
                "note": self.note}]
        if self.related is not None:
            rel = [t for t in m.trades if t.instrument == self.related
                   and start <= float(t.ts) <= end]
            agents = sorted({a for t in rel for a in (t.buyer, t.seller)} & set(self.watchers))
            out.append({"kind": "contagion", "t_start": iso(start), "t_end": iso(end),
                        "instruments": [self.related], "agents": agents,
                        "note": f"{self.related} hit by arbitrageurs hedging the "
                                f"{self.insts[0]} crash"})
        return out


class BuyingFrenzy(Episode):
    """Momentum bots bidding up a thin market until it is several times its price."""

    kind = "price_spike"

    def __init__(self, agents: Sequence[str], inst: str, t0: float, t1: float,
                 rng: np.random.Generator, lot: float, peak: float) -> None:
        super().__init__(agents, [inst], t0, t1, "")
        self.lot, self.peak = lot, peak
        self.base: float | None = None
        self.bids: list[str] = []
        self.note = (f"{len(agents)} momentum bots ladder bids on {inst} 3-9 % above the last "
                     f"price every 0.5 s until it is {peak:.1f}x its start")

    def act(self, m: Market) -> None:
        # the bots withdraw every bid they still have at the end, also when the live loop's
        # steps (wall clock) jump over the last step before t1: stale bids 3-5x above the
        # market would keep it there
        if m.t + m.dt >= self.t1:
            if self.bids and m.t >= self.t0:
                for oid in self.bids:
                    m.cancel(oid)
                self.bids = []
            return
        super().act(m)

    def run(self, m: Market) -> None:
        inst = self.insts[0]
        if self.base is None:
            self.base = m.last[inst]
        top = max(m.last[inst], m.best(inst)[0] or 0.0)
        for a in self.agents:
            if m.rng.random() < 0.6:
                price = min(top * float(1 + m.rng.uniform(0.03, 0.09)), self.base * self.peak)
                q = self.lot * float(m.rng.uniform(2.0, 5.0))
                oid, trades = m.submit(a, inst, "buy", q, price)
                self.keep(trades)
                self.bids.append(oid)

    def labels(self, m: Market) -> list[dict[str, Any]]:
        # trades against the bots' resting bids are theirs too
        ids = set(self.agents)
        self.mine = [t for t in m.trades if t.instrument == self.insts[0]
                     and self.t0 <= float(t.ts) <= self.t1 and (t.buyer in ids)]
        return super().labels(m)


class PricingSellers(Episode):
    """Two pricing bots selling GPU hours to logit demand, one posted price per period.

    ``prices`` holds the per-period price pairs (Calvano units, cost = 1); ``scale`` maps them
    to the instrument's price. Demand of seller ``i`` per period is ``size · q_i(p1, p2)`` of
    the Calvano logit model, bought by honest buyers at random moments within the period.
    """

    kind = "price_collusion"

    def __init__(self, sellers: Sequence[str], buyers: Sequence[str], inst: str, t0: float,
                 t1: float, *, prices: list[tuple[float, float]], period_s: float,
                 scale: float, size: float, demand: Any, collusive: bool, note: str) -> None:
        super().__init__(sellers, [inst], t0, t1, note)
        self.buyers, self.prices, self.period = list(buyers), prices, period_s
        self.scale, self.size, self.demand, self.collusive = scale, size, demand, collusive
        self.k = -1
        self.asks: list[str] = []
        self.plan: list[tuple[float, str, float, float]] = []

    def run(self, m: Market) -> None:
        inst = self.insts[0]
        k = int((m.t - self.t0) // self.period)
        if k != self.k and k < len(self.prices):
            self.k = k
            for oid in self.asks:
                m.cancel(oid)
            p1, p2 = self.prices[k]
            q1, q2 = self.demand(p1, p2)
            self.asks = [m.submit(s, inst, "sell", float(q) * self.size, p * self.scale)[0]
                         for s, p, q in zip(self.agents, (p1, p2), (q1, q2), strict=True)]
            total = (float(q1) + float(q2)) * self.size
            n = int(m.rng.integers(3, 7))
            shares = m.rng.dirichlet(np.ones(n)) * total
            when = np.sort(m.rng.uniform(m.t, m.t + self.period - m.dt, n))
            self.plan = [(float(w), self.buyers[int(m.rng.integers(len(self.buyers)))],
                          float(q), max(p1, p2) * self.scale) for w, q in zip(when, shares,
                                                                              strict=True)]
        while self.plan and self.plan[0][0] <= m.t:
            _, buyer, q, limit = self.plan.pop(0)
            self.keep(m.submit(buyer, inst, "buy", q, limit + m.tick_of(inst), tif="IOC")[1])

    def labels(self, m: Market) -> list[dict[str, Any]]:
        if not self.collusive or not self.mine:
            return []
        ts = [float(t.ts) for t in self.mine]
        return [{"kind": self.kind, "t_start": iso(min(ts)), "t_end": iso(max(ts)),
                 "instruments": list(self.insts), "agents": list(self.agents),
                 "note": self.note}]

