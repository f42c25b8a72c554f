"""Flash-crash and spike detection for one instrument, with its circuit breaker.

Three event-time checks run on every trade once the instrument is warmed up:

- **spike** — the price is beyond ``spike`` of the reference price ⇒ ``HALTED`` (``SPIKE``);
- **velocity** — the price moved beyond ``velocity`` within ``velocity_window_s`` ⇒ ``PAUSED``
  (``VELOCITY``), as CME velocity logic;
- **band** — the price is outside the LULD-style band around the reference (the mean trade price
  of the last ``ref_window_s``); if it is still outside after the limit state (15 s) ⇒ ``PAUSED``
  (``LUDP``), as US LULD.

Thresholds adapt to each instrument's own volatility, so a noisy market is not halted for being
noisy: ``band = max(band_floor, band_k·σ·√band_scale_s)``, ``velocity = max(velocity_floor,
velocity_k·σ·√velocity_window_s)``, ``spike = max(spike_floor, spike_mult·band)``, where σ is an
event-time EWMA of one-second log returns (per √second). The baseline is protected: a return larger
than ``vol_clip_k``·σ is clipped before it is learnt, so a crash does not widen its own bands.

Robustness: checks use the median of the last three trade prices, so one stray print (a fat
finger, an odd lot at a silly price) never trips anything; two in a row do. After a pause the
reference restarts from the reopening trades (LULD). A reference window with no trades (a thin
market waking up after a gap) skips band checks instead of judging against a stale price.

State is bounded and compact (the engine keeps thousands of monitors and checkpoints them): per
closed second of the reference window only what the checks read again (second, sum and count of
filtered prints; filtered extremes while in the velocity window), and of the last
``recent_trades`` trades only those an alert could still cite (those of its window: the velocity
window, the limit state, the last ``5 · evidence_trades`` trades), as flat columns and, every
``_BLOCK`` trades, one zlib-compressed block. Both are allocated with the first bar or batch.

>>> m = MarketMonitor("v", "GPU", MarketConfig(warmup_s=10, warmup_returns=5))
>>> calm = TradeColumns.from_rows("v", "GPU", [(float(t), f"t{t}", 2.0 + 0.001 * (t % 3), 1.0,
...                                             "b", "s") for t in range(60)])
>>> out = m.update(calm)
>>> out.transitions, out.findings
([], [])
>>> crash = TradeColumns.from_rows("v", "GPU", [(60.0 + i, f"c{i}", 2.0 * (1 - 0.03 * i), 1.0,
...                                              "b", "dumper") for i in range(1, 8)])
>>> out = m.update(crash)
>>> [(t.state, t.reason) for t in out.transitions], out.findings[0].kind
([('PAUSED', 'VELOCITY')], 'flash_crash')
"""

from __future__ import annotations

import math
import re
import struct
import sys
import zlib
from array import array
from bisect import bisect_left
from collections import defaultdict
from collections.abc import MutableSequence
from dataclasses import dataclass, field
from itertools import accumulate, chain
from typing import Any

from detectors.base import Finding, TradeColumns, score_ratio, stable_id
from detectors.breaker import PAUSED, TRADING, BreakerConfig, CircuitBreaker, Transition

__all__ = ["MarketConfig", "MarketMonitor", "MonitorOutput"]

DETECTOR = "market/1"
BarTuple = tuple[int, float, float, float, float, float, float, int]
#: A remembered trade: ``(clock, trade_id, price, qty, buyer, seller)``.
Row = tuple[float, str, float, float, str, str]
#: The open bar: second, open, high, low, close, filtered high, low and close, sum and count of
#: filtered prints, volume, notional.
OpenBar = tuple[int, float, float, float, float, float, float, float, float, int, float, float]

#: Trades per compressed block of remembered trades (fewer stay as flat columns).
_BLOCK = 48
#: Stands for a trade the full ``recent_trades`` window would still hold but no alert can cite.
_GONE: Row = (-math.inf, "", math.nan, math.nan, "", "")
_INF = math.inf


@dataclass(frozen=True, kw_only=True)
class MarketConfig:
    """Hyperparameters (event-time seconds, fractions of price)."""

    ref_window_s: int = 300
    band_floor: float = 0.05
    band_k: float = 6.0
    band_scale_s: float = 100.0
    velocity_window_s: int = 30
    velocity_floor: float = 0.10
    velocity_k: float = 8.0
    spike_floor: float = 0.25
    spike_mult: float = 3.0
    vol_tau_s: float = 900.0
    vol_clip_k: float = 4.0
    max_gap_s: float = 300.0
    warmup_returns: int = 20
    warmup_s: float = 60.0
    #: Upper bounds of the adaptive thresholds: however volatile an instrument has become (or
    #: has been made to look), a move this large always trips.
    band_cap: float = 0.30
    velocity_cap: float = 0.40
    spike_cap: float = 1.00
    #: An instrument silent this long (event time) starts afresh, as a new instrument would.
    idle_reset_s: float = 3600.0
    recent_trades: int = 512
    evidence_trades: int = 20
    breaker: BreakerConfig = field(default_factory=BreakerConfig)


