"""One input partition's share of the engine: admission, event clocks, lateness and timers.

The engine keeps the state of each partition of ``trades`` apart (:class:`PartitionState`), so the
state of a partition can be checkpointed with the offsets it reflects and move to another worker
on a rebalance. An instrument's trades arrive in one partition (key = instrument), in the order
of that partition: every per-instrument result is a function of that sequence alone.

Event time you can trust
------------------------
- **Instrument clock**: the newest ``ts`` accepted for the instrument.
- **Venue clock** ``P`` (per partition and venue): the newest ``ts`` of an *established*
  instrument (one with ``clock_quorum`` accepted trades). One-trade junk instruments cannot move
  it, however many arrive.
- **Future**: a trade more than ``wall_future_s`` ahead of the wall clock goes to the
  dead-letter topic with reason ``future_ts`` and moves no clock. A trade more than
  ``max_future_s`` ahead of ``max(P, its instrument clock)`` is *held*: either the venue's time
  really moved on (a quiet night, a thin market's next trade after an hour) or the timestamp is
  bad. The next trades of the venue decide. ``clock_quorum`` distinct held trades, all within
  ``max_future_s`` of the first, confirm the jump when they are of two or more instruments, or
  of one when the venue has no other established instrument that could contradict it: P moves
  to the newest of them less ``max_future_s`` and they are judged in their order. A trade of
  the venue back at its old time refutes the jump (the held trades go to the dead-letter topic
  as ``future_ts``), and so does the end of the input. A jump beyond ``max_jump_s`` (7 days) is
  never confirmed. So one bad timestamp, a few scattered ones, or a burst on one instrument of
  a busy venue never moves a clock, and an honest quiet spell costs only the wait for the
  trades that confirm it. Consistent bad timestamps on two instruments within ``max_jump_s``
  look like a resumption and do move P (live, the wall-clock bound still holds).
- **Late**: a trade more than ``allowed_lateness_s`` behind its own instrument's clock goes to the
  dead-letter topic with reason ``late`` (its instrument has judged later trades already). A trade
  less late than that is judged by its instrument's monitor at the monitor's clock; if its
  stage-1 window was already summarised it travels in an amendment of that window.
- **Watermark** ``T`` (per partition and venue) = ``P − out_of_order_s``, never decreasing. Timers
  fire on it: resumptions of halted instruments (stamped with their ``resume_at``) and the close
  of stage-1 windows. When a partition has had no input for ``idle_timeout_s`` (wall clock) its
  watermark follows the slowest active partition of the same venue; when every partition of a
  live venue (its clock within ``live_skew_s`` of the wall clock) is silent — every instrument
  halted, a quiet night — the worker's heartbeat advances it with the wall clock. Replayed
  history (far behind the wall clock) only moves with its own trades: the tape's clock is the
  clock.

With input whose per-partition disorder stays under ``out_of_order_s`` and whose partitions are
never silent for ``idle_timeout_s`` while data is pending, results do not depend on batching, on
lag between partitions, or on how partitions are assigned to workers.

Admission under a memory budget
-------------------------------
At most ``max_instruments`` instruments per partition. When full, room is made by evicting, in
this order: newcomers (fewer than ``clock_quorum`` trades), oldest first; instruments still warming
up, least recently traded first; warm instruments idle for ``idle_evict_s``. A halted instrument,
or a warm one that traded within ``idle_evict_s``, is never evicted: if nothing can go, the new
instrument's trade is refused with reason ``capacity`` (counted, in the dead-letter topic).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import accumulate, groupby
from operator import ge
from typing import TYPE_CHECKING, Any

from detectors.base import TradeColumns
from detectors.market import MarketConfig, MarketMonitor, MonitorOutput
from streams.contracts import Rejected, Trade, encode
from streams.dedup import RecentIds

if TYPE_CHECKING:
    from detectors.flows import FlowWindows, PriceBatch, WindowSummary
    from streams.runtime_config import ConfigBook

    Summaries = list[WindowSummary | PriceBatch]

__all__ = ["EngineConfig", "PartitionState", "Slot", "VenueClock"]

Key = tuple[str, str]
Emit = Callable[[MarketMonitor, MonitorOutput], None]
INF = math.inf
#: A flood of new instruments past the budget is dead-lettered one by one up to this many per
#: batch; the rest of the batch's refusals become one record with their count.
DLQ_CAPACITY_PER_BATCH = 1_000
#: Runs of at least this many trades of one warm instrument are accepted at once
#: (:meth:`PartitionState._bulk`); shorter runs are not worth the setup.
_BULK = 8
#: At most this many trades held per venue while a jump waits for confirmation.
MAX_HELD = 100
#: Evicted instruments remembered (a few numbers each, ~200 B).
MAX_MEMOS = 100_000


@dataclass(frozen=True, kw_only=True)
class EngineConfig:
    """Event-time, lateness and admission settings of the engine (seconds of event time unless
    said otherwise)."""

    max_future_s: float = 300.0
    #: The largest time jump (a quiet spell) the venue's next trades can confirm; a trade further
    #: ahead than this is always dead-lettered as ``future_ts``.
    max_jump_s: float = 7 * 86_400.0
    #: Ahead of the wall clock (``None`` disables; then only the event clocks judge).
    wall_future_s: float | None = 300.0
    out_of_order_s: float = 2.0
    allowed_lateness_s: float = 60.0
    #: Wall-clock seconds without input after which a partition counts as idle.
    idle_timeout_s: float = 10.0
    live_skew_s: float = 120.0
    clock_quorum: int = 3
    window_s: float = 60.0
    #: Price buckets for stage 2's cross-market view (0: none).
    tick_s: float = 5.0
    max_instruments: int = 20_000
    max_venues: int = 1_000
    #: Default: the monitors' own ``idle_reset_s`` (evicting then cannot change any result).
    idle_evict_s: float | None = None
    dedup_capacity: int = 100_000
    summaries: bool = True


class Slot:
    """One instrument of a partition: its monitor, its window summaries and its counters."""

    __slots__ = ("asset_class", "cfg_at", "cfg_version", "clock", "flows", "monitor", "n")

    def __init__(self, monitor: MarketMonitor, flows: FlowWindows | None,
                 asset_class: str | None = None) -> None:
        self.monitor, self.flows = monitor, flows
        self.n = 0
        self.clock = -INF
        self.asset_class = asset_class
        #: Runtime settings: resolved at the running newest ts ``cfg_at`` of this instrument's
        #: trades, against the version of the config book (see streams.runtime_config).
        self.cfg_at = -INF
        self.cfg_version = 0


@dataclass(slots=True)
class VenueClock:
    """Event clocks of one venue within one partition."""

    clock: float = -INF  #: P: newest ts of an established instrument
    timer: float = -INF  #: T: the watermark timers fire on
    wall: float = 0.0  #: wall-clock time of the last input (not checkpointed meaningfully)
    next_close: float = INF  #: earliest end of an open stage-1 window
    published: float = -INF  #: last watermark handed to stage 2
    #: Trades beyond ``max_future_s`` waiting for confirmation (a time jump), with their sources
    held: list[tuple[Trade, dict[str, Any] | None]] = field(default_factory=list)
    #: Established instruments (``clock_quorum`` trades) of this venue in the partition
    established: int = 0


@dataclass(slots=True)
class PartitionState:
    """Everything the engine knows about one input partition (picklable: it is checkpointed)."""

    partition: int
    config: EngineConfig
    market: MarketConfig
    slots: dict[Key, Slot] = field(default_factory=dict)
    newcomers: dict[Key, None] = field(default_factory=dict)
    clocks: dict[str, VenueClock] = field(default_factory=dict)
    halted: set[Key] = field(default_factory=set)
    open_flows: dict[str, set[Key]] = field(default_factory=dict)
    seen: RecentIds = field(default_factory=RecentIds)
    counts: dict[str, int] = field(default_factory=dict)
    #: Offset of the next message of this partition not yet reflected in the state.
    next_offset: int | None = None
    next_sweep: float = -INF
    #: What evicted instruments must not forget (MarketMonitor.memo), least recent first: an
    #: instrument waking after hours is judged against its last known price at once.
    memos: OrderedDict[Key, tuple[Any, ...]] = field(default_factory=OrderedDict)
    _refused: int = 0
    _full: bool = False

    def __post_init__(self) -> None:
        cfg = self.config
        self.seen = RecentIds(horizon_s=cfg.allowed_lateness_s + cfg.max_future_s,
                              capacity=cfg.dedup_capacity)

    # ------------------------------------------------------------------ intake
    def accept(self, trades: Sequence[Trade], sources: Sequence[dict[str, Any]] | None,
               wall: float, rejected: list[Rejected],
               groups: dict[Key, list[list[Any]]] | None = None,
               ) -> tuple[dict[Key, list[list[Any]]], int]:
        """Check every trade in order; return accepted trades grouped per instrument (columns)
        and the number of duplicates. Rejections are appended to ``rejected``. ``groups``: the
        trades accepted so far in this batch (when held trades are released within it)."""
        cfg = self.config
        groups = {} if groups is None else groups
        wall_limit = wall + cfg.wall_future_s if cfg.wall_future_s is not None else INF
        max_future, lateness, quorum = cfg.max_future_s, cfg.allowed_lateness_s, cfg.clock_quorum
        slots, clocks, seen = self.slots, self.clocks, self.seen
        stamps, order = seen.stamps, seen.order
        duplicates = extra_dups = 0
        self._refused = 0
        self._full = False
        # the trades of one message are usually of one instrument: keep the last lookups
        last_venue: str | None = None
        last_key: Key | None = None
        vc: VenueClock | None = None
        slot: Slot | None = None
        g: list[list[Any]] | None = None
        newest = -INF
        b = 0  # runs of one (venue, instrument) in arrival order: trades[a:b]
        runs = groupby(zip([t.venue for t in trades], [t.instrument for t in trades], strict=True))
        for key, run in runs:
            a = b
            b += sum(1 for _ in run)
            lo = a
            while lo < b:
                hi = b
                if b - lo >= _BULK:
                    vc = clocks.get(key[0])
                    slot = slots.get(key)
                    n = slot.n if slot is not None else 0
                    if vc is not None and slot is not None and n >= quorum:
                        if not vc.held:  # else one by one: each trade confirms or refutes
                            vc.wall = wall
                            last_venue, last_key = key[0], key
                            top = self._bulk(trades[lo:b], key, slot, vc, groups, wall_limit)
                            g = groups.get(key)
                            if top is not None:
                                newest = max(newest, top)
                                break
                    elif lo == a:  # one by one until warm (a new instrument), then at once
                        hi = min(b, lo + quorum - n)
                for i in range(lo, hi):
                    tr = trades[i]
                    ts: float = tr.ts  # type: ignore[assignment]  # always float once decoded
                    venue = tr.venue
                    if venue != last_venue or vc is None:
                        vc = clocks.get(venue)
                        if vc is None:
                            if len(clocks) >= cfg.max_venues:
                                self._reject(rejected, "capacity", f"more than {cfg.max_venues} "
                                             f"venues in partition {self.partition}", tr,
                                             sources, i)
                                continue
                            vc = clocks[venue] = VenueClock(wall=wall)
                        vc.wall = wall
                        last_venue, last_key = venue, None
                    key = (venue, tr.instrument)
                    if key != last_key:
                        slot = slots.get(key)
                        g = groups.get(key)
                        last_key = key
                    own = slot.clock if slot is not None else -INF
                    ref = vc.clock if vc.clock > own else own
                    if ts > wall_limit:
                        self._reject(rejected, "future_ts", f"ts {ts:.3f} is more than "
                                     f"{cfg.wall_future_s:g} s ahead of the wall clock", tr,
                                     sources, i)
                        continue
                    if ref > -INF and ts > ref + max_future:
                        held = self._hold(vc, tr, slot, ref, sources, i, rejected)
                        if held is None:
                            continue
                        # confirmed: the venue's time moved on; judge the held trades in order
                        refused, full = self._refused, self._full
                        _, dups = self.accept(
                            [t for t, _ in held],
                            None if sources is None else [s or {} for _, s in held], wall,
                            rejected, groups)
                        self._refused, self._full = refused, full
                        extra_dups += dups
                        newest = max(newest, max(float(t.ts) for t, _ in held))
                        last_venue = last_key = None
                        vc = slot = g = None
                        continue
                    if vc.held:
                        self._refute(vc, f"the venue's next trade was at {ts:.3f}", rejected)
                    if ts < own - lateness:
                        self._reject(rejected, "late", f"ts {ts:.3f} is {own - ts:.1f} s "
                                     f"behind the instrument's clock (allowed lateness "
                                     f"{lateness:g} s)", tr, sources, i)
                        continue
                    ident = (venue, tr.trade_id)
                    if ident in stamps:
                        duplicates += 1
                        continue
                    if slot is None:
                        slot = self._admit(key, groups, tr.asset_class, ts)
                        if slot is None:
                            self._reject(rejected, "capacity", f"{cfg.max_instruments} "
                                         f"instruments in partition {self.partition} are all "
                                         f"warm and active", tr, sources, i)
                            last_key = None
                            continue
                    stamps[ident] = ts
                    order.append(ident)
                    if ts > newest:
                        newest = ts
                    slot.n += 1
                    if ts > slot.clock:
                        slot.clock = ts
                    if slot.n >= quorum:
                        if slot.n == quorum:
                            self.newcomers.pop(key, None)
                            vc.established += 1
                        if ts > vc.clock:
                            vc.clock = ts
                    if g is None:
                        g = groups[key] = [[], [], [], [], [], []]
                    g[0].append(ts)
                    g[1].append(tr.trade_id)
                    g[2].append(tr.price)
                    g[3].append(tr.qty)
                    g[4].append(tr.buyer)
                    g[5].append(tr.seller)
                lo = hi
        seen.settle(newest)
        self._count("duplicates", duplicates)
        if self._refused > DLQ_CAPACITY_PER_BATCH:
            extra = self._refused - DLQ_CAPACITY_PER_BATCH
            rejected.append(Rejected(
                f"capacity: {extra} more trades of new instruments refused in this batch "
                f"(counted, not dead-lettered one by one)", b"", None,
                {"partition": self.partition}))
        return groups, duplicates + extra_dups

    def _hold(self, vc: VenueClock, tr: Trade, slot: Slot | None, ref: float,
              sources: Sequence[dict[str, Any]] | None, i: int,
              rejected: list[Rejected]) -> list[tuple[Trade, Any]] | None:
        """Hold a trade more than ``max_future_s`` ahead of ``ref`` (the venue's or its own
        clock, whichever is newer; module docs, *Future*). Returns the held trades once they
        confirm a jump (the venue clock moved for them), else ``None``."""
        cfg = self.config
        ts: float = tr.ts  # type: ignore[assignment]
        held = vc.held
        if ts > ref + cfg.max_jump_s:
            self._reject(rejected, "future_ts", f"ts {ts:.3f} is more than "
                         f"{cfg.max_jump_s:g} s ahead of the venue clock", tr, sources, i)
            return None
        if held:
            first: float = held[0][0].ts  # type: ignore[assignment]
            if abs(ts - first) > cfg.max_future_s:
                self._reject(rejected, "future_ts", f"ts {ts:.3f} is more than "
                             f"{cfg.max_future_s:g} s ahead of the venue clock and does not "
                             f"confirm the jump to {first:.3f}", tr, sources, i)
                return None
            if any(t.trade_id == tr.trade_id for t, _ in held):
                self._count("duplicates", 1)
                return None
        if len(held) >= MAX_HELD:
            self._drop_held(rejected, *held.pop(0), f"not confirmed within {MAX_HELD} trades")
        held.append((tr, dict(sources[i]) if sources is not None else None))
        self._count("held", 1)
        if len(held) < cfg.clock_quorum:
            return None
        if len({t.instrument for t, _ in held}) < 2:
            # one instrument confirms alone only when no other established one could contradict
            mine = slot is not None and slot.n >= cfg.clock_quorum
            if vc.established - mine > 0:
                return None
        out, vc.held = list(held), []
        top = max(float(t.ts) for t, _ in out)
        vc.clock = max(vc.clock, top - cfg.max_future_s)
        self._count("time_jumps", 1)
        return out

    def _refute(self, vc: VenueClock, why: str, rejected: list[Rejected]) -> None:
        """The held trades were not a jump (a trade at the venue's old time came next, or the
        input ended): dead letters."""
        held, vc.held = vc.held, []
        for tr, source in held:
            self._drop_held(rejected, tr, source, why)

    def _drop_held(self, rejected: list[Rejected], tr: Trade, source: dict[str, Any] | None,
                   why: str) -> None:
        self._reject(rejected, "future_ts", f"ts {tr.ts:.3f} is more than "
                     f"{self.config.max_future_s:g} s ahead of the venue clock ({why})", tr,
                     [source] if source is not None else None, 0)

    def _bulk(self, run: Sequence[Trade], key: Key, slot: Slot, vc: VenueClock,
              groups: dict[Key, list[list[Any]]], wall_limit: float) -> float | None:
        """Accept a run of trades of one warm instrument at once, when none of them is early,
        late or a duplicate (the usual message); return their newest ts. ``None``: something
        in the run needs the one-by-one rules of :meth:`accept`, and nothing was changed.

        The same decisions as one by one: the future bound only loosens as the clocks advance,
        so passing it against the clocks before the run is enough; the lateness bound is
        checked against the instrument clock as it stands before each trade."""
        cfg = self.config
        ts: list[float] = [t.ts for t in run]  # type: ignore[misc]  # floats once decoded
        top = max(ts)
        ref = vc.clock if vc.clock > slot.clock else slot.clock
        if top > wall_limit or top > ref + cfg.max_future_s:
            return None
        lateness = cfg.allowed_lateness_s
        # none is late when even the earliest is within the lateness of the newest clock
        if not min(ts) >= (top if top > slot.clock else slot.clock) - lateness:
            floor = [own - lateness for own in accumulate(ts[:-1], max, initial=slot.clock)]
            if not all(map(ge, ts, floor)):
                return None
        ids = [t.trade_id for t in run]
        idents = [(key[0], tid) for tid in ids]
        stamps = self.seen.stamps
        if not stamps.keys().isdisjoint(idents) or len(set(ids)) < len(ids):
            return None
        stamps.update(zip(idents, ts, strict=True))
        self.seen.order.extend(idents)
        slot.n += len(ts)
        if top > slot.clock:
            slot.clock = top
        if top > vc.clock:
            vc.clock = top
        g = groups.get(key)
        if g is None:
            g = groups[key] = [[], [], [], [], [], []]
        g[0] += ts
        g[1] += ids
        g[2] += [t.price for t in run]
        g[3] += [t.qty for t in run]
        g[4] += [t.buyer for t in run]
        g[5] += [t.seller for t in run]
        return top

    def judge(self, groups: dict[Key, list[list[Any]]], emit: Emit,
              book: ConfigBook | None = None) -> int:
        """Hand each instrument's trades to its monitor and window summaries (under the
        runtime settings of ``book``, when given)."""
        n = 0
        for key, g in groups.items():
            slot = self.slots[key]
            cols = TradeColumns(key[0], key[1], *g)
            if book is not None and book.times and (
                    slot.cfg_version != book.version
                    or book.changes_in(slot.cfg_at, max(g[0]))):
                self._judge_configured(slot, cols, emit, book)
            else:
                emit(slot.monitor, slot.monitor.update(cols))
            if slot.flows is not None:
                slot.flows.update(cols)
                self.open_flows.setdefault(key[0], set()).add(key)
                vc = self.clocks[key[0]]
                end = slot.flows.next_end()
                if end is not None and end < vc.next_close:
                    vc.next_close = end
            n += len(g[0])
        self._count("processed", n)
        return n

    @staticmethod
    def _judge_configured(slot: Slot, cols: TradeColumns, emit: Emit,
                          book: ConfigBook) -> None:
        """Trade k is judged under the settings in force at the newest ts among this
        instrument's trades up to k (arrival order): a change applies from the instrument's
        first trade stamped at or after its effective time, whatever the batching."""
        venue, inst = cols.venue, cols.instrument
        top, start = slot.cfg_at, 0
        cfg = book.resolve(venue, inst, slot.asset_class, top)
        for k, t in enumerate(cols.ts):
            if t > top:
                top = t
                new = book.resolve(venue, inst, slot.asset_class, top)
                if new is not cfg:
                    if k > start:
                        slot.monitor.config = cfg
                        emit(slot.monitor, slot.monitor.update(cols.slice(start, k)))
                    cfg, start = new, k
        slot.monitor.config = cfg
        emit(slot.monitor, slot.monitor.update(cols.slice(start, len(cols))))
        slot.cfg_at, slot.cfg_version = top, book.version

    # ------------------------------------------------------------------ timers
    def fire(self, venue: str, emit: Emit, summaries: Summaries,
             watermark: float | None = None) -> None:
        """Advance ``venue``'s watermark (to ``P − out_of_order_s``, or ``watermark`` when
        given and later) and fire what is due: resumptions, then window closes."""
        vc = self.clocks.get(venue)
        if vc is None:
            return
        target = vc.clock - self.config.out_of_order_s
        if watermark is not None and watermark > target:
            target = watermark
        if target > vc.timer:
            vc.timer = target
        t = vc.timer
        for key in sorted(k for k in self.halted if k[0] == venue):
            monitor = self.slots[key].monitor
            res = monitor.advance(t)
            if res.transitions or res.findings or res.bars:
                emit(monitor, res)
        if t >= vc.next_close:
            self._close(venue, vc, t, summaries)

    def _close(self, venue: str, vc: VenueClock, t: float,
               summaries: Summaries) -> None:
        open_keys = self.open_flows.get(venue, set())
        nxt = INF
        ticks: list[list[Any]] = []
        for key in sorted(open_keys):
            flows = self.slots[key].flows
            assert flows is not None
            summaries += flows.close_until(t)
            ticks += flows.take_ticks()
            pending = flows.next_end()
            if pending is None:
                open_keys.discard(key)
            elif pending < nxt:
                nxt = pending
        vc.next_close = nxt
        self._prices(venue, ticks, summaries)

    def _prices(self, venue: str, ticks: list[list[Any]], summaries: Summaries) -> None:
        """Closed price buckets of one venue as one record (rows sorted: deterministic)."""
        if ticks:
            from detectors.flows import PriceBatch

            ticks.sort(key=lambda r: (r[1], r[0], r[2]))
            summaries.append(PriceBatch(venue=venue, partition=self.partition,
                                        tick_s=self.config.tick_s, ticks=ticks))


    # ------------------------------------------------------------------ memory
    def _admit(self, key: Key, pending: dict[Key, Any], asset_class: str | None = None,
               ts: float = -INF) -> Slot | None:
        cfg = self.config
        if len(self.slots) >= cfg.max_instruments and (self._full or
                                                       not self._make_room(pending)):
            self._full = True  # nothing more can go during this batch: refuse without a scan
            return None
        flows = None
        if cfg.summaries:
            from detectors.flows import FlowWindows

            flows = FlowWindows(key[0], key[1], window_s=cfg.window_s, partition=self.partition,
                                tick_s=cfg.tick_s)
        monitor = MarketMonitor(key[0], key[1], self.market)
        memo = self.memos.pop(key, None)
        if memo is not None:
            monitor.wake(memo, ts)
        slot = self.slots[key] = Slot(monitor, flows, asset_class)
        self.newcomers[key] = None
        return slot

    def _make_room(self, pending: dict[Key, Any]) -> bool:
        """Evict to below the cap; False when nothing may go. Instruments with trades in the
        batch being checked (``pending``) stay: their trades are on their way to be judged."""
        for n, key in enumerate(self.newcomers):
            if key not in pending:
                self._evict(key)
                return True
            if n >= 64:  # the rest arrived later still: all in this batch
                break
        idle_s = self.idle_evict_s
        clock = self.clocks_max()
        warming, idle = [], []
        for key, slot in self.slots.items():
            if key in self.halted or key in pending:
                continue
            if not getattr(slot.monitor, "ready", True):
                warming.append((slot.clock, key))
            elif clock - slot.clock >= idle_s:
                idle.append((slot.clock, key))
        victims = sorted(warming) or sorted(idle)
        if not victims:
            return False
        for _, key in victims[: max(1, len(self.slots) // 20)]:
            self._evict(key)
        return True

    @property
    def idle_evict_s(self) -> float:
        cfg = self.config
        return self.market.idle_reset_s if cfg.idle_evict_s is None else cfg.idle_evict_s

    def clocks_max(self) -> float:
        return max((vc.clock for vc in self.clocks.values()), default=-INF)

    def sweep(self, emit: Emit, summaries: Summaries) -> None:
        """Drop instruments idle for ``idle_evict_s`` (periodically, by event time)."""
        clock = self.clocks_max()
        if clock < self.next_sweep:
            return
        idle_s = self.idle_evict_s
        self.next_sweep = clock + idle_s / 10
        for key in [k for k, s in self.slots.items()
                    if k not in self.halted and self.clocks[k[0]].clock - s.clock >= idle_s]:
            self._evict(key, emit, summaries)

    def _evict(self, key: Key, emit: Emit | None = None,
               summaries: Summaries | None = None) -> None:
        slot = self.slots.pop(key)
        if slot.n >= self.config.clock_quorum and (vc := self.clocks.get(key[0])) is not None:
            vc.established -= 1
        self.newcomers.pop(key, None)
        self.halted.discard(key)
        self.open_flows.get(key[0], set()).discard(key)
        if emit is not None:
            emit(slot.monitor, slot.monitor.flush())
        memo = slot.monitor.memo()
        if memo is not None and slot.n >= self.config.clock_quorum:  # not a one-trade junk id
            self.memos[key] = memo
            while len(self.memos) > MAX_MEMOS:
                self.memos.popitem(last=False)
        if summaries is not None and slot.flows is not None:
            summaries += slot.flows.flush()
            self._prices(key[0], slot.flows.take_ticks(), summaries)
        self._count("evicted", 1)

    def flush(self, emit: Emit, summaries: Summaries,
              rejected: list[Rejected] | None = None) -> None:
        """End of input: held trades that nothing confirmed are dead letters; every open bar,
        window and price bucket is emitted."""
        for venue in sorted(self.clocks):
            vc = self.clocks[venue]
            if vc.held:
                self._refute(vc, "the input ended before other trades confirmed it",
                             rejected if rejected is not None else [])
        ticks: dict[str, list[list[Any]]] = {}
        for key in sorted(self.slots):
            slot = self.slots[key]
            emit(slot.monitor, slot.monitor.flush())
            if slot.flows is not None:
                summaries += slot.flows.flush()
                ticks.setdefault(key[0], []).extend(slot.flows.take_ticks())
        for venue in sorted(ticks):
            self._prices(venue, ticks[venue], summaries)
        for keys in self.open_flows.values():
            keys.clear()

    # ------------------------------------------------------------------ helpers
    def _count(self, name: str, n: int) -> None:
        if n:
            self.counts[name] = self.counts.get(name, 0) + n

    def _reject(self, rejected: list[Rejected], reason: str, detail: str, tr: Trade,
                sources: Sequence[dict[str, Any]] | None, i: int) -> None:
        self._count(reason, 1)
        if reason == "capacity":
            self._refused += 1
            if self._refused > DLQ_CAPACITY_PER_BATCH:
                return
        source = dict(sources[i]) if sources is not None else {"partition": self.partition}
        rejected.append(Rejected(f"{reason}: {detail}", encode(tr), None, source))
