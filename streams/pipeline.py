"""The surveillance engine: validated trades in, alerts, halts, bars and summaries out. No Kafka.

The worker (:mod:`streams.worker`), the backtest (:mod:`replay.backtest`) and the benchmark call
the same :class:`Surveillance` object, so offline and live runs give identical alerts and halts;
they differ only in where trades come from and where results go.

State is kept per input partition (:class:`streams.partition.PartitionState`, which documents
the event-time rules: clocks, ``future_ts`` and ``late`` rejections, the watermark, admission).
:meth:`Surveillance.snapshot` and :meth:`Surveillance.restore` move a partition's state (with the
offset it reflects) in and out of a checkpoint. A backtest is one partition, ``0``.

>>> from streams.contracts import Trade
>>> engine = Surveillance()
>>> out = engine.process([Trade(ts=1.0, trade_id="t1", instrument="X", price=1.0, qty=1.0,
...                             buyer="a", seller="b")] * 2)
>>> out.duplicates, engine.stats.processed
(1, 1)
"""

from __future__ import annotations

import pickle
import time
import zlib
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from detectors.base import Finding
from detectors.breaker import TRADING, Transition
from detectors.market import DETECTOR, BarTuple, MarketConfig, MarketMonitor, MonitorOutput
from streams.contracts import Alert, Bar, Halt, Rejected, Trade, iso
from streams.dedup import RecentIds
from streams.partition import EngineConfig, PartitionState

if TYPE_CHECKING:
    from detectors.flows import PriceBatch, WindowSummary
    from streams.runtime_config import ConfigBook, ConfigChange

__all__ = ["EngineConfig", "EngineOutput", "EngineStats", "Surveillance", "Watermark"]

Key = tuple[str, str]
SNAPSHOT_VERSION = 7


@dataclass(frozen=True, slots=True)
class Watermark:
    """A partition's event-time progress for one venue (stage 2 closes windows on the minimum)."""

    venue: str
    partition: int
    watermark: float


@dataclass(slots=True)
class EngineOutput:
    alerts: list[Alert] = field(default_factory=list)
    halts: list[Halt] = field(default_factory=list)
    bars: list[Bar] = field(default_factory=list)
    #: Window summaries and price batches, for the ``flows`` topic.
    summaries: list[WindowSummary | PriceBatch] = field(default_factory=list)
    watermarks: list[Watermark] = field(default_factory=list)
    #: Trades refused after decoding: ``future_ts``, ``late``, ``capacity`` (dead letters).
    rejected: list[Rejected] = field(default_factory=list)
    duplicates: int = 0

    def extend(self, other: EngineOutput) -> None:
        self.alerts += other.alerts
        self.halts += other.halts
        self.bars += other.bars
        self.summaries += other.summaries
        self.watermarks += other.watermarks
        self.rejected += other.rejected
        self.duplicates += other.duplicates

    def __len__(self) -> int:
        return (len(self.alerts) + len(self.halts) + len(self.bars) + len(self.summaries)
                + len(self.watermarks) + len(self.rejected))


@dataclass(slots=True)
class EngineStats:
    processed: int = 0
    duplicates: int = 0
    alerts: int = 0
    halts: int = 0
    evicted: int = 0
    future_ts: int = 0
    late: int = 0
    capacity: int = 0
    clock: float = float("-inf")


