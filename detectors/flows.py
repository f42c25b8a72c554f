"""Stage 1 window summaries: who traded with whom, per instrument and event-time window.

:class:`FlowWindows` summarises one (venue, instrument)'s trades per event-time window
(``window_start = floor(ts / window_s) * window_s``) into a :class:`WindowSummary`: totals,
buyer→seller :class:`PairFlow` entries (self-trades included) and per-agent
:class:`AgentActivity`. Stage 2 (:mod:`detectors.structure`) merges the summaries of every
partition. The types are ``msgspec`` structs, so they travel as JSON.

Rules:

- **Closing.** ``close_until(watermark)`` emits (and forgets) every open window whose end is at or
  before the watermark, in window order. ``flush()`` emits everything.
- **Late trades.** A trade for a window already emitted opens an *amendment* of that window
  (``seq`` + 1) holding only the late trades. Its end is already behind the watermark, so the next
  ``close_until`` emits it. After 64 emitted windows the oldest emitted window's ``seq`` is
  forgotten. A trade for a window at or before the newest forgotten one is dropped and counted in
  ``stats["too_late"]``. A non-finite ``ts`` is counted in ``stats["bad_ts"]``.
- **Bounds.** At most ``max_open`` windows are open. Opening one more force-closes the oldest
  open window, and its summary waits in an outbox for the next ``close_until``. The cap counts
  windows rather than spanning a time range, so one forged far-future timestamp cannot
  force-close the current windows. A window tracks the first ``max_pairs`` distinct
  buyer→seller pairs and the first ``max_agents`` distinct agents in arrival order, with
  ``sample_ids`` first and last trade ids per pair. It buffers fewer than ``block`` trades
  (about 300 B each, so under 10 MB at the default). The trades of later pairs and agents still
  count in ``trades``, ``volume`` and ``notional``. ``truncated_pairs`` counts their trades and
  ``truncated_agents`` counts their trade sides.
- **Determinism.** Buffered trades are folded into the tables in blocks of ``block`` trades
  counted from the window's first trade, with a few polars ``group_by`` calls per block. Block
  boundaries depend only on that count and never on batch boundaries. Splitting the same
  trades into different ``update`` calls therefore gives identical summaries, floating-point
  sums included.

Examples
--------
>>> fw = FlowWindows("v", "GPU", window_s=60.0)
>>> fw.update(TradeColumns.from_rows("v", "GPU", [(0.5, "t1", 2.0, 3.0, "a", "b"),
...                                              (1.0, "t2", 2.2, 1.0, "b", "a"),
...                                              (61.0, "t3", 2.1, 1.0, "a", "a")]))
>>> [s] = fw.close_until(60.0)
>>> s.key, s.trades, s.volume, s.vwap
('0|v|GPU|0.0|0', 2, 4.0, 2.05)
>>> [(p.buyer, p.seller, p.qty, p.trade_ids) for p in s.pairs]
[('a', 'b', 3.0, ['t1']), ('b', 'a', 1.0, ['t2'])]
>>> [(a.agent, a.buy_qty, a.sell_qty, a.counterparties) for a in s.agents]
[('a', 3.0, 1.0, 1), ('b', 1.0, 3.0, 1)]
>>> fw.update(TradeColumns.from_rows("v", "GPU", [(2.0, "t4", 2.0, 1.0, "c", "a")]))  # late
>>> [(s.window_start, s.seq, s.trades) for s in fw.close_until(60.0)]
[(0.0, 1, 1)]
>>> [(s.window_start, s.seq, s.pairs[0].buyer) for s in fw.flush()]
[(60.0, 0, 'a')]
"""

from __future__ import annotations

import math
import operator
from typing import Any

import msgspec
import numpy as np
import polars as pl

from detectors.base import TradeColumns

__all__ = ["AgentActivity", "FlowWindows", "PairFlow", "PriceBatch", "WindowSummary"]

SCHEMA = "flows/1"
_SEQ_MEMORY = 64
_P = ["buyer", "seller"]
_COLS = ("ts", "tid", "price", "qty", "buyer", "seller")
_TYPES = {"ts": pl.Float64, "tid": pl.String, "price": pl.Float64, "qty": pl.Float64,
          "buyer": pl.String, "seller": pl.String, "idx": pl.Int64}


