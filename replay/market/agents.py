"""The market environment and its honest populations.

:class:`Market` wraps a reference :class:`~exchange.venue.Exchange` (in-process, event time) with
what agents need: the drifting fair values, an order-id counter, positions, recent prices and the
agent registry. A fair value is a log random walk (``sigma`` per √s) pulled back to the
instrument's reference price with a half-life of ``revert_s`` (default 30 min; a stationary
spread of 1-3 % for the listed instruments): fundamentals wander but never follow a manipulated
price, and an hour-long live market does not drift away. Every agent, honest or not, trades
only through :meth:`Market.submit`, i.e. through the exchange's order books (price-time
priority, STP for the same id only); trades of reopening auctions (run by
:meth:`Exchange.tick` when a halt ends) count like any other: last price, positions, tape.

Honest populations (each a :class:`Trader` with ``act(market)`` called once per step):

- :class:`MarketMaker` — a few quote levels on both sides around its estimate of fair value
  (70 % its private fair value, 30 % the last print: quotes learn from trades),
  skewed by inventory, re-quoted when the estimate moves or an order fills; widens and shrinks when
  the last 10 s moved > 1.5 % (or the linked compute/energy instrument moved > 3.5 %), withdraws
  for 30-90 s when they moved > 3.5 % (or the linked one > 10.5 %): the May 2010 pattern,
  liquidity leaves exactly when it is needed, on related markets too.
- :class:`NoiseTrader` — Poisson arrivals, marketable IOC orders capped 2 % off fair value, or
  short-lived passive limit orders; device-like lot sizes.
- :class:`FundamentalTrader` — trades toward fair value when the touch is mispriced, within a
  position limit; keeps small deep bids/asks 6-35 % away (the "bottom fishers" that set the floor
  of a crash).
- :class:`Arbitrageur` — trades the compute/energy spread ``log GPU − 0.3 log KWH`` against its
  own slow average (GPU hours consume energy), notional-neutral on both legs.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Literal

import numpy as np

from exchange.book import Order, Reject
from exchange.venue import Exchange, MemorySink
from streams.contracts import Agent, Trade

__all__ = [
    "ENERGY_LINK",
    "INSTRUMENTS",
    "Arbitrageur",
    "FundamentalTrader",
    "Instrument",
    "Market",
    "MarketMaker",
    "NoiseTrader",
    "Trader",
]

Side = Literal["buy", "sell"]
#: Elasticity of the GPU-hour fair value to the energy price (compute consumes energy).
ENERGY_LINK = 0.3


@dataclass(frozen=True, kw_only=True)
class Instrument:
    """An instrument: reference price, volatility per √s of its fair value, tick and lot size."""

    name: str
    asset_class: str
    price: float
    sigma: float
    tick: float
    lot: float


INSTRUMENTS: tuple[Instrument, ...] = (
    Instrument(name="GPU-H100-1H", asset_class="compute", price=2.4, sigma=0.0005, tick=0.001,
               lot=4.0),
    Instrument(name="KWH-SA-GRID", asset_class="energy", price=0.12, sigma=0.0008, tick=0.0001,
               lot=80.0),
    Instrument(name="STORAGE-TB-MO", asset_class="storage", price=20.0, sigma=0.0003, tick=0.01,
               lot=2.0),
    Instrument(name="BW-10G-1H", asset_class="bandwidth", price=1.3, sigma=0.0006, tick=0.001,
               lot=3.0),
)


class Market:
    """Exchange + fair values + bookkeeping, advanced in steps of ``dt`` event-time seconds."""

    def __init__(self, rng: np.random.Generator, *, start: float, dt: float = 0.5,
                 instruments: tuple[Instrument, ...] = INSTRUMENTS,
                 venue: str = "m2m-sim", exchange: Exchange | None = None,
                 revert_s: float | None = 1800.0) -> None:
        self.rng, self.t, self.dt, self.start = rng, start, dt, start
        #: Half-life (s) of the fair values' pull back to the reference price (None: pure GBM).
        self.revert_s = revert_s
        self.specs = {i.name: i for i in instruments}
        self.sink = MemorySink()
        self.ex = exchange or Exchange(
            venue, [i.name for i in instruments], sink=self.sink, clock=lambda: self.t,
            batch_size=100_000, linger_ms=1e12, wall_clock=lambda: 0.0,
            asset_classes={i.name: i.asset_class for i in instruments})
        for i in instruments:
            self.ex.add_instrument(i.name, i.asset_class)
        self.fair = {i.name: i.price for i in instruments}
        self._walk = {i.name: 1.0 for i in instruments}
        self.last = {i.name: i.price for i in instruments}
        self.hist: dict[str, deque[float]] = {i.name: deque([i.price], maxlen=600)
                                              for i in instruments}
        self.pos: dict[str, dict[str, float]] = {}
        self.registry: list[Agent] = []
        self.traders: list[Trader] = []
        self.trades: list[Trade] = []
        self._ids: set[str] = set()
        self._oid = 0
        self.orders = 0

    # ------------------------------------------------------------------ registry
    def new_id(self) -> str:
        """A fresh agent id (``agent-`` + 6 hex digits), the same format for every agent."""
        while True:
            aid = f"agent-{int(self.rng.integers(0, 16**6)):06x}"
            if aid not in self._ids:
                self._ids.add(aid)
                return aid

    def register(self, *, owner: str | None, funded_by: str | None, kind: str,
                 created_ts: float | None = None) -> str:
        """Add an agent to the registry; returns its id."""
        aid = self.new_id()
        created = created_ts if created_ts is not None else (
            self.start - float(self.rng.uniform(3600.0, 180 * 86400.0)))
        self.registry.append(Agent(agent_id=aid, owner=owner, funded_by=funded_by,
                                   created_ts=round(created, 3), kind=kind, venue=self.ex.venue))
        return aid

    # ------------------------------------------------------------------ orders
    def tick_of(self, inst: str) -> float:
        return self.specs[inst].tick

    def rnd(self, inst: str, price: float) -> float:
        """``price`` on the instrument's tick grid (at least one tick)."""
        tick = self.specs[inst].tick
        return round(max(round(price / tick), 1) * tick, 10)

    def submit(self, agent: str, inst: str, side: Side, qty: float, price: float | None = None,
               tif: Literal["GTC", "IOC"] = "GTC") -> tuple[str, list[Trade]]:
        """Send an order at the current event time; returns ``(order_id, trades it made)``."""
        self._oid += 1
        oid = f"o{self._oid}"
        px = None if price is None else self.rnd(inst, price)
        qty = round(qty, 4)
        if qty <= 0:
            return oid, []
        self.orders += 1
        res = self.ex.submit(Order(oid, inst, side, qty, agent, price=px, tif=tif), ts=self.t)
        if isinstance(res, Reject):
            return oid, []
        self.book(res)
        return oid, res

    def book(self, trades: list[Trade]) -> None:
        """Take trades into the last prices, positions and tape."""
        for tr in trades:
            self.last[tr.instrument] = tr.price
            pb = self.pos.setdefault(tr.buyer, {})
            pb[tr.instrument] = pb.get(tr.instrument, 0.0) + tr.qty
            ps = self.pos.setdefault(tr.seller, {})
            ps[tr.instrument] = ps.get(tr.instrument, 0.0) - tr.qty
        self.trades.extend(trades)

    def cancel(self, order_id: str) -> None:
        self.ex.cancel(order_id)

    def alive(self, inst: str, order_id: str) -> bool:
        return order_id in self.ex.books[inst]

    def best(self, inst: str) -> tuple[float | None, float | None]:
        book = self.ex.books[inst]
        return book.best_bid(), book.best_ask()

    def position(self, agent: str, inst: str) -> float:
        return self.pos.get(agent, {}).get(inst, 0.0)

    def move(self, inst: str, seconds: float) -> float:
        """Largest absolute log move of the last price within the last ``seconds``."""
        h = self.hist[inst]
        k = min(len(h), max(int(seconds / self.dt), 1) + 1)
        if k < 2:
            return 0.0
        recent = [h[-j] for j in range(1, k + 1)]
        return abs(math.log(max(recent) / min(recent)))

    # ------------------------------------------------------------------ clock
    def step_fair(self) -> None:
        """Advance every fair value one step (log random walk pulled back to the reference
        price with half-life ``revert_s``; GPU also follows energy)."""
        sq = math.sqrt(self.dt)
        pull = 1.0 - 0.5 ** (self.dt / self.revert_s) if self.revert_s else 0.0
        for name, spec in self.specs.items():
            shock = float(self.rng.normal(0.0, spec.sigma * sq))
            self._walk[name] = math.exp((1.0 - pull) * math.log(self._walk[name]) + shock)
        for name, spec in self.specs.items():
            fair = spec.price * self._walk[name]
            if name == "GPU-H100-1H" and "KWH-SA-GRID" in self.specs:
                energy = self.specs["KWH-SA-GRID"]
                fair *= (self._walk["KWH-SA-GRID"] * energy.price / energy.price) ** ENERGY_LINK
            self.fair[name] = fair

    def record(self) -> None:
        for name in self.specs:
            self.hist[name].append(self.last[name])

    def step(self) -> None:
        """One event-time step: fair values move, every trader acts (random order), time moves."""
        self.step_fair()
        self.book(self.ex.tick(self.t))  # reopening auctions due now
        for k in self.rng.permutation(len(self.traders)):
            self.traders[int(k)].act(self)
        self.record()
        self.t = round(self.t + self.dt, 6)