@dataclass(slots=True)
class MonitorOutput:
    findings: list[Finding] = field(default_factory=list)
    transitions: list[Transition] = field(default_factory=list)
    bars: list[BarTuple] = field(default_factory=list)

    def extend(self, other: MonitorOutput) -> None:
        self.findings += other.findings
        self.transitions += other.transitions
        self.bars += other.bars


_WIDER = {"B": "H", "H": "I", "I": "q"}


def _push(a: MutableSequence[int], v: int) -> MutableSequence[int]:
    """Append ``v`` to a compact int array, widened (then made a list) if it does not fit."""
    try:
        a.append(v)
    except OverflowError:
        wider = _WIDER.get(a.typecode) if isinstance(a, array) else None
        return _push(array(wider, a) if wider else list(a), v)
    return a


class _Bars:
    """Closed bars of the reference window, a deque of at most ``maxlen`` bars (the caller says
    how many with each bar): their second (from ``base``), sum and count of filtered prints and,
    for the newest (those still in the velocity window), their filtered high and low."""

    __slots__ = ("base", "hilo", "n", "psum", "sec")

    def __init__(self) -> None:
        self.base = 0
        self.sec: MutableSequence[int] = array("H")
        self.n: MutableSequence[int] = array("B")
        self.psum = array("d")
        self.hilo = array("d")  # high, low of the newest len(hilo) // 2 bars

    def __len__(self) -> int:
        return len(self.psum)

    def __getstate__(self) -> tuple[Any, ...]:
        return self.base, self.sec, self.n, self.psum, self.hilo

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        self.base, self.sec, self.n, self.psum, self.hilo = state

    def append(self, sec: int, psum: float, n: int, hi: float, lo: float, maxlen: int) -> None:
        """Append a bar; the oldest goes if the deque is full (as ``deque.append``)."""
        if len(self.psum) == maxlen:
            self.popleft()
        if not self.psum:
            self.base = sec
        off = sec - self.base
        if off > 0xFFFF and self.sec[0]:  # count from the oldest second again
            shift = self.sec[0]
            shifted = [x - shift for x in self.sec]
            self.sec = array(self.sec.typecode, shifted) if isinstance(self.sec, array) \
                else shifted
            self.base += shift
            off -= shift
        secs, counts = self.sec, self.n
        if (len(self.psum) < 8 and isinstance(secs, array) and isinstance(counts, array)
                and off <= 0xFFFF and n <= 0xFF):  # a young ring: no spare room
            self.sec = secs + array(secs.typecode, (off,))
            self.n = counts + array(counts.typecode, (n,))
            self.psum = self.psum + array("d", (psum,))
            self.hilo = self.hilo + array("d", (hi, lo))
            return
        self.sec = _push(self.sec, off)
        self.n = _push(self.n, n)
        self.psum.append(psum)
        self.hilo.append(hi)
        self.hilo.append(lo)

    def first(self) -> int:
        return self.sec[0] + self.base

    def popleft(self) -> tuple[float, int]:
        if len(self.hilo) == 2 * len(self.psum):
            del self.hilo[:2]
        psum, n = self.psum[0], self.n[0]
        del self.sec[0], self.n[0], self.psum[0]
        return psum, n

    def clear(self) -> None:
        del self.sec[:], self.n[:], self.psum[:], self.hilo[:]

    def window(self, start: int) -> tuple[float, float]:
        """Filtered high and low of the bars from second ``start`` on (newest first, as the
        checks always did); older extremes are dropped, ``start`` never goes back."""
        hilo = self.hilo
        keep = 2 * (len(self.sec) - bisect_left(self.sec, start - self.base))
        if len(hilo) > keep:
            del hilo[:len(hilo) - keep]
        return (max(chain((-_INF,), reversed(hilo[0::2]))),
                min(chain((_INF,), reversed(hilo[1::2]))))


_ZERO = array("d", (0.0,))
_LITTLE = sys.byteorder == "little"
_FIRST = struct.Struct("<d")
_ESCAPE = re.compile("\x01(.)", re.DOTALL)


def _le(a: array[Any]) -> bytes:
    if _LITTLE:
        return a.tobytes()
    b = array(a.typecode, a)
    b.byteswap()
    return b.tobytes()