# gc=False: the types hold only strings, numbers and lists of them, so they cannot form cycles,
# and the garbage collector does not walk the thousands of entries a summary carries.
class PairFlow(msgspec.Struct, gc=False):
    """Trades from ``buyer`` to ``seller`` in a window. ``trade_ids`` holds the first and last
    few trade ids (all of them for a small pair)."""

    buyer: str
    seller: str
    count: int
    qty: float
    notional: float
    first_ts: float
    last_ts: float
    trade_ids: list[str]


class AgentActivity(msgspec.Struct, gc=False):
    """An agent's window. ``trades`` counts a self-trade once. ``counterparties`` counts distinct
    counterparties (itself included after a self-trade) among the tracked pairs."""

    agent: str
    buy_qty: float
    sell_qty: float
    buy_notional: float
    sell_notional: float
    trades: int
    first_ts: float
    last_ts: float
    counterparties: int


class WindowSummary(msgspec.Struct, kw_only=True, gc=False):
    """One (partition, venue, instrument, window) summary. Amendments have ``seq`` 1, 2, ..."""

    schema: str = SCHEMA
    venue: str
    instrument: str
    window_start: float
    window_end: float
    partition: int
    seq: int
    trades: int
    volume: float
    notional: float
    first_price: float
    last_price: float
    vwap: float
    pairs: list[PairFlow]
    agents: list[AgentActivity]
    truncated_pairs: int = 0
    truncated_agents: int = 0

    @property
    def key(self) -> str:
        """Identity for de-duplication: a redelivered summary has the same key."""
        return f"{self.partition}|{self.venue}|{self.instrument}|{self.window_start!r}|{self.seq}"


class PriceBatch(msgspec.Struct, kw_only=True, gc=False):
    """Closed price buckets of one (partition, venue), for the cross-market view of stage 2.

    ``ticks`` rows: ``[instrument, start, seq, first_price, last_price, high, low, volume,
    notional, trades]``; ``(partition, instrument, start, seq)`` identifies a row, so a
    redelivered batch changes nothing."""

    schema: str = "prices/1"
    venue: str
    partition: int
    tick_s: float
    ticks: list[list[Any]]


class _Tick:
    """One open price bucket: first/last by event time (ties: arrival order), high, low, sums.

    The sums are kept exact (:func:`_exact_sum`), so a bucket's volume and notional are the same
    to the last bit however its trades were split into batches."""

    __slots__ = ("first", "first_ts", "hi", "last", "last_ts", "lo", "n", "notional", "seq",
                 "volume")

    def __init__(self, seq: int) -> None:
        self.seq, self.n = seq, 0
        self.first_ts, self.last_ts = math.inf, -math.inf
        self.first = self.last = 0.0
        self.hi, self.lo = -math.inf, math.inf
        self.volume: list[float] = []
        self.notional: list[float] = []

    def add(self, ts: list[float], px: list[float], qty: list[float]) -> None:
        n = len(ts)
        if n > 16:
            a = np.asarray(ts, dtype=np.float64)
            i, j = int(np.argmin(a)), n - 1 - int(np.argmax(a[::-1]))
        else:
            i = min(range(n), key=ts.__getitem__)  # first minimum
            j = max(range(n), key=lambda k: (ts[k], k))  # last maximum
        if ts[i] < self.first_ts:
            self.first_ts, self.first = ts[i], px[i]
        if ts[j] >= self.last_ts:
            self.last_ts, self.last = ts[j], px[j]
        self.hi, self.lo = max(self.hi, max(px)), min(self.lo, min(px))
        self.volume = _exact_sum(self.volume, qty)
        self.notional = _exact_sum(self.notional, map(operator.mul, px, qty))
        self.n += len(ts)

    def row(self, instrument: str, start: float) -> list[Any]:
        return [instrument, start, self.seq, self.first, self.last, self.hi, self.lo,
                self.volume[0] if self.volume else 0.0,
                self.notional[0] if self.notional else 0.0, self.n]


