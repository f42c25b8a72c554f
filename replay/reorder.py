"""Event-time order for tapes in bounded memory: the reorder buffer shared by backtest and replay.

Tapes may be slightly out of order. ``surveil backtest`` judges a tape, and ``surveil replay``
publishes it, in the order this module gives, so a replay through the broker and a backtest of
the same tape feed the engine the same sequence (live/backtest parity).

The rule (:class:`ReorderBuffer`), applied row by row in arrival (file) order:

1. A trade whose ``ts`` is *below* the newest ``ts`` already released is **late**: it is released
   at once, in arrival order, and counted (:attr:`ReorderBuffer.late`). A trade *equal* to it is
   not late.
2. Otherwise it enters a heap keyed by ``(ts, arrival number)``, so equal times keep file order.
3. Every buffered trade with ``ts <= max_seen - horizon_s`` is released, smallest first
   (``max_seen``: the newest ``ts`` seen so far).
4. The buffer never holds more than ``max_rows`` trades: when it is full, the smallest of the
   buffer and the newcomer is released.

At the end of the input (:meth:`ReorderBuffer.drain`) the rest is released in order. So the
output is a pure function of the input rows and ``(horizon_s, max_rows)``, whatever the chunking
of the input; every row comes out exactly once; and when no row is more than ``horizon_s``
behind the newest earlier row (and the buffer does not overflow) the output is exactly the stable
sort by ``ts`` of the input, which is what :func:`replay.backtest.event_order` gives in memory.

Defaults: ``horizon_s`` = :data:`DEFAULT_HORIZON_S` (300 s: five minutes of disorder, far more
than exchange tapes show, and beyond the engine's own ``allowed_lateness_s`` of 60 s) and
``max_rows`` = :data:`DEFAULT_MAX_ROWS` (200,000 trades; a buffered :class:`Trade` read from a
tape costs about 0.7 KB with its strings and heap entry, so a full buffer is ~140 MB). A tape
denser than ``max_rows / horizon_s`` trades per second (~670/s by default) is ordered over a
shorter window, ``max_rows`` trades deep; rows that arrive later than that count as late.

:class:`OrderedTape` reads a tape with :func:`replay.tape.iter_tape`, runs it through the buffer
and yields :class:`OrderedChunk` batches (released trades, plus the bad rows and row counts read
since the previous batch).

>>> from streams.contracts import Trade
>>> def tr(ts: float, i: str) -> Trade:
...     return Trade(ts=ts, trade_id=i, instrument="I", price=1.0, qty=1.0, buyer="a", seller="b")
>>> buf = ReorderBuffer(horizon_s=10)
>>> [t.trade_id for t in buf.push([tr(5, "a"), tr(3, "b"), tr(5, "c"), tr(20, "d")])]
['b', 'a', 'c']
>>> [t.trade_id for t in buf.push([tr(1, "late"), tr(30, "e")])]
['late', 'd']
>>> [t.trade_id for t in buf.drain()], buf.late, len(buf)
(['e'], 1, 0)
"""

from __future__ import annotations

import heapq
import math
import operator
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Final

from replay.tape import RowReject, iter_tape, tape_format
from streams.contracts import Trade

__all__ = [
    "DEFAULT_BATCH",
    "DEFAULT_HORIZON_S",
    "DEFAULT_MAX_ROWS",
    "OrderedChunk",
    "OrderedTape",
    "ReorderBuffer",
]

#: Seconds of event time a trade waits in the buffer for earlier trades arriving after it.
DEFAULT_HORIZON_S: Final = 300.0
#: Most trades the buffer holds.
DEFAULT_MAX_ROWS: Final = 200_000
#: Trades per :class:`OrderedChunk` (the backtest's engine batch).
DEFAULT_BATCH: Final = 5_000

_Item = tuple[float, int, Trade]  # (ts, arrival number, trade): arrival numbers are unique


