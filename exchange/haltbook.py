"""Pure rules for obeying the ``halts`` topic (DESIGN §3.6): :class:`HaltBook`, no Kafka.

- State is kept per ``(venue, instrument)`` key from the latest applied message. A message whose
  ``seq`` is not greater than the last applied ``seq`` of its key is ignored and counted
  (``stale``): duplicates and re-deliveries change nothing.
- ``instrument == "*"`` is a market-wide layer of the venue. The state of an instrument is the
  most restrictive of its own layer, the venue's ``"*"`` layer and the feed's fail-safe layer,
  ordered ``TRADING < QUOTE_ONLY < PAUSED < HALTED``. So a ``"*"`` halt overrides every
  instrument (also ones never named) and a ``"*"`` ``TRADING`` clears the market-wide halt only:
  an instrument's own pause stays until its own resumption (a market-wide resume must not cut
  short a LULD pause still in force).
- Invalid messages (bad JSON, a field missing or of the wrong type, unknown ``state`` or
  ``reason``, unparseable times, wrong ``schema``) are logged and counted, never raised.

Fail-safe: with ``silence_s`` set, the book is *silent* until :meth:`HaltBook.mark_alive` is
called and again whenever more than ``silence_s`` seconds of wall clock pass without it; while
silent every instrument is at least ``fail_safe`` (``QUOTE_ONLY``). The policy and its reasons
are in :mod:`exchange.halts`.

>>> book = HaltBook()
>>> t = "2024-01-01T00:00:00Z"
>>> halt = dict(schema="halt/1", seq=5, ts=t, emitted_at=t, venue="v1", instrument="*",
...             state="HALTED", reason="MWC1", resume_at=None, reference_price=None,
...             band_low=None, band_high=None, alert_ids=[])
>>> book.apply(halt).state, book.state("v1", "GPU-H100-1H"), book.apply(halt)
('HALTED', 'HALTED', None)
>>> book.counters.stale
1
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Protocol

import msgspec

from streams.contracts import HALT_REASONS, HALT_STATES, Halt, parse_ts

__all__ = [
    "MARKET_WIDE",
    "HaltBook",
    "HaltCounters",
    "HaltSource",
    "StateChange",
    "validate_halt",
]

log = logging.getLogger(__name__)

TRADING: Final = "TRADING"
MARKET_WIDE: Final = "*"
#: Most restrictive wins.
SEVERITY: Final = {"TRADING": 0, "QUOTE_ONLY": 1, "PAUSED": 2, "HALTED": 3}
_BY_SEVERITY: Final = {v: k for k, v in SEVERITY.items()}
_decoder = msgspec.json.Decoder(Halt)


class HaltSource(Protocol):
    """What an exchange needs to obey halts (:class:`HaltBook`, :class:`HaltSubscriber`)."""

    def state(self, venue: str, instrument: str) -> str: ...

    def reference_price(self, venue: str, instrument: str) -> float | None: ...


@dataclass(frozen=True, slots=True)
class StateChange:
    """A change of one layer, passed to ``on_change``.

    ``instrument == "*"`` is the venue's market-wide layer; ``venue == instrument == "*"`` is the
    feed's fail-safe layer (``reason`` ``FEED_SILENT`` or ``FEED_LIVE``): re-read ``state()``
    for every instrument you care about.
    """

    venue: str
    instrument: str
    old: str
    new: str
    reason: str
    seq: int | None = None
    halt: Halt | None = None


@dataclass
class HaltCounters:
    """Messages seen and what became of them; feed health."""

    received: int = 0
    applied: int = 0
    stale: int = 0
    invalid: int = 0
    silences: int = 0
    recoveries: int = 0
    probes: int = 0
    probe_failures: int = 0
    connect_failures: int = 0
    resets: int = 0
    errors: int = 0


def validate_halt(halt: Halt) -> str | None:
    """Why ``halt`` breaks the contract beyond its types (``None`` = valid)."""
    if halt.schema != "halt/1":
        return f"unknown schema {halt.schema!r}"
    if halt.seq < 0:
        return f"negative seq {halt.seq}"
    if not halt.venue or not halt.instrument:
        return "empty venue or instrument"
    if halt.state not in HALT_STATES:
        return f"unknown state {halt.state!r}"
    if halt.reason not in HALT_REASONS:
        return f"unknown reason {halt.reason!r}"
    try:
        for value in (halt.ts, halt.emitted_at, halt.resume_at):
            if value is not None:
                parse_ts(value)
    except ValueError as exc:
        return str(exc)
    for name in ("reference_price", "band_low", "band_high"):
        number = getattr(halt, name)
        if number is not None and not (math.isfinite(number) and number >= 0):
            return f"{name} must be finite and >= 0"
    return None


def _decode(message: bytes | str | Halt | Mapping[str, Any]) -> Halt:
    """A :class:`Halt` from raw JSON, a mapping or a Halt; raises ``ValueError``."""
    try:
        if isinstance(message, Halt):
            halt = message
        elif isinstance(message, bytes | bytearray | memoryview | str):
            halt = _decoder.decode(message)
        else:
            halt = msgspec.convert(message, Halt)
    except (msgspec.DecodeError, msgspec.ValidationError, TypeError) as exc:
        raise ValueError(str(exc)) from None
    reason = validate_halt(halt)
    if reason is not None:
        raise ValueError(reason)
    return halt


class HaltBook:
    """Halt state per (venue, instrument): pure rules, thread-safe, Kafka-free.

    Parameters
    ----------
    silence_s
        Fail-safe threshold in wall-clock seconds (``None``: no fail-safe, the feed is trusted,
        e.g. an in-process simulator applying signals directly). With a threshold, the book is
        silent until :meth:`mark_alive` is first called.
    fail_safe
        State imposed on every instrument while the feed is silent.
    clock
        Wall clock in seconds (monotonic); injectable for tests.
    on_change
        Called with a :class:`StateChange` after a layer changed state; exceptions are logged.
    """

    def __init__(
        self,
        *,
        silence_s: float | None = None,
        fail_safe: str = "QUOTE_ONLY",
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[StateChange], None] | None = None,
    ) -> None:
        if fail_safe not in SEVERITY or fail_safe == TRADING:
            raise ValueError(f"fail_safe must be QUOTE_ONLY, PAUSED or HALTED, got {fail_safe!r}")
        if silence_s is not None and not silence_s > 0:
            raise ValueError(f"silence_s must be > 0 or None, got {silence_s!r}")
        self.silence_s, self.fail_safe, self.clock, self.on_change = (
            silence_s, fail_safe, clock, on_change)
        self.counters = HaltCounters()
        self._layers: dict[tuple[str, str], Halt] = {}
        self._lock = threading.Lock()
        self._last_alive: float | None = None
        self._reported_silent = silence_s is not None

    # ------------------------------------------------------------------ input
    def apply(self, message: bytes | str | Halt | Mapping[str, Any]) -> Halt | None:
        """Apply one message; returns the applied :class:`Halt`, or ``None`` (stale/invalid)."""
        self.counters.received += 1
        try:
            halt = _decode(message)
        except ValueError as exc:
            self.counters.invalid += 1
            log.warning("invalid halt message ignored (%s): %.200r", exc, message)
            return None
        key = (halt.venue, halt.instrument)
        with self._lock:
            last = self._layers.get(key)
            if last is not None and halt.seq <= last.seq:
                self.counters.stale += 1
                log.info("stale halt ignored for %s: seq %d <= %d", key, halt.seq, last.seq)
                return None
            self._layers[key] = halt
            self.counters.applied += 1
        old = last.state if last is not None else TRADING
        if old != halt.state:
            log.info("halt state %s/%s: %s -> %s (%s, seq %d)", halt.venue, halt.instrument, old,
                     halt.state, halt.reason, halt.seq)
            self._notify(StateChange(halt.venue, halt.instrument, old, halt.state, halt.reason,
                                     halt.seq, halt))
        return halt

    def mark_alive(self) -> None:
        """Record a successful contact with the feed (a message, fetch or metadata answer)."""
        self._last_alive = self.clock()
        self.check()

    def check(self) -> StateChange | None:
        """Notice a silence or recovery of the feed now; notify and return the change."""
        silent = self.silent
        if silent == self._reported_silent:
            return None
        self._reported_silent = silent
        if silent:
            self.counters.silences += 1
            log.warning("halt feed silent for > %s s: every instrument is %s", self.silence_s,
                        self.fail_safe)
            change = StateChange("*", "*", TRADING, self.fail_safe, "FEED_SILENT")
        else:
            if self.counters.silences:
                self.counters.recoveries += 1
            log.info("halt feed live")
            change = StateChange("*", "*", self.fail_safe, TRADING, "FEED_LIVE")
        self._notify(change)
        return change

    def _notify(self, change: StateChange) -> None:
        if self.on_change is None:
            return
        try:
            self.on_change(change)
        except Exception:
            log.exception("on_change callback failed for %s", change)

    # ------------------------------------------------------------------ queries
    @property
    def silent(self) -> bool:
        """Whether the fail-safe is in force (never, when ``silence_s`` is ``None``)."""
        if self.silence_s is None:
            return False
        last = self._last_alive
        return last is None or self.clock() - last > self.silence_s

    def state(self, venue: str, instrument: str) -> str:
        """Effective state: ``"TRADING"``, ``"QUOTE_ONLY"``, ``"PAUSED"`` or ``"HALTED"``."""
        level = SEVERITY[self.fail_safe] if self.silent else 0
        with self._lock:
            for key in ((venue, instrument), (venue, MARKET_WIDE)):
                halt = self._layers.get(key)
                if halt is not None:
                    level = max(level, SEVERITY[halt.state])
        return _BY_SEVERITY[level]

    def is_open(self, venue: str, instrument: str) -> bool:
        """Whether continuous matching is allowed."""
        return self.state(venue, instrument) == TRADING

    def last(self, venue: str, instrument: str) -> Halt | None:
        """The latest applied message of exactly this key (``"*"`` for market-wide)."""
        with self._lock:
            return self._layers.get((venue, instrument))

    def reference_price(self, venue: str, instrument: str) -> float | None:
        """``reference_price`` of the instrument's latest signal (for the reopening auction)."""
        halt = self.last(venue, instrument)
        return halt.reference_price if halt is not None else None

    def snapshot(self) -> dict[tuple[str, str], str]:
        """Layer state per key, as last signalled (without the fail-safe layer)."""
        with self._lock:
            return {key: halt.state for key, halt in self._layers.items()}