class _Window:
    """One open window: buffered trades plus the tables folded so far."""

    __slots__ = ("agents", "cut_agents", "cut_pairs", "first", "folded", "last", "notional",
                 "pairs", "pending", "seq", "start", "volume")

    def __init__(self, start: float, seq: int) -> None:
        self.start, self.seq, self.folded = start, seq, 0
        self.pending: dict[str, list[Any]] = {c: [] for c in _COLS}
        self.volume = self.notional = 0.0
        self.first, self.last = (math.inf, 0.0), (-math.inf, 0.0)
        self.pairs: pl.DataFrame | None = None
        self.agents: pl.DataFrame | None = None
        self.cut_pairs = self.cut_agents = 0


class FlowWindows:
    """Per-window pair flows and agent activity of one (venue, instrument), for stage 2."""

    def __init__(self, venue: str, instrument: str, *, window_s: float = 60.0, partition: int = 0,
                 max_pairs: int = 2000, max_agents: int = 2000, sample_ids: int = 4,
                 max_open: int = 8, block: int = 32_768, tick_s: float = 5.0) -> None:
        if not (window_s > 0 and max_open >= 1 and block >= 1 and sample_ids >= 0):
            raise ValueError("need window_s > 0, max_open >= 1, block >= 1, sample_ids >= 0")
        self.venue, self.instrument = venue, instrument
        self.window_s, self.partition = window_s, partition
        self.max_pairs, self.max_agents, self.sample_ids = max_pairs, max_agents, sample_ids
        self.max_open, self.block = max_open, block
        self.watermark = -math.inf
        self.stats = {"too_late": 0, "forced": 0, "bad_ts": 0}
        self._open: dict[float, _Window] = {}
        self._seqs: dict[float, int] = {}  # next seq of recently emitted windows
        self._forgotten = -math.inf
        self._outbox: list[WindowSummary] = []
        #: price buckets of ``tick_s`` seconds (0: none), closed like windows, with amendments
        self.tick_s = tick_s
        self._ticks: dict[float, _Tick] = {}
        self._tick_seqs: dict[float, int] = {}
        self._tick_out: list[list[Any]] = []

    def update(self, cols: TradeColumns) -> None:
        """Add trades (arrival order) to their windows. Batching does not change the result."""
        n, ws, ts = len(cols), self.window_s, cols.ts
        if n == 0:
            return
        runs: list[tuple[int, int, float]]
        if math.isfinite(sum(ts)) and (w := math.floor(min(ts) / ws)) == math.floor(max(ts) / ws):
            runs = [(0, n, float(w * ws))]  # the common case: one window, no numpy needed
        else:
            starts = np.floor(np.asarray(ts, dtype=np.float64) / ws) * ws
            ok = np.isfinite(starts)
            if not ok.all():
                keep = np.flatnonzero(ok).tolist()
                self.stats["bad_ts"] += n - len(keep)
                sub = [[col[i] for i in keep] for col in _columns(cols)]
                return self.update(TradeColumns(cols.venue, cols.instrument, *sub))
            bounds = [0, *(np.flatnonzero(starts[1:] != starts[:-1]) + 1).tolist(), n]
            runs = [(i, j, float(starts[i])) for i, j in zip(bounds, bounds[1:], strict=False)]
        columns = _columns(cols)
        if self.tick_s > 0:
            self._tick_update(cols)
        for i, j, start in runs:
            win = self._open.get(start) or self._open_window(start)
            if win is None:
                self.stats["too_late"] += j - i
                continue
            for name, col in zip(_COLS, columns, strict=True):
                win.pending[name] += col if j - i == n else col[i:j]
            while len(win.pending["ts"]) >= self.block:
                self._fold(win, self.block)

    def close_until(self, watermark: float) -> list[WindowSummary]:
        """Emit every window ending at or before ``watermark``, plus force-closed ones."""
        self.watermark = max(self.watermark, watermark)
        due = sorted(s for s in self._open if s + self.window_s <= self.watermark)
        out, self._outbox = self._outbox, []
        out += [self._emit(self._open.pop(s)) for s in due]
        if self._ticks:
            for start in sorted(s for s in self._ticks if s + self.tick_s <= self.watermark):
                self._tick_close(start)
        return sorted(out, key=lambda s: (s.window_start, s.seq))

    def take_ticks(self) -> list[list[Any]]:
        """The price buckets closed so far (rows of :class:`PriceBatch`), handed over once."""
        out, self._tick_out = self._tick_out, []
        return out

    def next_end(self) -> float | None:
        """When :meth:`close_until` next has something to emit: the end of the earliest open
        window or price bucket (``-inf`` when force-closed or amended windows wait), ``None``
        when nothing."""
        if self._outbox:
            return -math.inf
        ends = [min(self._open) + self.window_s] if self._open else []
        if self._ticks:
            ends.append(min(self._ticks) + self.tick_s)
        return min(ends) if ends else None

    def flush(self) -> list[WindowSummary]:
        """End of input: emit every open window (and price bucket: :meth:`take_ticks`)."""
        return self.close_until(math.inf)

    # ------------------------------------------------------------------ internals
    def _tick_update(self, cols: TradeColumns) -> None:
        ts, px, qty, w = cols.ts, cols.price, cols.qty, self.tick_s
        lo, hi = math.floor(min(ts) / w), math.floor(max(ts) / w)
        groups: dict[float, tuple[list[float], list[float], list[float]]]
        if lo == hi:  # the common case: one bucket
            groups = {float(lo * w): (ts, px, qty)}
        elif (cut := _runs(ts, w)) is not None:  # in bucket order (the usual case)
            groups = {start: (ts[a:b], px[a:b], qty[a:b]) for a, b, start in cut}
        else:
            groups = {}
            for t, p, q in zip(ts, px, qty, strict=True):
                g = groups.setdefault(float(math.floor(t / w) * w), ([], [], []))
                g[0].append(t)
                g[1].append(p)
                g[2].append(q)
        for start, (tcol, pcol, qcol) in groups.items():
            tick = self._ticks.get(start)
            if tick is None:
                if start <= self._forgotten:
                    continue  # as late as a forgotten window: counted there
                if len(self._ticks) >= 4 * self.max_open:
                    self._tick_close(min(self._ticks))
                tick = self._ticks[start] = _Tick(self._tick_seqs.get(start, 0))
            tick.add(tcol, pcol, qcol)

    def _tick_close(self, start: float) -> None:
        tick = self._ticks.pop(start)
        self._tick_out.append(tick.row(self.instrument, start))
        self._tick_seqs[start] = tick.seq + 1
        while len(self._tick_seqs) > 4 * _SEQ_MEMORY:
            del self._tick_seqs[min(self._tick_seqs)]

    def _open_window(self, start: float) -> _Window | None:
        if start <= self._forgotten:
            return None
        if len(self._open) >= self.max_open:
            self._outbox.append(self._emit(self._open.pop(min(self._open))))
            self.stats["forced"] += 1
        win = self._open[start] = _Window(start, self._seqs.get(start, 0))
        return win

    def _fold(self, win: _Window, m: int) -> None:
        """Fold the first ``m`` buffered trades into the window's pair and agent tables."""
        k, pend = self.sample_ids, win.pending
        data: dict[str, Any] = {c: pend[c] if m == len(pend[c]) else pend[c][:m] for c in _COLS}
        for c in _COLS:
            if m == len(pend[c]):
                pend[c] = []
            else:
                del pend[c][:m]
        data["idx"] = np.arange(win.folded, win.folded + m, dtype=np.int64)
        win.folded += m
        df = pl.DataFrame(data, schema=_TYPES)
        ts, price, qty = (df[c].to_numpy() for c in ("ts", "price", "qty"))
        win.volume += float(qty.sum())
        win.notional += float((price * qty).sum())
        i, j = int(np.argmin(ts)), m - 1 - int(np.argmax(ts[::-1]))
        if ts[i] < win.first[0]:
            win.first = (float(ts[i]), float(price[i]))
        if ts[j] >= win.last[0]:
            win.last = (float(ts[j]), float(price[j]))
        q, pq, zero = pl.col("qty"), pl.col("price") * pl.col("qty"), 0.0
        g = df.group_by(_P, maintain_order=True).agg(  # in first-seen order: deterministic
            *_sample(k), count=pl.len().cast(pl.Int64), qty=q.sum(), notional=pq.sum(),
            first_ts=pl.col("ts").min(), last_ts=pl.col("ts").max(),
            first_idx=pl.col("idx").first())
        # agents from the block's pairs, one row per side; a self-trade is one trade, two sides
        n, x = pl.col("count"), pl.col("notional")
        a = pl.concat([
            g.select(agent="buyer", buy_qty=q, sell_qty=zero, buy_notional=x, sell_notional=zero,
                     sides=n, selfs=pl.when(pl.col("buyer") == pl.col("seller")).then(n)
                     .otherwise(0), first_ts="first_ts", last_ts="last_ts",
                     first_idx=pl.col("first_idx") * 2),
            g.select(agent="seller", buy_qty=zero, sell_qty=q, buy_notional=zero, sell_notional=x,
                     sides=n, selfs=0, first_ts="first_ts", last_ts="last_ts",
                     first_idx=pl.col("first_idx") * 2 + 1)],
            how="vertical_relaxed").group_by("agent").agg(
            pl.col("buy_qty", "sell_qty", "buy_notional", "sell_notional").sum(),
            trades=(pl.col("sides") - pl.col("selfs")).sum(), sides=pl.col("sides").sum(),
            first_ts=pl.col("first_ts").min(), last_ts=pl.col("last_ts").max(),
            first_idx=pl.col("first_idx").min())
        win.pairs, cut = _merge(win.pairs, g, _P, self.max_pairs, k, "count")
        win.cut_pairs += cut
        win.agents, cut = _merge(win.agents, a, ["agent"], self.max_agents, k, "sides")
        win.cut_agents += cut

    def _emit(self, win: _Window) -> WindowSummary:
        if win.pending["ts"]:
            self._fold(win, len(win.pending["ts"]))
        self._seqs[win.start] = win.seq + 1
        while len(self._seqs) > _SEQ_MEMORY:
            old = min(self._seqs)
            del self._seqs[old]
            self._forgotten = max(self._forgotten, old)
        assert win.pairs is not None
        assert win.agents is not None
        pairs = win.pairs.sort(["qty", "buyer", "seller"], descending=[True, False, False])
        buyers, sellers, n = (pairs[c].to_list() for c in ("buyer", "seller", "count"))
        k = self.sample_ids  # columns h0.. hold the first ids, t0.. the last (nulls if fewer)
        rows = zip(*(pairs[f"{c}{i}"].to_list() for c in "ht" for i in range(k)), strict=True)
        ids = [list(r[:min(c, k)] + r[2 * k - max(0, min(c, 2 * k) - k):]) for r, c in
               zip(rows, n, strict=True)] if k else [[] for _ in n]
        pf = list(map(PairFlow, buyers, sellers, n, *(
            pairs[c].to_list() for c in ("qty", "notional", "first_ts", "last_ts")), ids))
        cps: dict[str, set[str]] = {}
        for b, s in zip(buyers, sellers, strict=True):
            cps.setdefault(b, set()).add(s)
            cps.setdefault(s, set()).add(b)
        agents = win.agents.sort(pl.col("buy_qty") + pl.col("sell_qty"), "agent",
                                 descending=[True, False])
        names = agents["agent"].to_list()
        aa = list(map(AgentActivity, names, *(agents[c].to_list() for c in (
            "buy_qty", "sell_qty", "buy_notional", "sell_notional", "trades", "first_ts",
            "last_ts")), [len(cps.get(a, ())) for a in names]))
        trades = win.folded
        return WindowSummary(
            venue=self.venue, instrument=self.instrument, window_start=win.start,
            window_end=win.start + self.window_s, partition=self.partition, seq=win.seq,
            trades=trades, volume=win.volume, notional=win.notional, first_price=win.first[1],
            last_price=win.last[1],
            vwap=win.notional / win.volume if win.volume > 0 else win.last[1],
            pairs=pf, agents=aa, truncated_pairs=win.cut_pairs, truncated_agents=win.cut_agents)