class Trader:
    """Base class: an agent id and a per-step decision."""

    def __init__(self, agent_id: str) -> None:
        self.id = agent_id

    def act(self, m: Market) -> None:  # pragma: no cover - abstract
        raise NotImplementedError


class MarketMaker(Trader):
    """Two-sided quotes around a noisy fair value estimate; widens or withdraws on volatility."""

    def __init__(self, agent_id: str, inst: str, *, spread: float, size: float, levels: int,
                 limit: float, rng: np.random.Generator, linked: str | None = None) -> None:
        super().__init__(agent_id)
        self.inst, self.spread, self.size, self.levels, self.limit = (
            inst, spread, size, levels, limit)
        self.linked = linked
        self.bias = float(rng.normal(0.0, spread / 4))
        self.orders: list[str] = []
        self.quotes: dict[str, tuple[Side, float]] = {}  # live order id -> (side, price)
        self.center = 0.0
        self.next_requote = 0.0
        self.away_until = -math.inf
        self.widen = 3.0
        self.widen_move, self.withdraw_move = 0.015, 0.035

    def pull(self, m: Market) -> None:
        for oid in self.orders:
            m.cancel(oid)
        self.orders = []
        self.quotes = {}

    def act(self, m: Market) -> None:
        if m.t < self.away_until:
            return
        move = m.move(self.inst, 10.0)
        linked = m.move(self.linked, 10.0) if self.linked is not None else 0.0
        if move > self.withdraw_move or linked > 3 * self.withdraw_move:
            self.pull(m)
            self.away_until = m.t + float(m.rng.uniform(30.0, 90.0))
            return
        inv = m.position(self.id, self.inst)
        fair = (0.7 * m.fair[self.inst] + 0.3 * m.last[self.inst]) * (1.0 + self.bias)
        center = fair * (1.0 - 0.5 * self.spread * inv / self.limit)
        filled = any(not m.alive(self.inst, o) for o in self.orders)
        if (not filled and self.orders and m.t < self.next_requote
                and abs(center / self.center - 1.0) < self.spread / 4):
            return
        self.pull(m)
        wide = move > self.widen_move or linked > self.withdraw_move
        half = self.spread / 2 * (self.widen if wide else 1.0)
        size = self.size * (0.3 if wide else 1.0)
        tick = m.tick_of(self.inst)
        for k in range(self.levels):
            off = max(center * half * (1.0 + 0.8 * k), tick * (k + 1))
            qty = size * (1.0 + 0.5 * k) * float(m.rng.uniform(0.8, 1.2))
            legs: tuple[tuple[Side, float, bool], ...] = (
                ("buy", center - off, inv < self.limit), ("sell", center + off, inv > -self.limit))
            for side, px, ok in legs:
                if ok:
                    oid = m.submit(self.id, self.inst, side, qty, px)[0]
                    self.orders.append(oid)
                    self.quotes[oid] = (side, m.rnd(self.inst, px))
        self.orders = [o for o in self.orders if m.alive(self.inst, o)]
        self.center = center
        self.next_requote = m.t + float(m.rng.uniform(5.0, 15.0))


