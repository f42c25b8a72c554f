"""The surveillance engine: validated trades in, alerts, halts and bars out. No Kafka here.

The Faust worker (:mod:`streams.app`), the backtest (:mod:`replay.backtest`) and the benchmark
call the same :class:`Surveillance` object, so offline and live runs give identical alerts and
halts; they differ only in where trades come from and where results go.

>>> from streams.contracts import Trade
>>> engine = Surveillance()
>>> out = engine.process([Trade(ts=1.0, trade_id="t1", instrument="X", price=1.0, qty=1.0,
...                             buyer="a", seller="b")] * 2)
>>> out.duplicates, engine.stats.processed
(1, 1)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from detectors.base import Finding, TradeColumns
from detectors.breaker import TRADING, Transition
from detectors.market import DETECTOR, BarTuple, MarketConfig, MarketMonitor, MonitorOutput
from streams.contracts import Alert, Bar, Halt, Trade, iso

__all__ = ["EngineOutput", "EngineStats", "RecentIds", "Surveillance"]

Key = tuple[str, str]


@dataclass(slots=True)
class EngineOutput:
    alerts: list[Alert] = field(default_factory=list)
    halts: list[Halt] = field(default_factory=list)
    bars: list[Bar] = field(default_factory=list)
    duplicates: int = 0

    def extend(self, other: EngineOutput) -> None:
        self.alerts += other.alerts
        self.halts += other.halts
        self.bars += other.bars
        self.duplicates += other.duplicates


@dataclass(slots=True)
class EngineStats:
    processed: int = 0
    duplicates: int = 0
    alerts: int = 0
    halts: int = 0
    evicted: int = 0
    clock: float = float("-inf")


class RecentIds:
    """Bounded "seen" set: remembers at least the last ``capacity`` keys, at most twice that.

    >>> seen = RecentIds(2)
    >>> [seen.add(k) for k in "abac"]
    [True, True, False, True]
    """

    __slots__ = ("capacity", "current", "previous")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.current: set[object] = set()
        self.previous: set[object] = set()

    def add(self, key: object) -> bool:
        """Remember ``key``; False when it was seen already."""
        if key in self.current or key in self.previous:
            return False
        if len(self.current) >= self.capacity:
            self.previous, self.current = self.current, set()
        self.current.add(key)
        return True

    def __len__(self) -> int:
        return len(self.current) + len(self.previous)


class Surveillance:
    """Per-instrument market monitors with dedup, eviction and contract-shaped outputs.

    State is bounded: at most ``max_instruments`` monitors (idle ones, never halted ones, are
    evicted first and after ``idle_evict_s`` of event time without trades) and a dedup memory of
    ``dedup_capacity``–2×``dedup_capacity`` trade ids.

    ``idle_evict_s`` defaults to the monitors' own ``idle_reset_s``: a monitor silent that long
    restarts anyway when its next trade comes, so evicting it only frees memory and cannot
    change any result. Only the ``max_instruments`` cap (an overload guard) can.
    """

    def __init__(
        self,
        config: MarketConfig | None = None,
        *,
        emit_bars: bool = True,
        dedup_capacity: int = 200_000,
        max_instruments: int = 20_000,
        idle_evict_s: float | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config or MarketConfig()
        self.emit_bars = emit_bars
        self.max_instruments = max_instruments
        self.idle_evict_s = self.config.idle_reset_s if idle_evict_s is None else idle_evict_s
        self.wall_clock = wall_clock
        self.seen = RecentIds(dedup_capacity)
        self.monitors: dict[Key, MarketMonitor] = {}
        self.halted: set[Key] = set()
        self.stats = EngineStats()
        self._next_sweep = float("-inf")

    def process(self, trades: Sequence[Trade]) -> EngineOutput:
        """Judge trades (arrival order). Duplicate (venue, trade_id) pairs are processed once."""
        out = EngineOutput()
        groups: dict[Key, tuple[list[float], list[str], list[float], list[float], list[str],
                                list[str]]] = {}
        seen = self.seen
        clock = self.stats.clock
        for tr in trades:
            if not seen.add((tr.venue, tr.trade_id)):
                out.duplicates += 1
                continue
            key = (tr.venue, tr.instrument)
            g = groups.get(key)
            if g is None:
                g = groups[key] = ([], [], [], [], [], [])
            ts = tr.ts
            g[0].append(ts)  # type: ignore[arg-type]  # always float once decoded
            g[1].append(tr.trade_id)
            g[2].append(tr.price)
            g[3].append(tr.qty)
            g[4].append(tr.buyer)
            g[5].append(tr.seller)
            if ts > clock:  # type: ignore[operator]
                clock = ts  # type: ignore[assignment]
        for key, g in groups.items():
            monitor = self.monitors.get(key)
            if monitor is None:
                monitor = self.monitors[key] = MarketMonitor(key[0], key[1], self.config)
            self._emit(monitor, monitor.update(TradeColumns(key[0], key[1], *g)), out)
            self.stats.processed += len(g[0])
        self.stats.duplicates += out.duplicates
        out.extend(self.advance(clock))
        if len(self.monitors) > self.max_instruments or clock >= self._next_sweep:
            self._evict(clock, out)
        return out

    def advance(self, clock: float) -> EngineOutput:
        """Event time reached ``clock``: fire due resumptions of every halted instrument."""
        out = EngineOutput()
        if clock > self.stats.clock:
            self.stats.clock = clock
        for key in sorted(self.halted):
            monitor = self.monitors[key]
            self._emit(monitor, monitor.advance(self.stats.clock), out)
        return out

    def flush(self) -> EngineOutput:
        """End of input: emit every open bar."""
        out = EngineOutput()
        for monitor in self.monitors.values():
            self._emit(monitor, monitor.flush(), out)
        return out

    # ------------------------------------------------------------------ internals
    def _emit(self, monitor: MarketMonitor, res: MonitorOutput, out: EngineOutput) -> None:
        venue, instrument = monitor.venue, monitor.instrument
        out.alerts += [self._alert(f) for f in res.findings]
        out.halts += [self._halt(venue, instrument, t) for t in res.transitions]
        if self.emit_bars:
            out.bars += [_bar(venue, instrument, b) for b in res.bars]
        self.stats.alerts += len(res.findings)
        self.stats.halts += len(res.transitions)
        key = (venue, instrument)
        if monitor.breaker.state == TRADING:
            self.halted.discard(key)
        else:
            self.halted.add(key)

    def _alert(self, f: Finding) -> Alert:
        return Alert(alert_id=f.key, ts=iso(f.ts), kind=f.kind, score=f.score,
                     instrument=f.instrument, agents=f.agents, venue=f.venue, detector=DETECTOR,
                     summary=f.summary, evidence=f.evidence)

    def _halt(self, venue: str, instrument: str, t: Transition) -> Halt:
        return Halt(seq=t.seq, ts=iso(t.ts), emitted_at=iso(self.wall_clock()), venue=venue,
                    instrument=instrument, state=t.state, reason=t.reason,
                    resume_at=iso(t.resume_at) if t.resume_at is not None else None,
                    reference_price=t.reference_price, band_low=t.band_low,
                    band_high=t.band_high, alert_ids=list(t.alert_ids))

    def _evict(self, clock: float, out: EngineOutput) -> None:
        """Drop monitors idle for ``idle_evict_s`` (and the least recent beyond the cap)."""
        self._next_sweep = clock + self.idle_evict_s / 10
        idle = sorted((m.idle_since, k) for k, m in self.monitors.items() if k not in self.halted)
        excess = max(0, len(self.monitors) - self.max_instruments)
        for n, (last, key) in enumerate(idle):
            if n >= excess and clock - last < self.idle_evict_s:
                break
            monitor = self.monitors.pop(key)
            self._emit(monitor, monitor.flush(), out)
            self.halted.discard(key)
            self.stats.evicted += 1


def _bar(venue: str, instrument: str, b: BarTuple) -> Bar:
    sec, o, h, lo, c, volume, notional, n = b
    return Bar(venue=venue, instrument=instrument, ts=iso(sec), open=o, high=h, low=lo, close=c,
               volume=volume, notional=notional, trades=n)