def _exact_sum(parts: list[float], values: Any) -> list[float]:
    """``parts`` (a result of this function) plus ``values``, exactly: floats whose exact sum is
    the exact sum of every value added so far, the first of them that sum correctly rounded.
    Each pass takes the correctly rounded remainder (``math.fsum``) until nothing is left,
    gaining at least 53 bits a pass: a few passes for values within the contract's range.

    >>> a = _exact_sum(_exact_sum([], [0.1, 0.2]), [0.3, 1e16])
    >>> b = _exact_sum(_exact_sum([], [0.1]), [0.2, 0.3, 1e16])
    >>> a == b, a[0] == math.fsum([0.1, 0.2, 0.3, 1e16])
    (True, True)
    """
    pending = [*parts, *values]
    out: list[float] = []
    while (s := math.fsum(pending)) != 0.0 and math.isfinite(s) and len(out) < 64:
        out.append(s)
        pending.append(-s)
    return out


def _runs(ts: list[float], w: float) -> list[tuple[int, int, float]] | None:
    """``(i, j, start)`` of each run of trades in one bucket of ``w`` seconds, when the
    buckets never go back (``None`` otherwise); ``start`` as ``math.floor(t / w) * w``."""
    idx = np.floor(np.asarray(ts, dtype=np.float64) / w)
    step = idx[1:] != idx[:-1]
    if (idx[1:][step] < idx[:-1][step]).any():
        return None
    bounds = [0, *(np.flatnonzero(step) + 1).tolist(), len(ts)]
    return [(a, b, float(idx[a]) * w) for a, b in zip(bounds, bounds[1:], strict=False)]