class NoiseTrader(Trader):
    """Random small orders: marketable IOC (capped 2 % off fair value) or passive limits."""

    def __init__(self, agent_id: str, insts: list[str], *, rate: float, scale: float) -> None:
        super().__init__(agent_id)
        self.insts, self.rate, self.scale = insts, rate, scale
        self.resting: deque[tuple[float, str, str]] = deque()

    def act(self, m: Market) -> None:
        while self.resting and self.resting[0][0] <= m.t:
            _, inst, oid = self.resting.popleft()
            m.cancel(oid)
        if m.rng.random() >= self.rate * m.dt:
            return
        inst = self.insts[int(m.rng.integers(len(self.insts)))]
        side: Side = "buy" if m.rng.random() < 0.5 else "sell"
        qty = m.specs[inst].lot * self.scale * float(m.rng.lognormal(-0.5, 0.7))
        qty = max(round(qty, 1), 0.1)
        fair = m.fair[inst]
        sign = 1.0 if side == "buy" else -1.0
        if m.rng.random() < 0.6:
            m.submit(self.id, inst, side, qty, fair * (1.0 + sign * 0.02), tif="IOC")
        else:
            price = fair * (1.0 - sign * float(m.rng.uniform(0.0005, 0.01)))
            oid, _ = m.submit(self.id, inst, side, qty, price)
            if m.alive(inst, oid):
                self.resting.append((m.t + float(m.rng.uniform(20.0, 120.0)), inst, oid))