class ReorderBuffer:
    """Puts trades in event-time order through a bounded heap (see the module docstring).

    Parameters
    ----------
    horizon_s
        A trade is held until a trade ``horizon_s`` seconds newer has arrived (or the buffer is
        full, or the input ends). ``0`` releases every trade as soon as no earlier-arriving
        trade is newer.
    max_rows
        Most trades held; ``0`` turns the buffer into a pass-through that only counts late rows.

    Examples
    --------
    >>> from streams.contracts import Trade
    >>> trades = [Trade(ts=ts, trade_id=str(i), instrument="I", price=1.0, qty=1.0, buyer="a",
    ...                 seller="b") for i, ts in enumerate([3.0, 1.0, 2.0, 2.0, 9.0])]
    >>> buf = ReorderBuffer(horizon_s=5, max_rows=3)
    >>> out = buf.push(trades) + buf.drain()
    >>> [(t.ts, t.trade_id) for t in out]
    [(1.0, '1'), (2.0, '2'), (2.0, '3'), (3.0, '0'), (9.0, '4')]
    >>> buf.late, buf.peak
    (0, 3)
    """

    __slots__ = ("_heap", "_max_seen", "_released", "_seq", "_tail", "horizon_s", "late",
                 "max_rows", "peak", "pushed")

    def __init__(self, *, horizon_s: float = DEFAULT_HORIZON_S,
                 max_rows: int = DEFAULT_MAX_ROWS) -> None:
        if not (math.isfinite(horizon_s) and horizon_s >= 0):
            raise ValueError(f"horizon_s must be a finite number >= 0, got {horizon_s}")
        if max_rows < 0:
            raise ValueError(f"max_rows must be >= 0, got {max_rows}")
        self.horizon_s = float(horizon_s)
        self.max_rows = max_rows
        # The buffer is one multiset ordered by (ts, arrival number), kept in two parts: rows
        # that arrived in order (ts >= every earlier ts: already sorted, a FIFO) and the others
        # (a heap). Releases merge the two, so in-order rows never pay for the heap.
        self._tail: deque[_Item] = deque()
        self._heap: list[_Item] = []
        self._seq = 0
        self._max_seen = -math.inf
        self._released = -math.inf  #: newest ts released in order (late rows never raise it)
        self.late = 0  #: trades released late (below a ts already released), in arrival order
        self.peak = 0  #: most trades held at once (a sorted chunk taken whole counts whole)
        self.pushed = 0  #: trades pushed

    def __len__(self) -> int:
        return len(self._heap) + len(self._tail)

    def push(self, trades: Iterable[Trade]) -> list[Trade]:
        """Take trades in arrival order; return those released by them, in release order."""
        if not isinstance(trades, list):
            trades = list(trades)
        if not self._heap and trades and len(self._tail) + len(trades) <= self.max_rows:
            times = [float(t.ts) for t in trades]
            if times[0] >= self._max_seen and all(map(operator.le, times, islice(times, 1, None))):
                return self._push_in_order(trades, times)
        heap, tail = self._heap, self._tail
        out: list[Trade] = []
        append, heappush, heappop, popleft = out.append, heapq.heappush, heapq.heappop, tail.popleft
        horizon, max_rows = self.horizon_s, self.max_rows
        seq, released, max_seen = self._seq, self._released, self._max_seen
        limit = max_seen - horizon
        late = pushed = 0
        peak = self.peak
        for t in trades:
            ts = float(t.ts)
            pushed += 1
            if ts < released:  # late: something newer went out already
                late += 1
                append(t)
                continue
            seq += 1
            item = (ts, seq, t)
            size = len(heap) + len(tail)
            if size >= max_rows:  # full: the smallest of the buffer and the newcomer goes
                if heap and (not tail or heap[0] < tail[0]):
                    if item < heap[0]:
                        released = ts
                        append(t)
                        continue
                    smallest = heappop(heap)
                elif tail and tail[0] < item:
                    smallest = popleft()
                else:
                    if ts > max_seen:
                        max_seen, limit = ts, ts - horizon
                    released = ts
                    append(t)
                    continue
                released = smallest[0]
                append(smallest[2])
            elif size >= peak:
                peak = size + 1
            if ts >= max_seen:
                tail.append(item)
                max_seen, limit = ts, ts - horizon
            else:
                heappush(heap, item)
            while True:  # release what is at least horizon_s older than the newest row
                if heap and (not tail or heap[0] < tail[0]):
                    if heap[0][0] > limit:
                        break
                    smallest = heappop(heap)
                elif tail and tail[0][0] <= limit:
                    smallest = popleft()
                else:
                    break
                released = smallest[0]
                append(smallest[2])
        self._seq, self._released, self._max_seen = seq, released, max_seen
        self.late += late
        self.pushed += pushed
        self.peak = peak
        return out

    def _push_in_order(self, trades: list[Trade], ts: list[float]) -> list[Trade]:
        """:meth:`push` for sorted trades, none older than the newest seen, that fit the buffer:
        the same result, without the row-by-row rule (nothing is late, nothing overflows, and
        what is released is what the last row's limit releases)."""
        tail, n = self._tail, len(trades)
        tail.extend(zip(ts, range(self._seq + 1, self._seq + n + 1), trades, strict=True))
        self._seq += n
        self.pushed += n
        self.peak = max(self.peak, len(tail))
        self._max_seen = ts[-1]
        limit = ts[-1] - self.horizon_s
        out: list[Trade] = []
        append, popleft = out.append, tail.popleft
        while tail and tail[0][0] <= limit:
            item = popleft()
            append(item[2])
        if out:
            self._released = max(self._released, float(out[-1].ts))
        return out

    def drain(self) -> list[Trade]:
        """End of input: release everything held, in order."""
        items = sorted([*self._heap, *self._tail])
        self._heap.clear()
        self._tail.clear()
        if items:
            self._released = max(self._released, items[-1][0])
        return [item[2] for item in items]