def _columns(cols: TradeColumns) -> list[list[Any]]:
    return [cols.ts, cols.trade_id, cols.price, cols.qty, cols.buyer, cols.seller]


def _merge(old: pl.DataFrame | None, new: pl.DataFrame, on: list[str], cap: int, k: int,
           weight: str) -> tuple[pl.DataFrame, int]:
    """Merge a block's table into the window's; returns the table and the ``weight`` cut.

    Only entries first seen earliest are kept (at most ``cap``): the block's entries already in
    the table are added to theirs (sums of two numbers, so merge order cannot matter), new ones
    are admitted in first-seen order while there is room, the rest are cut. Trade-id samples
    are columns ``h0..`` (first ids) and ``t0..`` (last ids, newest last), null where absent."""
    if old is None:
        new = new.sort("first_idx")
        return new.head(cap), int(new[weight].slice(cap).sum())
    keys = old.select(on)
    seen = new.join(keys, on=on, how="semi")
    room, fresh = cap - old.height, None
    if room > 0:
        fresh = new.join(keys, on=on, how="anti").sort("first_idx")
        cut = int(fresh[weight].slice(room).sum())
        fresh = fresh.head(room)
    else:
        cut = int(new[weight].sum()) - int(seen[weight].sum())
    if seen.height:
        exprs = []
        for c in new.columns:
            a, b = pl.col(c), pl.col(f"{c}_n")
            if c in on or c[0] in "ht" and c[1:].isdigit():
                continue
            if c in ("first_ts", "first_idx"):
                e = pl.min_horizontal(a, b)
            elif c == "last_ts":
                e = pl.max_horizontal(a, b)
            else:
                e = a + b.fill_null(0)
            exprs.append(e.alias(c))
        if "count" in new.columns:
            exprs += _merge_samples(k)
        old = old.join(seen, on=on, how="left", suffix="_n", maintain_order="left").select(
            *on, *exprs).select(new.columns)
    return (old if fresh is None or not fresh.height else pl.concat([old, fresh])), cut


