"""Compact state of a :class:`~detectors.market.MarketMonitor`: its rings and trade store.

- :class:`Bars` — closed one-second bars of the reference window (a deque in flat arrays);
- :class:`Trades` — the trades an alert could still cite, flat then in zlib-compressed blocks;
- :class:`Range` — the filtered high and low of each minute of the last hour (dynamic breaker
  and long-horizon anchor), in a ring of 60 slots.

Everything pickles as flat arrays and tuples: the engine checkpoints thousands of monitors.
"""

from __future__ import annotations

import math
import re
import struct
import sys
import zlib
from array import array
from bisect import bisect_left
from collections.abc import MutableSequence
from itertools import accumulate, chain
from typing import Any

from detectors.base import TradeColumns

__all__ = ["Bars", "Range", "Row", "Trades", "clocks"]

#: A remembered trade: ``(clock, trade_id, price, qty, buyer, seller)``.
Row = tuple[float, str, float, float, str, str]
#: Trades per compressed block of remembered trades (fewer stay as flat columns).
_BLOCK = 48
_INF = math.inf

_WIDER = {"B": "H", "H": "I", "I": "q"}


def _push(a: MutableSequence[int], v: int) -> MutableSequence[int]:
    """Append ``v`` to a compact int array, widened (then made a list) if it does not fit."""
    try:
        a.append(v)
    except OverflowError:
        wider = _WIDER.get(a.typecode) if isinstance(a, array) else None
        return _push(array(wider, a) if wider else list(a), v)
    return a


class Bars:
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


class Trades:
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


def clocks(cols: TradeColumns, lo: int, hi: int, clock: float, ordered: bool) -> list[float]:
    """The monitor's clock at trades ``lo:hi`` (the newest ``ts`` so far), ``clock`` before."""
    if ordered:
        return cols.ts[lo:hi]
    return list(accumulate(cols.ts[lo:hi], max, initial=clock))[1:]



class Range:
    """Filtered high and low of each minute of the last ``slots`` minutes, in a ring.

    ``add`` folds a closed one-second bar into its minute; ``extremes(since)`` is the high and low
    of the minutes from ``since`` (a minute number) to the newest. Slots of minutes older than the
    ring are skipped, so a gap needs no clean-up. Float32 is ample for thresholds of percents.

    >>> r = Range()
    >>> r.add(60, 2.0, 1.5); r.add(61, 2.5, 1.9); r.add(200, 1.0, 0.9)
    >>> r.extremes(1), r.extremes(3)
    ((2.5, 0.8999999761581421), (1.0, 0.8999999761581421))
    """

    __slots__ = ("hi", "lo", "minute", "newest")

    def __init__(self, slots: int = 60) -> None:
        self.minute = array("i", (-(2**31),) * slots)
        self.hi = array("f", (0.0,) * slots)
        self.lo = array("f", (0.0,) * slots)
        self.newest = -(2**31)

    def __getstate__(self) -> tuple[Any, ...]:
        return self.minute, self.hi, self.lo, self.newest

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        self.minute, self.hi, self.lo, self.newest = state

    def add(self, sec: int, hi: float, lo: float) -> None:
        minute = sec // 60
        k = minute % len(self.minute)
        if self.minute[k] != minute:
            self.minute[k], self.hi[k], self.lo[k] = minute, hi, lo
        else:
            if hi > self.hi[k]:
                self.hi[k] = hi
            if lo < self.lo[k]:
                self.lo[k] = lo
        if minute > self.newest:
            self.newest = minute

    def forget(self, minute: int) -> None:
        """Forget what minute ``minute`` held so far (a reopening: the range restarts)."""
        k = minute % len(self.minute)
        if self.minute[k] == minute:
            self.minute[k] = -(2**31)

    def extremes(self, since: int) -> tuple[float, float]:
        """High and low of the minutes ``since`` .. newest (``(-inf, inf)`` if none)."""
        first = max(since, self.newest - len(self.minute) + 1)
        hi, lo = -_INF, _INF
        for k, m in enumerate(self.minute):
            if m >= first:
                if self.hi[k] > hi:
                    hi = self.hi[k]
                if self.lo[k] < lo:
                    lo = self.lo[k]
        return hi, lo