def _from(typecode: str, data: bytes) -> array[Any]:
    a = array(typecode)
    a.frombytes(data)
    if not _LITTLE:
        a.byteswap()
    return a


def _deflate(data: bytes) -> bytes:
    """Raw deflate, level 1, with a small state (4 KB window: about a block's size)."""
    z = zlib.compressobj(1, zlib.DEFLATED, -12, 5)
    return z.compress(data) + z.flush()


def _escape(s: str) -> str:
    return s.replace("\x01", "\x01\x01").replace("\x00", "\x01\x02")


def _unescape(s: str) -> str:
    return _ESCAPE.sub(lambda m: "\x00" if m[1] == "\x02" else m[1], s)


class _Trades:
    """The trades an alert could still cite, oldest first.

    The newest (fewer than ``block``) are flat: ``floats`` holds clock, price and quantity of
    each, ``text`` its trade id, buyer and seller, NUL-separated (escaped with ``\x01`` where they
    contain one). Every ``block`` trades become one block of ``blob``: the clock of its first
    trade, then the raw-deflated columns (clocks byte-shuffled, prices, quantities, ids, buyers,
    sellers); ``ends`` holds where each block ends.

    ``size`` is how many trades the plain ``deque(maxlen=recent_trades)`` would hold: the trades
    kept are the newest of those (the others can be in no alert's window)."""

    __slots__ = ("blob", "block", "ends", "floats", "held", "size", "text")

    def __init__(self, size: int = 0) -> None:
        self.size, self.block = size, _BLOCK
        self.blob = b""
        self.ends: array[int] | None = None  # allocated with the first block
        self.held = 0  # flat trades
        self.floats = array("d")
        self.text = ""

    def __getstate__(self) -> tuple[Any, ...]:
        return self.size, self.block, self.blob, self.ends, self.held, self.floats, self.text

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        self.size, self.block, self.blob, self.ends, self.held, self.floats, self.text = state

    def __len__(self) -> int:
        return len(self.ends or ()) * self.block + self.held

    def add(self, clocks: list[float], at: int, cols: TradeColumns, lo: int, hi: int) -> bool:
        """Append trades ``lo:hi`` of ``cols`` (their clocks: ``clocks[at:]``); True if that
        filled a block."""
        held, sealed, block = self.held, False, self.block
        if hi - lo == 1 and held < block - 1:  # one trade (a small live batch): the short way
            self.floats += array("d", (clocks[at], cols.price[lo], cols.qty[lo]))
            text = f"{cols.trade_id[lo]}\x00{cols.buyer[lo]}\x00{cols.seller[lo]}"
            if text.count("\x00") != 2 or "\x01" in text:
                text = "\x00".join(map(_escape, (cols.trade_id[lo], cols.buyer[lo],
                                                 cols.seller[lo])))
            self.text = f"{self.text}\x00{text}" if held else text
            self.held = held + 1
            return False
        while lo < hi:
            k = min(hi - lo, block - held)
            end = lo + k
            floats = _ZERO * (3 * k)  # interleaved: clock, price, quantity, ...
            floats[0::3] = array("d", clocks[at:at + k])
            floats[1::3] = array("d", cols.price[lo:end])
            floats[2::3] = array("d", cols.qty[lo:end])
            self.floats = self.floats + floats if held else floats  # (no spare capacity)
            strings: list[str] = [""] * (3 * k)
            strings[0::3] = cols.trade_id[lo:end]
            strings[1::3] = cols.buyer[lo:end]
            strings[2::3] = cols.seller[lo:end]
            text = "\x00".join(strings)
            if text.count("\x00") != 3 * k - 1 or "\x01" in text:
                text = "\x00".join(map(_escape, strings))
            self.text = f"{self.text}\x00{text}" if held else text
            held += k
            lo, at = end, at + k
            if held == block:
                self._seal()
                held, sealed = 0, True
        self.held = held
        return sealed

    def _seal(self) -> None:
        """The flat trades (``block`` of them) become one compressed block."""
        floats, fields = self.floats, self.text.split("\x00")
        raw = _le(floats[0::3])
        data = (b"".join([raw[i::8] for i in range(8)]) + _le(floats[1::3]) + _le(floats[2::3])
                + "\x00".join(fields[0::3] + fields[1::3] + fields[2::3]).encode(
                    "utf-8", "surrogatepass"))
        self.blob += _FIRST.pack(floats[0]) + _deflate(data)
        if self.ends is None:
            self.ends = array("I")
        self.ends.append(len(self.blob))
        self.held, self.floats, self.text = 0, array("d"), ""

    def first(self, i: int) -> float:
        """Clock of the first trade of block ``i``."""
        ends = self.ends
        first: float = _FIRST.unpack_from(self.blob, ends[i - 1] if i and ends else 0)[0]
        return first

    def prune(self, need: float, keep: int) -> None:
        """Forget the oldest trades no alert can cite any more: those beyond the newest ``size``,
        and those followed by a trade before ``need`` (the earliest window start still possible)
        and by at least ``keep`` trades (the spike window). Blocks go whole."""
        ends, block, size = self.ends, self.block, self.size
        after = len(self)
        if ends:
            nb, gone = len(ends), 0
            while gone < nb:
                after -= block
                nxt = (self.first(gone + 1) if gone + 1 < nb
                       else self.floats[0] if self.held else _INF)
                if not (after >= size or (after >= keep and nxt < need)):
                    break
                gone += 1
            if gone:
                cut = ends[gone - 1]
                self.blob = self.blob[cut:]
                self.ends = array("I", [e - cut for e in ends[gone:]]) if gone < nb else None
            if gone < nb:
                return
        held = self.held
        drop = max(min(bisect_left(self.floats[0::3], need) - 1, held - keep), held - size, 0)
        if drop:
            del self.floats[:3 * drop]
            self.text = self.text.split("\x00", 3 * drop)[3 * drop]
            self.held = held - drop

    def rows(self) -> list[Row]:
        """Every trade kept, oldest first."""
        rows: list[Row] = []
        blob, start, n = self.blob, 0, self.block
        for end in self.ends or ():
            raw = zlib.decompress(blob[start + _FIRST.size:end], -15)
            start = end
            clocks = bytearray(8 * n)
            for i in range(8):
                clocks[i::8] = raw[i * n:(i + 1) * n]
            strings = _strings(raw[24 * n:].decode("utf-8", "surrogatepass"))
            rows += zip(_from("d", bytes(clocks)), strings[:n], _from("d", raw[8 * n:16 * n]),
                        _from("d", raw[16 * n:24 * n]), strings[n:2 * n], strings[2 * n:],
                        strict=True)
        if self.held:
            floats, strings = self.floats, _strings(self.text)
            rows += zip(floats[0::3], strings[0::3], floats[1::3], floats[2::3], strings[1::3],
                        strings[2::3], strict=True)
        return rows