def _sample(k: int) -> list[pl.Expr]:
    """Aggregations: a group's first ``k`` trade ids and its last ``k`` (newest last)."""
    tid = pl.col("tid")
    return [tid.get(i, null_on_oob=True).alias(f"h{i}") for i in range(k)] + [
        tid.get(j - k, null_on_oob=True).alias(f"t{j}") for j in range(k)]


def _merge_samples(k: int) -> list[pl.Expr]:
    """First and last ids of the old trades followed by the new (``_n``) ones."""
    n_old, fresh = pl.col("count"), pl.min_horizontal(pl.col("count_n").fill_null(0), k)
    exprs = []
    for i in range(k):  # the old first ids, then as many new ones as fit
        e: Any = pl.when(n_old > i).then(pl.col(f"h{i}"))
        for j in range(i + 1):
            e = e.when(n_old == i - j).then(pl.col(f"h{j}_n"))
        exprs.append(e.otherwise(None).alias(f"h{i}"))
    for j in range(k):  # the new last ids, after the old ones shifted left to make room
        e = pl.when(pl.col(f"t{j}_n").is_not_null()).then(pl.col(f"t{j}_n"))
        for shift in range(1, k - j):
            e = e.when(fresh == shift).then(pl.col(f"t{j + shift}"))
        exprs.append(e.otherwise(pl.col(f"t{j}")).alias(f"t{j}"))
    return exprs