class Surveillance:
    """Per-instrument market monitors, per input partition, with event-time rules and bounded
    memory (see :mod:`streams.partition`).

    ``dedup_capacity``, ``max_instruments`` and ``idle_evict_s`` are shortcuts for the same
    fields of ``engine``.
    """

    def __init__(
        self,
        config: MarketConfig | None = None,
        *,
        engine: EngineConfig | None = None,
        emit_bars: bool = True,
        dedup_capacity: int | None = None,
        max_instruments: int | None = None,
        idle_evict_s: float | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config or MarketConfig()
        overrides: dict[str, Any] = {k: v for k, v in (("dedup_capacity", dedup_capacity),
                                       ("max_instruments", max_instruments),
                                       ("idle_evict_s", idle_evict_s)) if v is not None}
        self.engine = replace(engine or EngineConfig(), **overrides)
        self.emit_bars = emit_bars
        self.wall_clock = wall_clock
        self.partitions: dict[int, PartitionState] = {}
        #: Runtime-tunable thresholds (:mod:`streams.runtime_config`); ``None``: none.
        self.book: ConfigBook | None = None

    def configure(self, change: ConfigChange) -> bool:
        """Take a validated runtime setting change (see :mod:`streams.runtime_config`);
        True when it arrived after its effective time had passed on some partition."""
        from streams.runtime_config import ConfigBook

        if self.book is None:
            self.book = ConfigBook(self.config)
        self.book.add(change)
        return any(s.clocks_max() > change.effective_ts for s in self.partitions.values())

    # ------------------------------------------------------------------ public API
    def process(self, trades: Sequence[Trade], *, partition: int = 0,
                sources: Sequence[dict[str, Any]] | None = None,
                next_offset: int | None = None) -> EngineOutput:
        """Judge trades of one input partition, in its order.

        ``sources`` (aligned with ``trades``) say where each came from, for dead letters;
        ``next_offset`` is the offset after the last message these trades came from (recorded
        for the checkpoint).
        """
        state = self.state(partition)
        out = EngineOutput()
        emit = self._emitter(state, out)
        groups, out.duplicates = state.accept(trades, sources, self.wall_clock(), out.rejected)
        state.judge(groups, emit, self.book)
        for venue in sorted({k[0] for k in groups}):
            self._fire(state, venue, emit, out)
        state.sweep(emit, out.summaries)
        if next_offset is not None:
            state.next_offset = next_offset
        return out

    def advance(self, clock: float, *, partition: int | None = None) -> EngineOutput:
        """Event time is known to have reached ``clock`` (end of a tape, tests): fire timers."""
        out = EngineOutput()
        for p in ([partition] if partition is not None else sorted(self.partitions)):
            state = self.partitions.get(p)
            if state is None:
                continue
            emit = self._emitter(state, out)
            for venue in sorted(state.clocks):
                self._fire(state, venue, emit, out, watermark=clock)
        return out

    def tick(self, wall: float | None = None, *,
             backlogged: Collection[int] = ()) -> EngineOutput:
        """Heartbeat (live worker, about once a second): idle partitions follow the slowest
        active one of their venue; a live venue that is silent everywhere follows the wall
        clock. Replayed history never moves here."""
        wall = self.wall_clock() if wall is None else wall
        cfg = self.engine
        out = EngineOutput()
        for p, state in sorted(self.partitions.items()):
            # tell stage 2 this partition exists and holds nothing yet -- only once it is known
            # to be read to the end: a partition whose first records are still to come would
            # otherwise let the venue watermark pass them (their rows would arrive late)
            if not state.clocks and p not in backlogged:
                out.watermarks.append(Watermark("*", p, 0.0))
        venues = sorted({v for s in self.partitions.values() for v in s.clocks})
        for venue in venues:
            rows = [(p, s.clocks[venue]) for p, s in sorted(self.partitions.items())
                    if venue in s.clocks]
            # silent for idle_timeout_s and nothing left unread: idle (a backlog is not idle)
            idle = {p for p, vc in rows
                    if wall - vc.wall >= cfg.idle_timeout_s and p not in backlogged}
            active = [vc.timer for p, vc in rows if p not in idle]
            # live: when it last traded, the venue's clock was close to the wall clock
            live = [vc.clock + (wall - vc.wall) for _, vc in rows
                    if vc.clock >= vc.wall - cfg.live_skew_s]
            if active:
                target = min(active)
            elif live:
                target = min(wall, max(live)) - cfg.out_of_order_s
            else:
                continue
            for p, vc in rows:
                if p in idle and target > vc.timer:
                    state = self.partitions[p]
                    self._fire(state, venue, self._emitter(state, out), out, watermark=target)
        return out

    def flush(self) -> EngineOutput:
        """End of input: emit every open bar and window summary."""
        out = EngineOutput()
        for p in sorted(self.partitions):
            state = self.partitions[p]
            state.flush(self._emitter(state, out), out.summaries, out.rejected)
        return out

    # ------------------------------------------------------------------ checkpoints
    def state(self, partition: int) -> PartitionState:
        state = self.partitions.get(partition)
        if state is None:
            state = self.partitions[partition] = PartitionState(partition, self.engine,
                                                                self.config)
        return state

    def snapshot(self, partition: int) -> bytes:
        """The partition's state (with the offset it reflects), compressed."""
        state = self.state(partition)
        body = pickle.dumps((SNAPSHOT_VERSION, state), protocol=pickle.HIGHEST_PROTOCOL)
        return zlib.compress(body, 3)

    def restore(self, partition: int, blob: bytes) -> int | None:
        """Replace the partition's state by a snapshot; return the offset it reflects.

        Only restore snapshots this system wrote: :mod:`streams.checkpoint` authenticates them
        before they get here.
        """
        version, state = pickle.loads(zlib.decompress(blob))  # noqa: S301 - authenticated
        if version != SNAPSHOT_VERSION or not isinstance(state, PartitionState):
            raise ValueError(f"unsupported snapshot version {version!r}")
        state.config, state.market = self.engine, self.config
        wall = self.wall_clock()
        for vc in state.clocks.values():
            vc.wall = wall  # not idle before it had a chance to read
        self.partitions[partition] = state
        return state.next_offset

    def drop(self, partition: int) -> None:
        """Forget a partition (revoked: another worker owns it now)."""
        self.partitions.pop(partition, None)

    # ------------------------------------------------------------------ views
    @property
    def stats(self) -> EngineStats:
        s = EngineStats()
        for state in self.partitions.values():
            for name, n in state.counts.items():
                if hasattr(s, name):
                    setattr(s, name, getattr(s, name) + n)
            s.clock = max(s.clock, state.clocks_max())
        return s

    @property
    def monitors(self) -> dict[Key, MarketMonitor]:
        return {k: slot.monitor for p in sorted(self.partitions)
                for k, slot in self.partitions[p].slots.items()}

    @property
    def halted(self) -> set[Key]:
        return {k for s in self.partitions.values() for k in s.halted}

    @property
    def seen(self) -> RecentIds:
        """The duplicate memory of partition 0 (the backtest's only partition)."""
        return self.state(0).seen

    # ------------------------------------------------------------------ internals
    def _fire(self, state: PartitionState, venue: str,
              emit: Callable[[MarketMonitor, MonitorOutput], None], out: EngineOutput,
              watermark: float | None = None) -> None:
        state.fire(venue, emit, out.summaries, watermark)
        vc = state.clocks.get(venue)
        if vc is not None and vc.timer > vc.published:
            vc.published = vc.timer
            out.watermarks.append(Watermark(venue, state.partition, vc.timer))

    def _emitter(self, state: PartitionState,
                 out: EngineOutput) -> Callable[[MarketMonitor, MonitorOutput], None]:
        def emit(monitor: MarketMonitor, res: MonitorOutput) -> None:
            venue, instrument = monitor.venue, monitor.instrument
            out.alerts += [self._alert(f) for f in res.findings]
            out.halts += [self._halt(venue, instrument, t) for t in res.transitions]
            if self.emit_bars:
                out.bars += [_bar(venue, instrument, b) for b in res.bars]
            if res.findings:
                state.counts["alerts"] = state.counts.get("alerts", 0) + len(res.findings)
            if res.transitions:
                state.counts["halts"] = state.counts.get("halts", 0) + len(res.transitions)
            key = (venue, instrument)
            if monitor.breaker.state == TRADING:
                state.halted.discard(key)
            elif key in state.slots:
                state.halted.add(key)
        return emit

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


def _bar(venue: str, instrument: str, b: BarTuple) -> Bar:
    sec, o, h, lo, c, volume, notional, n = b
    return Bar(venue=venue, instrument=instrument, ts=iso(sec), open=o, high=h, low=lo, close=c,
               volume=volume, notional=notional, trades=n)
