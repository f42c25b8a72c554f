"""The live market of the demo: honest agents on a live exchange, and a planter of episodes.

:class:`LiveMarket` is what ``surveil exchange`` (:mod:`surveil.live`) and
:func:`~replay.market.sim.run_live` step: the honest population of :func:`populate` on an
:class:`~exchange.venue.Exchange` that obeys halts, plus a :class:`Planter`.

The planter keeps the demo believable when left running for hours:

- about every ``every`` seconds (±20 %) it plants one episode, rotating over the kinds of
  :data:`LIVE_KINDS` (a shuffled cycle; collusion needs the posted-price market and a Calvano
  training run, so it stays in the offline scenarios) and over each kind's target instruments
  (the least recently used first);
- never on an instrument that is not trading (halted, paused or quote-only for the exchange,
  i.e. its :class:`~exchange.halts.HaltSubscriber`) or was not trading in the last ``settle``
  seconds, nor on one whose previous episode ended (or which reopened after it) less than
  ``cooldown`` seconds ago, nor
  while its last price is more than ``band`` off its fair value (the market has not settled
  yet). A sell program on GPU hours spills into energy through the arbitrageurs, so both must be
  eligible. When nothing is eligible it looks again 5 s later.

Fair values do not follow the manipulated price (:class:`~replay.market.agents.Market`), so after
an episode the market makers and fundamental traders bring the price back to them within minutes.

:func:`soak` runs a live market in process at full speed, its halts coming from an in-process
:class:`streams.pipeline.Surveillance` through a :class:`~exchange.haltbook.HaltBook` (after
``latency`` seconds, like the Kafka round trip), and measures prices, episodes and halts.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from exchange.venue import Exchange
from replay.market.agents import INSTRUMENTS, Instrument, Market
from replay.market.crowds import fresh
from replay.market.scenarios import (
    BuyingFrenzy,
    CircularRing,
    Episode,
    SellProgram,
    SybilCluster,
    WashRing,
)

__all__ = ["LIVE_KINDS", "TARGETS", "LiveMarket", "Planted", "Planter", "soak"]

log = logging.getLogger("replay.market.live")

#: Episode kinds the live loop plants (label kinds of :mod:`replay.market.scenarios`).
LIVE_KINDS = ("flash_crash", "price_spike", "wash_trade", "circular_trading", "sybil_cluster")
#: Instruments each kind may be planted on.
TARGETS: dict[str, tuple[str, ...]] = {
    "flash_crash": ("GPU-H100-1H", "STORAGE-TB-MO"),
    "price_spike": ("BW-10G-1H", "STORAGE-TB-MO"),
    "wash_trade": ("STORAGE-TB-MO", "BW-10G-1H"),
    "circular_trading": ("KWH-SA-GRID", "GPU-H100-1H"),
    "sybil_cluster": ("BW-10G-1H", "GPU-H100-1H"),
}
#: Where a sell program spills over (the arbitrageurs hedge GPU hours with energy).
RELATED = {"GPU-H100-1H": "KWH-SA-GRID"}


@dataclass
class Planted:
    """One planted episode: kind, instrument, its active span and the episode itself."""

    kind: str
    instrument: str
    t0: float
    t1: float
    episode: Episode = field(repr=False)


class Planter:
    """Plants one episode about every ``every`` s where the market is trading and settled."""

    def __init__(self, m: Market, people: Any, arbs: Sequence[str], *, every: float = 120.0,
                 warmup: float = 90.0, cooldown: float = 300.0, settle: float = 120.0,
                 band: float = 0.05, kinds: Sequence[str] = LIVE_KINDS) -> None:
        unknown = set(kinds) - set(TARGETS)
        if unknown:
            raise ValueError(f"cannot plant {sorted(unknown)} live; choose from {LIVE_KINDS}")
        self.m, self.people, self.arbs = m, people, list(arbs)
        self.every, self.cooldown, self.settle, self.band = every, cooldown, settle, band
        self.kinds = [k for k in kinds if any(i in m.specs for i in TARGETS[k])]
        self.cycle: list[str] = []
        self.next = m.t + max(every, warmup)  # let the detectors warm up first
        self.free_at = {name: -math.inf for name in m.specs}  # previous episode's end + cooldown
        #: closures before the warm-up ends are the day's opening (the exchange starts
        #: quote-only until the detectors' heartbeats arrive), not halts to settle from
        self.quiet_until = m.t + warmup
        self.used = {name: -math.inf for name in m.specs}
        self.closed_at = {name: -math.inf for name in m.specs}  # last seen not trading
        self.planted: list[Planted] = []

    # ------------------------------------------------------------------ rules
    def trading(self, inst: str) -> bool:
        return self.m.ex.state(inst) == "TRADING"

    def eligible(self, inst: str) -> bool:
        """Trading now and for ``settle`` s, no episode for ``cooldown`` s, price near fair."""
        m = self.m
        if inst not in m.specs or not self.trading(inst):
            return False
        if m.t < self.free_at[inst] or m.t - self.closed_at[inst] < self.settle:
            return False
        return abs(m.last[inst] / m.fair[inst] - 1.0) <= self.band

    def busy(self, inst: str) -> bool:
        """An episode on ``inst`` has not ended yet."""
        return any(p.instrument == inst and p.t1 > self.m.t for p in self.planted)

    def step(self) -> Planted | None:
        """Call once per step, before :meth:`Market.step`; returns what it planted."""
        m = self.m
        for inst in m.specs:
            if not self.trading(inst) and m.t >= self.quiet_until:  # not the opening
                self.closed_at[inst] = m.t
                if self.free_at[inst] > m.t:  # halted after an episode: cool down from reopening
                    self.free_at[inst] = m.t + self.cooldown
        if not self.kinds or m.t < self.next:
            return None
        if not self.cycle:
            self.cycle = [self.kinds[int(i)] for i in m.rng.permutation(len(self.kinds))]
            if not self.planted:  # the first one is a market event: something to see at once
                self.cycle.sort(key=lambda k: k not in ("flash_crash", "price_spike"))
        for j, kind in enumerate(self.cycle):
            options = [i for i in TARGETS[kind] if self.eligible(i) and not self.busy(i)
                       and (i not in RELATED or kind != "flash_crash"
                            or RELATED[i] not in m.specs or self.eligible(RELATED[i]))]
            if not options:
                continue
            inst = min(options, key=lambda i: self.used[i])
            del self.cycle[j]
            done = self.plant(kind, inst)
            self.next = m.t + self.every * float(m.rng.uniform(0.8, 1.2))
            return done
        self.next = m.t + 5.0
        return None

    # ------------------------------------------------------------------ episodes
    def plant(self, kind: str, inst: str) -> Planted:
        """Put an episode of ``kind`` on ``inst`` into the market, starting in 2 s."""
        m, p, rng = self.m, self.people, self.m.rng
        lot = m.specs[inst].lot
        t0 = m.t + 2.0
        ep: Episode
        if kind == "flash_crash":
            related = RELATED.get(inst) if RELATED.get(inst) in m.specs else None
            ep = SellProgram(p.add("trading-bot"), inst, t0, t0 + 60.0, chunk=6 * lot,
                             related=related, watchers=self.arbs)
        elif kind == "price_spike":
            ids = [p.add("trading-bot") for _ in range(int(rng.integers(4, 7)))]
            ep = BuyingFrenzy(ids, inst, t0, t0 + 25.0, rng, lot,
                              peak=float(rng.uniform(3.0, 5.0)))
        elif kind == "wash_trade":
            n = int(rng.integers(2, 5))
            hidden = bool(rng.random() < 0.35)
            if hidden:
                ids = [p.add("trading-bot", owner=None, funder=fresh("acct", rng))
                       for _ in range(n)]
            else:
                owner = p.owners[int(rng.integers(len(p.owners)))]
                ids = [p.add("trading-bot", owner=owner) for _ in range(n)]
            ep = WashRing(ids, inst, t0, t0 + float(rng.uniform(240.0, 420.0)), rng, lot,
                          hidden=hidden, vary=bool(rng.random() < 0.5))
        elif kind == "circular_trading":
            ids = [p.add(str(rng.choice(["trading-bot", "battery-controller"])))
                   for _ in range(int(rng.integers(3, 7)))]
            jitter = float(rng.uniform(0.002, 0.01)) if rng.random() < 0.5 else 0.0
            ep = CircularRing(ids, inst, t0, t0 + float(rng.uniform(240.0, 420.0)), rng, lot,
                              jitter=jitter)
        elif kind == "sybil_cluster":
            created = t0 + np.sort(rng.uniform(0.0, 25.0, int(rng.integers(5, 21))))
            funder = fresh("acct", rng)
            ids = [p.add("cdn-node" if inst == "BW-10G-1H" else "gpu-cluster", owner=None,
                         funder=funder, created_ts=float(c)) for c in created]
            ep = SybilCluster(ids, inst, t0, t0 + float(rng.uniform(180.0, 300.0)), rng, lot)
        else:  # pragma: no cover - kinds are checked in __init__
            raise ValueError(kind)
        m.traders = [x for x in m.traders  # forget episodes finished long ago
                     if not (isinstance(x, Episode) and x.t1 + 600 < m.t)]
        m.traders.append(ep)
        self.free_at[inst] = ep.t1 + self.cooldown
        self.used[inst] = m.t
        done = Planted(kind, inst, ep.t0, ep.t1, ep)
        self.planted.append(done)
        log.info("planted %s on %s (%s)", kind, inst, ep.note)
        return done


class LiveMarket:
    """The honest population on a live ``exchange``, with a :class:`Planter` (``every`` > 0)."""

    def __init__(self, exchange: Exchange, *, seed: int = 0, start: float, dt: float = 0.5,
                 every: float = 0.0, instruments: Sequence[Instrument] | None = None,
                 **planter: Any) -> None:
        from replay.market.sim import People, populate

        rng = np.random.default_rng(seed)
        listed = tuple(instruments or [i for i in INSTRUMENTS if i.name in exchange.books]
                       or INSTRUMENTS)
        self.m = Market(rng, start=start, dt=dt, instruments=listed, exchange=exchange)
        self.people = People(self.m)
        self.arbs = populate(self.m, self.people, [i.name for i in listed])
        self.planter = (Planter(self.m, self.people, self.arbs, every=every, **planter)
                        if every > 0 else None)

    def step(self, now: float | None = None) -> Planted | None:
        """One step at event time ``max(now, next step)``; returns an episode planted now."""
        m = self.m
        if now is not None:
            m.t = max(m.t, now)
        done = self.planter.step() if self.planter is not None else None
        m.step()
        return done


def soak(seed: int, *, duration_s: float = 3600.0, every: float = 120.0, latency: float = 2.0,
         jump: float | None = None, start: float = 1_767_225_600.0, dt: float = 0.5,
         **planter: Any) -> dict[str, Any]:
    """Run the live market in process for ``duration_s`` of event time, halts obeyed.

    Halts come from an in-process :class:`~streams.pipeline.Surveillance` judging every trade,
    applied to the exchange's :class:`~exchange.haltbook.HaltBook` ``latency`` s later. ``jump``
    (s): step the clock by ``jump`` ±10 % instead of ``dt`` (a live loop behind the wall clock).

    Returns per instrument ``min``/``max``/``end`` of last/start over the run and the same
    outside episodes (``calm_min``/``calm_max``: from an episode's start to 10 min after the
    instrument reopened excluded); per episode ``|last/fair - 1|`` 10 min after the reopening
    (``after_10min``; ``after_s`` earlier when the next episode there came sooner) and how long
    it took to stay within 20 % (``back_s``), both timed from the moment the instrument trades
    again (``closed_s`` after the episode's end: a detector's halt may outlast the episode by
    minutes); the halts (pauses and halts, not resumptions).
    """
    from exchange.haltbook import HaltBook
    from exchange.venue import MemorySink
    from streams.pipeline import Surveillance

    clock = [start]
    book = HaltBook(max_future_s=None, max_seq_lead_s=None, wall_clock=lambda: clock[0])
    sink = MemorySink()
    names = [i.name for i in INSTRUMENTS]
    ex = Exchange("m2m-sim", names, halts=book, sink=sink, clock=lambda: clock[0],
                  batch_size=10**9, linger_ms=1e12, wall_clock=lambda: 0.0,
                  asset_classes={i.name: i.asset_class for i in INSTRUMENTS})
    live = LiveMarket(ex, seed=seed, start=start, dt=dt, every=every, **planter)
    m = live.m
    engine = Surveillance(wall_clock=lambda: clock[0])
    jr = np.random.default_rng(seed + 10_000)
    pending: list[tuple[float, Any]] = []
    halts: list[Any] = []
    path: dict[str, list[tuple[float, float, float, bool]]] = {n: [] for n in names}
    planted_closed: list[tuple[str, str]] = []
    while m.t < start + duration_s:
        if jump:
            m.t = max(m.t, clock[0] + jump * float(jr.uniform(0.9, 1.1)))
        clock[0] = m.t
        while pending and pending[0][0] <= m.t:
            book.apply(pending.pop(0)[1])
        done = live.step()
        if done is not None:
            planted_closed.append((done.instrument, ex.state(done.instrument)))
        ex.flush()
        out = engine.process(sink.trades)
        sink.batches.clear()
        for h in out.halts:
            pending.append((m.t + latency, h))
            halts.append(h)
        for n in names:
            path[n].append((m.t, m.last[n], m.fair[n], ex.state(n) == "TRADING"))
    base = {n: m.specs[n].price for n in names}

    def reopened(inst: str, t1: float) -> float | None:
        """First moment from ``t1`` on when ``inst`` trades again (a halt may outlast it)."""
        return next((t for t, *_, ok in path[inst] if t >= t1 and ok), None)

    spans: dict[str, list[tuple[float, float]]] = {n: [] for n in names}
    episodes = []
    planted = live.planter.planted if live.planter is not None else []
    for p in planted:
        pts = path[p.instrument]
        back_at = reopened(p.instrument, p.t1)
        for inst in {p.instrument, *([RELATED[p.instrument]] if p.kind == "flash_crash"
                                     and p.instrument in RELATED else [])}:
            spans[inst].append((p.t0, (reopened(inst, p.t1) or math.inf) + 600.0))
        # |last/fair - 1| 10 min after the reopening, or just before the next episode there
        nxt = min((q.t0 for q in planted if q.t0 > p.t0 and p.instrument in
                   (q.instrument, RELATED.get(q.instrument) if q.kind == "flash_crash"
                    else None)), default=math.inf)
        seen = ([(t - back_at, abs(last / fair - 1)) for t, last, fair, ok in pts
                 if ok and back_at <= t <= min(back_at + 600, nxt)]
                if back_at is not None else [])
        # first moment after the reopening from which the price stays within 20 % for a minute
        back = None
        for k, (t, _, _, _) in enumerate(pts):
            if back_at is None or t < back_at or t + 60.0 > pts[-1][0]:
                continue
            window = [abs(x / f - 1) for u, x, f, _ in pts[k:] if u <= t + 60.0]
            if all(w <= 0.2 for w in window):
                back = round(t - back_at, 1)
                break
        peak = max((abs(math.log(last / fair)) for t, last, fair, _ in pts
                    if p.t0 <= t <= p.t1 + 120), default=0.0)
        episodes.append({"kind": p.kind, "instrument": p.instrument, "t0": p.t0 - start,
                         "t1": p.t1 - start, "peak_move": math.exp(peak) - 1,
                         "closed_s": None if back_at is None else round(back_at - p.t1, 1),
                         "after_10min": seen[-1][1] if seen else None,
                         "after_s": round(seen[-1][0]) if seen else None, "back_s": back})
    per: dict[str, Any] = {}
    for n in names:
        ratio = [last / base[n] for _, last, _, _ in path[n]]
        calm = [last / base[n] for t, last, _, _ in path[n]
                if not any(a <= t <= b for a, b in spans[n])]
        per[n] = {"min": min(ratio), "max": max(ratio), "end": ratio[-1],
                  "calm_min": min(calm, default=math.nan),
                  "calm_max": max(calm, default=math.nan),
                  "fair_min": min(f / base[n] for _, _, f, _ in path[n]),
                  "fair_max": max(f / base[n] for _, _, f, _ in path[n])}
    stops = [h for h in halts if h.state != "TRADING"]
    return {"seed": seed, "duration_s": duration_s, "instruments": per, "episodes": episodes,
            "planted_while_closed": sum(1 for _, s in planted_closed if s != "TRADING"),
            "kinds": dict(Counter(e["kind"] for e in episodes)),
            "halts": len(stops), "halts_by": dict(Counter((h.instrument, h.reason)
                                                          for h in stops)),
            "trades": ex.counters.trades, "auctions": ex.counters.auctions}


def main() -> None:  # pragma: no cover - a measuring tool
    import argparse
    import json
    import time

    ap = argparse.ArgumentParser(description="soak the live demo market in process")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--duration", type=float, default=3600.0)
    ap.add_argument("--every", type=float, default=120.0)
    ap.add_argument("--latency", type=float, default=2.0)
    ap.add_argument("--jump", type=float, default=None)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    for seed in a.seeds:
        w = time.perf_counter()
        r = soak(seed, duration_s=a.duration, every=a.every, latency=a.latency, jump=a.jump)
        if a.json:
            print(json.dumps(r))
            continue
        print(f"seed {seed}: {len(r['episodes'])} episodes {r['kinds']}, planted while not "
              f"trading {r['planted_while_closed']}, halts {r['halts']}, auctions "
              f"{r['auctions']}, {time.perf_counter() - w:.0f} s")
        for n, v in r["instruments"].items():
            print(f"  {n:14s} last/start min {v['min']:.3f} max {v['max']:.3f} "
                  f"end {v['end']:.3f} | outside episodes {v['calm_min']:.3f}-"
                  f"{v['calm_max']:.3f} | fair {v['fair_min']:.3f}-{v['fair_max']:.3f}")
        for e in r["episodes"]:
            after = "-" if e["after_10min"] is None else f"{100 * e['after_10min']:.1f}%"
            print(f"    {e['t0']:6.0f}s {e['kind']:17s} {e['instrument']:14s} peak "
                  f"{100 * e['peak_move']:5.1f}%, trading again {e['closed_s']} s after its "
                  f"end; |last/fair-1| {after:>5s} {e['after_s']} s later; within 20 % after "
                  f"{e['back_s']} s")


if __name__ == "__main__":  # pragma: no cover
    main()