class FundamentalTrader(Trader):
    """Buys below / sells above its fair value estimate; keeps deep resting bids and asks."""

    DEPTHS = (0.06, 0.1, 0.15, 0.22, 0.3, 0.35)

    def __init__(self, agent_id: str, inst: str, *, threshold: float, size: float,
                 limit: float, rng: np.random.Generator) -> None:
        super().__init__(agent_id)
        self.inst, self.threshold, self.size, self.limit = inst, threshold, size, limit
        self.err = float(rng.normal(0.0, threshold / 3))
        self.next_look = 0.0
        self.next_deep = 0.0
        self.deep: list[str] = []

    def act(self, m: Market) -> None:
        fair = m.fair[self.inst] * (1.0 + self.err)
        if m.t >= self.next_deep:
            for oid in self.deep:
                m.cancel(oid)
            self.deep = []
            for d in self.DEPTHS:
                q = self.size * float(m.rng.uniform(0.3, 0.8)) * (1 + 4 * d)
                d *= float(m.rng.uniform(0.8, 1.2))
                self.deep.append(m.submit(self.id, self.inst, "buy", q, fair * (1 - d))[0])
                self.deep.append(m.submit(self.id, self.inst, "sell", q, fair * (1 + d))[0])
            self.next_deep = m.t + float(m.rng.uniform(120.0, 300.0))
        if m.t < self.next_look:
            return
        self.next_look = m.t + float(m.rng.exponential(15.0))
        bid, ask = m.best(self.inst)
        inv = m.position(self.id, self.inst)
        if ask is not None and ask < fair * (1 - self.threshold) and inv < self.limit:
            m.submit(self.id, self.inst, "buy", min(self.size, self.limit - inv),
                     fair * (1 - self.threshold), tif="IOC")
        elif bid is not None and bid > fair * (1 + self.threshold) and inv > -self.limit:
            m.submit(self.id, self.inst, "sell", min(self.size, self.limit + inv),
                     fair * (1 + self.threshold), tif="IOC")


class Arbitrageur(Trader):
    """Trades ``log GPU − ENERGY_LINK·log KWH`` back to its slow moving average.

    The GPU leg is a passive bid/ask at the last price (refreshed every ~1.5 s, so a falling GPU
    market fills it); every fill is hedged at once, notional-neutral, with an IOC on energy
    (up to 5 % through the last price: hedging is urgent).
    """

    def __init__(self, agent_id: str, *, gpu: str, energy: str, threshold: float,
                 size: float, limit: float, tau_s: float = 300.0) -> None:
        super().__init__(agent_id)
        self.gpu, self.energy, self.threshold = gpu, energy, threshold
        self.size, self.limit, self.tau = size, limit, tau_s
        self.avg: float | None = None
        self.next_look = 0.0
        self.order: str | None = None
        self.hedged = 0.0

    def act(self, m: Market) -> None:
        s = math.log(m.last[self.gpu]) - ENERGY_LINK * math.log(m.last[self.energy])
        if self.avg is None:
            self.avg = s
        self.avg += (s - self.avg) * min(m.dt / self.tau, 1.0)
        inv = m.position(self.id, self.gpu)
        todo = inv - self.hedged
        if abs(todo) > 1e-9:  # hedge new GPU fills on energy
            qty = abs(todo) * m.last[self.gpu] / m.last[self.energy]
            side: Side = "sell" if todo > 0 else "buy"
            limit = m.last[self.energy] * (0.95 if todo > 0 else 1.05)
            m.submit(self.id, self.energy, side, qty, limit, tif="IOC")
            self.hedged = inv
        if m.t < self.next_look:
            return
        self.next_look = m.t + float(m.rng.exponential(1.5))
        if self.order is not None:
            m.cancel(self.order)
            self.order = None
        gap = s - self.avg
        if gap < -self.threshold and inv < self.limit:  # GPU cheap vs energy
            self.order = m.submit(self.id, self.gpu, "buy", min(self.size, self.limit - inv),
                                  m.last[self.gpu])[0]
        elif gap > self.threshold and inv > -self.limit:
            self.order = m.submit(self.id, self.gpu, "sell", min(self.size, self.limit + inv),
                                  m.last[self.gpu])[0]