@dataclass(slots=True)
class OrderedChunk:
    """A batch of a tape in event-time order, and what was read since the previous batch.

    ``trades`` (at most the tape's ``batch_size``, maybe none) are released by the buffer;
    ``rejects`` (bad rows, in file order) and ``rows`` (data rows read) count the input read
    since the previous chunk, so summing over the chunks gives the whole tape's.
    """

    trades: list[Trade]
    rejects: list[RowReject] = field(default_factory=list)
    rows: int = 0


class OrderedTape:
    """A tape read in chunks of ``chunk_rows`` and yielded in event-time order, in bounded memory.

    The file is opened and checked now (raising :class:`replay.tape.TapeError`); iterate once
    to read it. Counters (:attr:`rows`, :attr:`valid`, :attr:`rejected`, :attr:`late`) grow
    as the chunks are consumed.

    Parameters
    ----------
    path
        The tape (any format :func:`replay.tape.iter_tape` reads).
    horizon_s, max_rows
        The :class:`ReorderBuffer`'s parameters.
    batch_size
        Trades per yielded chunk: every chunk but the last holds exactly ``batch_size``.
    chunk_rows
        Rows read from the file at a time.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from replay.tape import write_tape
    >>> from streams.contracts import Trade
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "t.csv"
    >>> write_tape([Trade(ts=ts, trade_id=str(i), instrument="I", price=1.0, qty=1.0,
    ...                   buyer="a", seller="b") for i, ts in enumerate([2.0, 1.0, 3.0])], path)
    >>> tape = OrderedTape(path, batch_size=2)
    >>> [[t.trade_id for t in c.trades] for c in tape]
    [['1', '0'], ['2']]
    >>> tape.rows, tape.valid, tape.rejected, tape.late, tape.total_rows
    (3, 3, 0, 0, None)
    """

    def __init__(self, path: Path | str, *, horizon_s: float = DEFAULT_HORIZON_S,
                 max_rows: int = DEFAULT_MAX_ROWS, batch_size: int = DEFAULT_BATCH,
                 chunk_rows: int = 50_000) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.path = Path(path)
        self.format = tape_format(self.path)
        self.buffer = ReorderBuffer(horizon_s=horizon_s, max_rows=max_rows)
        self.batch_size = batch_size
        self.rows = 0  #: data rows read so far
        self.valid = 0  #: valid trades read so far
        self.rejected = 0  #: bad rows read so far
        self._chunks = iter_tape(self.path, chunk_rows=chunk_rows)
        self._started = False

    @property
    def late(self) -> int:
        """Trades the buffer released late (out of event-time order), so far."""
        return self.buffer.late

    @property
    def total_rows(self) -> int | None:
        """Data rows of the whole tape when the file says so cheaply (Parquet), else None."""
        if self.format != "parquet":
            return None
        import pyarrow.parquet as pq

        try:
            return int(pq.read_metadata(self.path).num_rows)
        except (OSError, ValueError):
            return None

    def __iter__(self) -> Iterator[OrderedChunk]:
        if self._started:
            raise RuntimeError("an OrderedTape is read once; open a new one to read it again")
        self._started = True
        return self._read()

    def _read(self) -> Iterator[OrderedChunk]:
        size, buf = self.batch_size, self.buffer
        pending: list[Trade] = []
        rejects: list[RowReject] = []
        rows = 0
        for chunk in self._chunks:
            trades = chunk.trades
            self.rows += chunk.rows
            self.valid += len(trades)
            self.rejected += len(chunk.rejects)
            rows += chunk.rows
            rejects += chunk.rejects
            pending += buf.push(trades)
            del chunk, trades  # let this chunk go while the next one is read
            if len(pending) >= size:
                full = len(pending) - len(pending) % size
                for i in range(0, full, size):
                    yield OrderedChunk(pending[i:i + size], rejects, rows)
                    rejects, rows = [], 0
                pending = pending[full:]
        pending += buf.drain()
        for i in range(0, len(pending), size):
            yield OrderedChunk(pending[i:i + size], rejects, rows)
            rejects, rows = [], 0
        if rejects or rows:
            yield OrderedChunk([], rejects, rows)
