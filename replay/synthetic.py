"""A simple synthetic trade feed: honest noisy markets with optional planted crashes and spikes.

This is the spine's generator (for ``surveil up``, tests and the benchmark); the agent-based market
simulator is a separate, richer piece. Prices follow a random walk per instrument with its own
volatility, trades arrive as a Poisson process and print around the mid with a bid/ask bounce on a
tick grid. Everything is a pure function of the seed.

>>> spec = FeedSpec(seed=7, rate=5.0)
>>> a = generate(spec, start=1_700_000_000.0, duration_s=10)
>>> b = generate(spec, start=1_700_000_000.0, duration_s=10)
>>> len(a) > 100, [t.trade_id for t in a[:3]] == [t.trade_id for t in b[:3]]
(True, True)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from streams.contracts import Trade

__all__ = ["Episode", "Feed", "FeedSpec", "Instrument", "generate"]


@dataclass(frozen=True, kw_only=True)
class Instrument:
    name: str
    asset_class: str
    price: float
    #: Volatility per √second of the mid price (fraction).
    sigma: float
    tick: float
    spread_ticks: int = 1


DEFAULT_INSTRUMENTS = (
    Instrument(name="GPU-H100-1H", asset_class="compute", price=2.45, sigma=0.0006, tick=0.001),
    Instrument(name="KWH-SA-GRID", asset_class="energy", price=0.118, sigma=0.0012, tick=0.0001),
    Instrument(name="STORAGE-TB-MO", asset_class="storage", price=19.8, sigma=0.0003, tick=0.01),
    Instrument(name="BW-10G-1H", asset_class="bandwidth", price=1.35, sigma=0.0008, tick=0.001),
)


@dataclass(frozen=True, kw_only=True)
class Episode:
    """A planted market event: the mid moves by ``depth`` (−0.3 = −30%) over ``ramp_s``, holds
    for ``hold_s`` and recovers over ``ramp_s``."""

    instrument: str
    start_s: float
    depth: float
    ramp_s: float = 20.0
    hold_s: float = 30.0

    def factor(self, t: np.ndarray) -> np.ndarray:
        x = t - self.start_s
        up = np.clip(x / self.ramp_s, 0.0, 1.0)
        down = np.clip((x - self.ramp_s - self.hold_s) / self.ramp_s, 0.0, 1.0)
        return np.asarray(1.0 + self.depth * (up - down))


@dataclass(frozen=True, kw_only=True)
class FeedSpec:
    instruments: tuple[Instrument, ...] = DEFAULT_INSTRUMENTS
    #: Mean trades per event-time second, per instrument.
    rate: float = 20.0
    agents: int = 60
    venue: str = "default"
    seed: int = 0
    episodes: tuple[Episode, ...] = field(default_factory=tuple)


class Feed:
    """A continuing feed: each :meth:`next` call extends every instrument's random walk."""

    def __init__(self, spec: FeedSpec, *, start: float) -> None:
        self.spec, self.start = spec, start
        self.rng = np.random.default_rng(spec.seed)
        self.mids = [inst.price for inst in spec.instruments]
        self.elapsed = 0.0
        self.count = 0
        #: Planted episodes (offsets from ``start``); a live feed may append more as it goes.
        self.episodes = list(spec.episodes)

    def next(self, duration_s: float) -> list[Trade]:
        """Trades of the next ``duration_s`` event-time seconds, in time order."""
        spec = self.spec
        parts = [self._instrument(k, inst, duration_s) for k, inst in enumerate(spec.instruments)]
        cols = {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}
        order = np.argsort(cols["t"], kind="stable")
        ts = (self.start + cols["t"][order]).round(6).tolist()
        price, qty = cols["price"][order].round(6).tolist(), cols["qty"][order].tolist()
        ks, side = cols["k"][order].tolist(), cols["side"][order].tolist()
        buyer, seller = cols["buyer"][order].tolist(), cols["seller"][order].tolist()
        trades = []
        for j in range(len(ts)):
            inst = spec.instruments[ks[j]]
            trades.append(Trade(
                ts=ts[j], trade_id=f"{spec.venue}-{spec.seed}-{self.count + j:010d}",
                instrument=inst.name, price=price[j], qty=qty[j], buyer=f"agent-{buyer[j]:04d}",
                seller=f"agent-{seller[j]:04d}", venue=spec.venue, asset_class=inst.asset_class,
                aggressor="buy" if side[j] > 0 else "sell"))
        self.count += len(trades)
        self.elapsed += duration_s
        return trades

    def _instrument(self, k: int, inst: Instrument, duration_s: float) -> dict[str, np.ndarray]:
        spec, rng = self.spec, self.rng
        n = int(rng.poisson(spec.rate * duration_s))
        t0 = self.elapsed
        t = t0 + np.sort(rng.uniform(0.0, duration_s, n))
        steps = int(np.ceil(duration_s))
        walk = np.cumsum(rng.normal(-0.5 * inst.sigma**2, inst.sigma, steps))
        grid = t0 + np.arange(steps + 1) * (duration_s / steps)
        path = self.mids[k] * np.exp(np.concatenate([[0.0], walk]))
        self.mids[k] = float(path[-1])
        mid = np.interp(t, grid, path)
        for ep in self.episodes:
            if ep.instrument == inst.name:
                mid = mid * ep.factor(t)
        side = rng.integers(0, 2, n) * 2 - 1  # +1: buyer-initiated, prints at the ask
        half = inst.spread_ticks * inst.tick / 2
        price = np.maximum(np.round((mid + side * half) / inst.tick) * inst.tick, inst.tick)
        qty = np.round(rng.lognormal(1.0, 0.8, n), 2) + 0.01
        buyer = rng.integers(0, spec.agents, n)
        seller = (buyer + rng.integers(1, spec.agents, n)) % spec.agents
        return {"t": t, "price": price, "qty": qty, "buyer": buyer, "seller": seller,
                "side": side, "k": np.full(n, k)}


def generate(spec: FeedSpec, *, start: float, duration_s: float) -> list[Trade]:
    """Trades of every instrument over ``duration_s`` event-time seconds, in time order."""
    return Feed(spec, start=start).next(duration_s)