def _strings(text: str) -> list[str]:
    strings = text.split("\x00")
    return [_unescape(s) for s in strings] if "\x01" in text else strings


def _clocks(cols: TradeColumns, lo: int, hi: int, clock: float, ordered: bool) -> list[float]:
    """The monitor's clock at trades ``lo:hi`` (the newest ``ts`` so far), ``clock`` before."""
    if ordered:
        return cols.ts[lo:hi]
    return list(accumulate(cols.ts[lo:hi], max, initial=clock))[1:]


_STATE = ("venue", "instrument", "config", "breaker", "clock", "first_sec", "bar", "_bars",
          "ref_sum", "ref_n", "_rolls", "var", "nret", "prev_sec", "prev_mclose", "p1", "p2",
          "_trades", "ref", "sigma", "band", "velocity", "spike", "win_hi", "win_lo", "ready",
          "_reopen_pending")


class MarketMonitor:
    """Velocity, band and spike checks plus the circuit breaker of one (venue, instrument)."""

    __slots__ = _STATE
    name = "market"
    version = "1"

    def __init__(self, venue: str, instrument: str, config: MarketConfig | None = None) -> None:
        self.venue, self.instrument = venue, instrument
        self.config = cfg = config or MarketConfig()
        self.breaker = CircuitBreaker(instrument, cfg.breaker)
        self.clock = -math.inf
        self.first_sec: int | None = None
        self.bar: OpenBar | None = None
        self._bars: _Bars | None = None  # allocated with the first closed bar
        self.ref_sum, self.ref_n, self._rolls = 0.0, 0, 0
        self.var, self.nret = 0.0, 0
        self.prev_sec: int | None = None  # second and filtered close of the last closed bar
        self.prev_mclose = 0.0
        self.p1: float | None = None
        self.p2: float | None = None
        self._trades: _Trades | None = None  # allocated with the first batch
        # per-second thresholds, set by _roll
        self.ref: float | None = None
        self.sigma = 0.0
        self.band = self.velocity = self.spike = math.inf
        self.win_hi, self.win_lo = -math.inf, math.inf
        self.ready = False
        self._reopen_pending = False

    def __getstate__(self) -> tuple[Any, ...]:
        return tuple(getattr(self, k) for k in _STATE)

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        for k, v in zip(_STATE, state, strict=True):
            setattr(self, k, v)

    @property
    def bars(self) -> _Bars | tuple[()]:
        """Closed bars of the reference window (their count: ``len``)."""
        return self._bars if self._bars is not None else ()

    @property
    def recent(self) -> list[Row]:
        """The last trades (at most ``recent_trades``) that an alert could still cite."""
        tr = self._trades
        if tr is None:
            return []
        rows = tr.rows()
        return rows[max(0, len(rows) - tr.size):]

    # ------------------------------------------------------------------ batch entry point
    def update(self, cols: TradeColumns) -> MonitorOutput:
        """Consume trades in arrival order; batching does not change the result."""
        out = MonitorOutput()
        ts, prices, qtys = cols.ts, cols.price, cols.qty
        n = len(ts)
        if not (n == len(prices) == len(qtys) == len(cols.trade_id) == len(cols.buyer)
                == len(cols.seller)):
            raise ValueError("TradeColumns columns differ in length")
        if not n:
            return out
        br = self.breaker
        idle_reset = self.config.idle_reset_s
        clock = self.clock
        # trades start: of this batch, remembered at the end (a restart forgets the earlier)
        start, start_clock, ordered = 0, clock, True
        trading = br.state == TRADING
        reopen = self._reopen_pending
        p1, p2 = self.p1, self.p2
        ready, ref, band, velocity, spike = self.ready, self.ref, self.band, self.velocity, \
            self.spike
        win_hi, win_lo = self.win_hi, self.win_lo
        bar = self.bar
        if bar is None:
            bsec: int | None = None
            bo = bh = bl = bc = bmh = bml = bmc = bps = bv = bnot = 0.0
            bn = 0
        else:
            bsec, bo, bh, bl, bc, bmh, bml, bmc, bps, bn, bv, bnot = bar
        i = -1
        for t, p, q in zip(ts, prices, qtys, strict=True):
            i += 1
            if t > clock:
                if t - clock >= idle_reset and trading and bsec is not None:
                    self.bar = (bsec, bo, bh, bl, bc, bmh, bml, bmc, bps, bn, bv, bnot)
                    self.clock = clock
                    out.extend(self._restart())
                    br, trading, reopen, bsec = self.breaker, True, False, None
                    p1 = p2 = ref = None
                    ready, band, velocity, spike = False, self.band, self.velocity, self.spike
                    win_hi, win_lo = self.win_hi, self.win_lo
                    start, start_clock, ordered = i, clock, True
                clock = t
            elif t != clock or not t:  # clock stays (late trade), or ±0 could differ
                ordered = False
            sec = int(clock)
            # resume first, as the global clock would have: the same order either way
            if not trading and clock >= br.resume_at:  # type: ignore[operator]
                self._resume(clock, out)
                trading, reopen = br.state == TRADING, self._reopen_pending
            if sec != bsec:
                self.p1, self.p2 = p1, p2
                self._roll(sec, out, None if bsec is None else
                           (bsec, bo, bh, bl, bc, bmh, bml, bmc, bps, bn, bv, bnot))
                bsec = None
                p1, p2, ready, ref = self.p1, self.p2, self.ready, self.ref
                band, velocity, spike = self.band, self.velocity, self.spike
                win_hi, win_lo = self.win_hi, self.win_lo
            if reopen:
                self._reopen()
                reopen = False
                p1 = p2 = ref = None
                win_hi, win_lo = -_INF, _INF
            if p1 is None or p2 is None:
                m = p
                p2 = p
            else:  # median of the last three prints: max(min(p1, p2), min(max(p1, p2), p))
                lo12, hi12 = (p2 if p2 < p1 else p1), (p2 if p2 > p1 else p1)
                x = p if p < hi12 else hi12
                m = x if x > lo12 else lo12
                p2 = p1
            p1 = p
            if bsec is None:  # a new bar (its sums start at 0.0: 0.0 + x is x but for -0.0)
                bsec, bo, bh, bl, bc, bmh, bml, bmc = sec, p, p, p, p, m, m, m
                bn, bnot = 1, p * q
                bps = m if m else 0.0 + m
                bv = q if q else 0.0 + q
                if not bnot:
                    bnot += 0.0
            else:
                if p > bh:
                    bh = p
                if p < bl:
                    bl = p
                bc = p
                if m > bmh:
                    bmh = m
                if m < bml:
                    bml = m
                bmc = m
                bps += m  # a mean of filtered prints: one stray print cannot move it
                bn += 1
                bv += q
                bnot += p * q
            if not ready:
                continue
            if trading:
                hi = bmh if bmh > win_hi else win_hi
                lo = bml if bml < win_lo else win_lo
                down, up = 1.0 - m / hi, m / lo - 1.0
                dev = m / ref - 1.0 if ref else 0.0
                adev = abs(dev)
                if not (band and velocity):  # degenerate thresholds: the severity below
                    ratio = max(adev / band, max(down, up) / velocity)  # raises, as always
                if adev >= spike or down >= velocity or up >= velocity or (
                        adev > band and self._limit(clock, dev)):
                    # one severity for every trigger, so a bigger move never scores lower
                    ratio = max(adev / band, max(down, up) / velocity)
                    pend = (cols, start, i + 1, start_clock, ordered)
                    if adev >= spike:
                        self._trip("SPIKE", clock, cols.trade_id[i], adev, spike, dev, out,
                                   pend, ref=ref, ratio=ratio)
                    elif down >= velocity or up >= velocity:
                        move = -down if down >= up else up
                        self._trip("VELOCITY", clock, cols.trade_id[i], abs(move), velocity,
                                   move, out, pend, ref=ref, ratio=ratio,
                                   extra={"window_high": hi, "window_low": lo})
                    else:
                        self._trip("LUDP", clock, cols.trade_id[i], adev, band, dev, out, pend,
                                   ref=ref, ratio=ratio,
                                   extra={"limit_state_since": br.limit_since})
                    trading = False
                elif br.limit_since is not None and not adev > band:
                    br.exit_limit()
            elif br.state == PAUSED and br.reference_price:
                dev = m / br.reference_price - 1.0
                if abs(dev) >= spike:
                    self._trip("SPIKE", clock, cols.trade_id[i], abs(dev), spike, dev, out,
                               (cols, start, i + 1, start_clock, ordered),
                               ref=br.reference_price, ratio=abs(dev) / band)
        self.clock = clock
        self.bar = None if bsec is None else (bsec, bo, bh, bl, bc, bmh, bml, bmc, bps, bn, bv,
                                              bnot)
        self.p1, self.p2 = p1, p2
        self._reopen_pending = reopen
        self._remember(cols, start, start_clock, ordered)
        return out

    def advance(self, clock: float) -> MonitorOutput:
        """Event time moved on elsewhere (other instruments): fire a due resumption."""
        out = MonitorOutput()
        br = self.breaker
        if br.state != TRADING and br.resume_at is not None and clock >= br.resume_at:
            self._resume(clock, out)
        return out

    def flush(self) -> MonitorOutput:
        """End of input: emit the open bar (it will not be emitted again)."""
        out = MonitorOutput()
        b = self.bar
        if b is not None:
            sec, o, h, lo, c, mhi, mlo, _, psum, n, volume, notional = b
            out.bars.append((sec, o, h, lo, c, volume, notional, n))
            self._bar_ring().append(sec, psum, n, mhi, mlo, self.config.ref_window_s + 1)
            self.bar = None
        return out

    @property
    def idle_since(self) -> float:
        return self.clock

    def _restart(self) -> MonitorOutput:
        """Silent for ``idle_reset_s``: close the open bar and start afresh (as eviction would)."""
        out = self.flush()
        clock = self.clock
        self.__init__(self.venue, self.instrument, self.config)  # type: ignore[misc]
        self.clock = clock
        return out

    # ------------------------------------------------------------------ internals
    def _limit(self, clock: float, dev: float) -> bool:
        """Outside the band: open (or keep) the limit state; True once it has lasted."""
        br = self.breaker
        br.enter_limit(clock, 1 if dev > 0 else -1)
        return br.limit_expired(clock)

    def _bar_ring(self) -> _Bars:
        bars = self._bars
        if bars is None:
            bars = self._bars = _Bars()
        return bars

    def _roll(self, sec: int, out: MonitorOutput, b: OpenBar | None) -> None:
        """A new second starts: close the previous bar, learn from it, set this second's limits."""
        cfg = self.config
        if self.first_sec is None:
            self.first_sec = sec
        bars = self._bars
        if b is not None:
            bsec, o, h, lo, c, mhi, mlo, mclose, psum, n, volume, notional = b
            out.bars.append((bsec, o, h, lo, c, volume, notional, n))
            bars = self._bar_ring()
            if len(bars) == cfg.ref_window_s + 1:
                self.ref_sum -= bars.psum[0]
                self.ref_n -= bars.n[0]
            bars.append(bsec, psum, n, mhi, mlo, cfg.ref_window_s + 1)
            self.ref_sum += psum
            self.ref_n += n
            self._learn(bsec, mclose,
                        learn=self.breaker.trading and self.breaker.limit_since is None)
        horizon = sec - cfg.ref_window_s
        while bars and bars.first() < horizon:
            old_psum, old_n = bars.popleft()
            self.ref_sum -= old_psum
            self.ref_n -= old_n
        self._rolls += 1
        if self._rolls % 1024 == 0:  # wash out floating-point drift of the running sums
            self.ref_sum = math.fsum(bars.psum if bars else ())
            self.ref_n = sum(bars.n if bars else ())
        if self.ref_n > 0:
            self.ref = self.ref_sum / self.ref_n
        else:  # nothing traded in the reference window: the market is waking up, judge afresh
            self.ref = None
            self.p1 = self.p2 = None
        sigma = self.sigma = math.sqrt(self.var)
        self.band = min(cfg.band_cap, max(cfg.band_floor,
                                          cfg.band_k * sigma * math.sqrt(cfg.band_scale_s)))
        self.velocity = min(cfg.velocity_cap, max(
            cfg.velocity_floor, cfg.velocity_k * sigma * math.sqrt(cfg.velocity_window_s)))
        self.spike = min(cfg.spike_cap, max(cfg.spike_floor, cfg.spike_mult * self.band))
        self.win_hi, self.win_lo = (bars.window(sec - cfg.velocity_window_s) if bars
                                    else (-_INF, _INF))
        self.ready = (self.nret >= cfg.warmup_returns and sec - self.first_sec >= cfg.warmup_s)

    def _learn(self, sec: int, mclose: float, *, learn: bool) -> None:
        """EWMA of squared one-second log returns of the filtered close, clipped once warm.

        Nothing is learnt while the instrument is in a limit state, paused or halted: the
        baseline must not absorb the very moves it flags.
        """
        cfg, prev_sec, prev_mclose = self.config, self.prev_sec, self.prev_mclose
        self.prev_sec, self.prev_mclose = sec, mclose
        if prev_sec is None or not learn:
            return
        gap = min(float(sec - prev_sec), cfg.max_gap_s)
        r = math.log(mclose / prev_mclose)
        sample = r * r / gap
        if self.nret < cfg.warmup_returns:
            self.var += (sample - self.var) / (self.nret + 1)
        else:
            sample = min(sample, cfg.vol_clip_k**2 * self.var)
            self.var += (1.0 - math.exp(-gap / cfg.vol_tau_s)) * (sample - self.var)
        self.nret += 1

    def _resume(self, clock: float, out: MonitorOutput) -> None:
        t = self.breaker.tick(clock)
        if t is None:
            return
        out.transitions.append(t)
        # Applied before this instrument's next trade is judged (after that trade's second has
        # rolled), whether the resumption was noticed by its own trade or by the global clock.
        self._reopen_pending = True

    def _reopen(self) -> None:
        """LULD: the reopening trades become the new reference; the velocity window restarts."""
        self._reopen_pending = False
        if self._bars is not None:
            self._bars.clear()
        self.ref_sum, self.ref_n, self.ref = 0.0, 0, None
        self.win_hi, self.win_lo = -math.inf, math.inf
        self.p1 = self.p2 = None

    def _need(self) -> float:
        """The earliest start an alert's window can still have: the velocity window or the
        limit state (both only move on)."""
        need = self.clock - self.config.velocity_window_s
        since = self.breaker.limit_since
        return since if since is not None and since < need else need

    def _remember(self, cols: TradeColumns, start: int, clock: float, ordered: bool) -> None:
        """End of a batch: keep its trades from ``start`` on that an alert could still cite."""
        hi = len(cols.ts)
        n = hi - start
        if n <= 0:
            return
        cfg = self.config
        cap, keep = cfg.recent_trades, cfg.evidence_trades * 5 + 1  # keep: the spike window
        tr = self._trades
        if tr is None:
            tr = self._trades = _Trades()
        size = tr.size + n
        tr.size = size = size if size < cap else cap
        clocks = cols.ts[start:] if ordered else _clocks(cols, start, hi, clock, ordered)
        skip = 0
        if n > keep or n > cap:  # trades before `skip` (and earlier ones) are in no window
            skip = max(min(bisect_left(clocks, self._need()) - 1, n - keep), n - cap, 0)
            if skip:
                tr = self._trades = _Trades(size)
        sealed = tr.add(clocks, skip, cols, start + skip, hi)
        ends, held = tr.ends, tr.held
        if sealed or (len(ends) * tr.block + held - tr.block >= size if ends else
                      held and (held > size or tr.floats[0] < self._need())):
            tr.prune(self._need(), keep)  # (blocks go by the clock when the next one is sealed)

    def _recent(self, pend: tuple[TradeColumns, int, int, float, bool]) -> list[Row]:
        """The trades the plain ``deque(maxlen=recent_trades)`` would hold now (while batch
        trades ``start:stop`` of ``cols`` are judged); ``_GONE`` for those no alert can cite."""
        cols, start, stop, clock, ordered = pend
        tr = self._trades
        rows = tr.rows() if tr is not None else []
        size = min((tr.size if tr is not None else 0) + stop - start, self.config.recent_trades)
        rows += zip(_clocks(cols, start, stop, clock, ordered), cols.trade_id[start:stop],
                    cols.price[start:stop], cols.qty[start:stop], cols.buyer[start:stop],
                    cols.seller[start:stop], strict=True)
        if len(rows) >= size:
            return rows[len(rows) - size:]
        return [_GONE] * (size - len(rows)) + rows

    def _trip(self, reason: str, clock: float, tid: str, measure: float, threshold: float,
              move: float, out: MonitorOutput, pend: tuple[TradeColumns, int, int, float, bool],
              *, ref: float | None, ratio: float, extra: dict[str, Any] | None = None) -> None:
        cfg = self.config
        kind = "flash_crash" if move < 0 else "price_spike"
        since = {"VELOCITY": clock - cfg.velocity_window_s}.get(reason)
        if reason == "LUDP" and extra:
            since = extra["limit_state_since"]
        recent = self._recent(pend)
        first = next((i for i, r in enumerate(recent) if since is None or r[0] >= since),
                     len(recent) - 1)
        if reason == "SPIKE" and since is None:
            first = max(0, len(recent) - cfg.evidence_trades * 5)
        window = recent[first:]
        agents, volume, impact = _attribute(recent, first, move)
        band_low = ref * (1 - self.band) if ref else None
        band_high = ref * (1 + self.band) if ref else None
        key = (reason, self.venue, self.instrument, round(clock * 1e6), tid)
        alert_id = stable_id(kind.replace("_", "-"), DETECTOR, *key)
        verb = "fell" if move < 0 else "rose"
        what = {"VELOCITY": f"within {cfg.velocity_window_s} s",
                "LUDP": f"from its reference for {cfg.breaker.limit_state_s:g} s (LULD band)",
                "SPIKE": "from its reference"}[reason]
        action = "halted" if reason == "SPIKE" else "paused"
        summary = (f"{self.instrument} {verb} {abs(move):.1%} {what}, limit {threshold:.1%} "
                   f"({measure / threshold:.1f}x): {action}, reason {reason}")
        n = cfg.evidence_trades
        evidence: dict[str, Any] = {
            "trigger": reason,
            "move_pct": round(move * 100, 3),
            "threshold_pct": round(threshold * 100, 3),
            "reference_price": ref,
            "band_pct": round(self.band * 100, 3),
            "band_low": band_low,
            "band_high": band_high,
            "velocity_pct": round(self.velocity * 100, 3),
            "spike_pct": round(self.spike * 100, 3),
            "sigma_1s_pct": round(self.sigma * 100, 5),
            "window_start": window[0][0] if window else clock,
            "window_end": clock,
            "price_first": window[0][2] if window else None,
            "price_last": window[-1][2] if window else None,
            "trades_in_window": len(window),
            "trade_ids": [r[1] for r in (window if len(window) <= n else
                                         window[: n // 2] + window[-n // 2:])],
            "trigger_trade_id": tid,
            "aggressive_volume": {a: volume[a] for a in agents},
            "price_impact_pct": {a: round(impact.get(a, 0.0) * 100, 3) for a in agents},
            **(extra or {}),
        }
        out.findings.append(Finding(kind=kind, ts=clock, score=score_ratio(ratio),
                                    venue=self.venue, instrument=self.instrument, agents=agents,
                                    summary=summary, evidence=evidence, key=alert_id))
        # with no LULD reference yet (just reopened), escalation is judged from the pre-move price
        halt_ref = ref if ref else (window[0][2] if window else None)
        out.transitions.append(self.breaker.trip(clock, reason, reference_price=halt_ref,
                                                 band_low=band_low, band_high=band_high,
                                                 alert_ids=[alert_id]))


def _attribute(recent: list[tuple[float, str, float, float, str, str]], first: int,
               move: float) -> tuple[list[str], dict[str, float], dict[str, float]]:
    """Who drove the move: the sellers of a crash (buyers of a spike), ranked by the price impact
    of their prints (each print's return in the move's direction, when positive), then volume."""
    crash = move < 0
    sign = -1.0 if crash else 1.0
    volume: dict[str, float] = defaultdict(float)
    impact: dict[str, float] = defaultdict(float)
    for i in range(first, len(recent)):
        _, _, price, qty, buyer, seller = recent[i]
        agent = seller if crash else buyer
        volume[agent] += qty
        if i > 0:
            ret = sign * (price / recent[i - 1][2] - 1.0)
            if ret > 0:
                impact[agent] += ret
    ranked = sorted(volume, key=lambda a: (-impact[a], -volume[a], a))
    return ranked[:5], volume, impact
