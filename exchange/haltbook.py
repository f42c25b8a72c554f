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
- Manual actions (reason ``MANUAL``, a regulator's ``surveil halt``/``surveil resume``) form a
  layer of their own per key: a detector's resumption does not lift a regulator's halt, and a
  manual resumption (``TRADING``/``MANUAL``) lifts the manual, the detector and the cross-market
  layer of its key. The cross-market stage (contagion pauses of one instrument, reason
  ``CONTAGION``, also on its resumption) has a layer of its own too, with its own ``seq``: the
  instrument's own breaker and the venue-wide view decide independently, and neither lifts the
  other's pause. The
  key. Manual halts never expire.
- Expiry: a detector halt whose ``resume_at`` is behind the venue's event clock by
  ``expiry_grace_s`` is lifted even if its ``RESUME`` was lost (``MWC3`` excepted: it lasts the
  day). The event clock of a venue is the newest of the heartbeat watermarks and of the
  ``ts`` of applied messages (or :meth:`HaltBook.advance`).

Trust (DESIGN §3.6 ``kid``/``sig``; :mod:`streams.signing`). With a :class:`KeyRing`, every
message is verified before anything else; signatures are *required* by default when keys are
given. A message is rejected — counted in ``counters.rejected[reason]``, logged, never applied —
for these reasons:

``invalid``        breaks the contract (also ``counters.invalid``)
``unsigned``       no ``kid``/``sig`` while signatures are required
``unknown_key``    ``kid`` not in the key ring
``expired_key``    a rotated-out key past its grace period
``bad_signature``  the signature does not verify (a forged or altered message)
``wrong_role``     a detector key on a ``MANUAL`` message, or a regulator key on anything else
``replayed``       ``seq`` not greater than the key's last (also ``counters.stale``); re-reading
                   the topic from the beginning counts every old message here, harmlessly
``seq_ahead``      ``seq`` more than ``max_seq_lead_s`` ahead of its own ``ts`` (``seq`` is the
                   event time in µs)
``future_ts``      ``ts`` more than ``max_future_s`` ahead of the wall clock

The last two keep even an unsigned feed from being locked by one message with a huge ``seq``.

Heartbeats (``heartbeat/1``, :mod:`streams.heartbeat`) pass the same signature checks (detector
keys only); a heartbeat whose ``seq`` does not increase for its worker is ``replayed``, one
whose ``emitted_at`` is more than ``heartbeat_skew_s`` from the wall clock is ``stale_heartbeat``
(old ones are expected when re-reading the topic) or ``future_heartbeat``. With
``heartbeat_timeout_s`` set, the book is silent (fail-safe) until a fresh heartbeat arrives
and again after ``heartbeat_timeout_s`` without one: a dead worker behind a live broker.

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
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

import msgspec

from streams.contracts import HALT_REASONS, HALT_STATES, Halt, iso, parse_ts
from streams.signing import KeyRing

__all__ = [
    "MARKET_WIDE",
    "HaltBook",
    "HaltCounters",
    "HaltSource",
    "KeyRing",
    "StateChange",
    "validate_halt",
]

log = logging.getLogger(__name__)

TRADING: Final = "TRADING"
MARKET_WIDE: Final = "*"
#: Most restrictive wins.
SEVERITY: Final = {"TRADING": 0, "QUOTE_ONLY": 1, "PAUSED": 2, "HALTED": 3}
_BY_SEVERITY: Final = {v: k for k, v in SEVERITY.items()}
HEARTBEAT: Final = "heartbeat/1"
MANUAL: Final = "MANUAL"
#: Reasons of the cross-market stage's own layer (its resumptions carry the same reason).
CROSS_REASONS: Final = frozenset({"CONTAGION"})
LAYERS: Final = ("auto", "cross", "manual")


def _layer(halt: Halt) -> str:
    if halt.reason == MANUAL:
        return "manual"
    return "cross" if halt.reason in CROSS_REASONS else "auto"
#: Halts that do not expire at ``resume_at`` (a level-3 market-wide halt lasts the day).
NO_EXPIRY: Final = frozenset({"MWC3", MANUAL})
#: Workers whose last heartbeat ``seq`` is remembered (bounded).
MAX_WORKERS: Final = 1024


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
    heartbeats: int = 0
    expired: int = 0
    #: Rejected messages per reason (see the module notes); ``invalid`` and ``replayed`` are
    #: also counted in ``invalid`` and ``stale``.
    rejected: dict[str, int] = field(default_factory=dict)


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


def _as_object(message: bytes | str | Halt | Mapping[str, Any]) -> dict[str, Any]:
    """The message as a JSON object (what a signature covers); raises ``ValueError``."""
    if isinstance(message, Halt):
        return msgspec.to_builtins(message)  # type: ignore[no-any-return]
    try:
        if isinstance(message, bytes | bytearray | memoryview | str):
            obj = msgspec.json.decode(message)
        else:
            obj = dict(message)
    except (msgspec.DecodeError, TypeError, ValueError) as exc:
        raise ValueError(str(exc)) from None
    if not isinstance(obj, dict):
        raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
    return obj


def _to_halt(obj: Mapping[str, Any]) -> Halt:
    """A valid :class:`Halt` from a decoded object; raises ``ValueError``."""
    try:
        halt = msgspec.convert(obj, Halt)
    except (msgspec.ValidationError, TypeError) as exc:
        raise ValueError(str(exc)) from None
    reason = validate_halt(halt)
    if reason is not None:
        raise ValueError(reason)
    return halt


class _Rejected(Exception):
    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(reason)
        self.reason, self.detail = reason, detail


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
    on_applied
        Called with every applied :class:`Halt` (changed state or not; never a rejected or
        stale one) and the state now in force for its key; exceptions are logged. The
        reference exchange acknowledges halts from here (:mod:`exchange.acks`).
    keys
        Public keys to verify ``kid``/``sig`` against (``None``: signatures are not checked).
    require_signatures
        Reject unsigned messages; default: whenever ``keys`` holds a key.
    heartbeat_timeout_s
        Silent (fail-safe) without a fresh heartbeat for this long (``None``: heartbeats only
        move the event clock).
    heartbeat_skew_s
        Largest difference between a heartbeat's ``emitted_at`` and ``wall_clock`` for it to
        count as fresh.
    max_seq_lead_s, max_future_s
        Plausibility of ``seq`` against ``ts`` and of ``ts`` against the wall clock (``None``:
        not checked).
    expiry_grace_s
        Event-time seconds past ``resume_at`` before a halt whose resumption never came expires.
    wall_clock
        Epoch seconds (key validity, heartbeat freshness, ``future_ts``); injectable.
    """

    def __init__(
        self,
        *,
        silence_s: float | None = None,
        fail_safe: str = "QUOTE_ONLY",
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[StateChange], None] | None = None,
        on_applied: Callable[[Halt, str], None] | None = None,
        keys: KeyRing | None = None,
        require_signatures: bool | None = None,
        heartbeat_timeout_s: float | None = None,
        heartbeat_skew_s: float = 10.0,
        max_seq_lead_s: float | None = 1.0,
        max_future_s: float | None = 300.0,
        expiry_grace_s: float = 2.0,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if fail_safe not in SEVERITY or fail_safe == TRADING:
            raise ValueError(f"fail_safe must be QUOTE_ONLY, PAUSED or HALTED, got {fail_safe!r}")
        if silence_s is not None and not silence_s > 0:
            raise ValueError(f"silence_s must be > 0 or None, got {silence_s!r}")
        if heartbeat_timeout_s is not None and not heartbeat_timeout_s > 0:
            raise ValueError(f"heartbeat_timeout_s must be > 0 or None, got "
                             f"{heartbeat_timeout_s!r}")
        self.silence_s, self.fail_safe, self.clock, self.on_change = (
            silence_s, fail_safe, clock, on_change)
        self.on_applied = on_applied
        self.keys = keys
        self.require_signatures = (bool(keys) if require_signatures is None
                                   else require_signatures)
        if self.require_signatures and not keys:
            raise ValueError("require_signatures needs public keys")
        self.heartbeat_timeout_s, self.heartbeat_skew_s = heartbeat_timeout_s, heartbeat_skew_s
        self.max_seq_lead_us = None if max_seq_lead_s is None else round(max_seq_lead_s * 1e6)
        self.max_future_s, self.expiry_grace_s = max_future_s, expiry_grace_s
        self.wall_clock = wall_clock
        self.counters = HaltCounters()
        #: Latest message per (venue, instrument, layer); layer ``auto`` (detectors) or
        #: ``manual`` (reason MANUAL).
        self._layers: dict[tuple[str, str, str], Halt] = {}
        self._lock = threading.Lock()
        self._last_alive: float | None = None
        self._last_beat: float | None = None
        self._beats: dict[str, int] = {}
        #: Event clock per venue (epoch seconds).
        self._event: dict[str, float] = {}
        self._reported_silent = self.silent

    # ------------------------------------------------------------------ input
    def apply(self, message: bytes | str | Halt | Mapping[str, Any]) -> Halt | None:
        """Apply one message; returns the applied :class:`Halt`, or ``None`` (a heartbeat, or
        a rejected message: see the module notes)."""
        self.counters.received += 1
        try:
            obj = _as_object(message)
            if obj.get("schema") == HEARTBEAT:
                self._heartbeat(obj)
                return None
            role = self._verify(obj)
            try:
                halt = _to_halt(obj)
            except ValueError as exc:
                raise _Rejected("invalid", str(exc)) from None
            self._plausible(halt, role)
            changes = self._store(halt)
        except ValueError as exc:
            self._reject("invalid", str(exc), message)
            return None
        except _Rejected as exc:
            self._reject(exc.reason, exc.detail, message)
            return None
        self._advance(halt.venue, parse_ts(halt.ts))
        for change in changes:
            self._notify(change)
        if self.on_applied is not None:
            try:
                self.on_applied(halt, self.state(halt.venue, halt.instrument))
            except Exception:
                log.exception("on_applied callback failed for %s", halt)
        return halt

    def _reject(self, reason: str, detail: str, message: Any) -> None:
        c = self.counters
        c.rejected[reason] = c.rejected.get(reason, 0) + 1
        if reason == "invalid":
            c.invalid += 1
            log.warning("invalid halt message ignored (%s): %.200r", detail, message)
        elif reason == "replayed":
            c.stale += 1
            log.info("stale halt ignored: %s", detail)
        elif reason == "stale_heartbeat":
            log.debug("old heartbeat ignored: %s", detail)
        else:
            log.warning("halt message rejected (%s%s): %.200r", reason,
                        f": {detail}" if detail else "", message)

    def _verify(self, obj: Mapping[str, Any]) -> str | None:
        """The signer's role (``None``: not checked or unsigned but allowed)."""
        if self.keys is None:
            return None
        verdict = self.keys.verify(obj, now=self.wall_clock())
        if verdict == "unsigned" and not self.require_signatures:
            return None
        if verdict not in ("detector", "regulator"):
            raise _Rejected(verdict, f"kid {obj.get('kid')!r}")
        return verdict

    def _plausible(self, halt: Halt, role: str | None) -> None:
        manual = halt.reason == MANUAL
        if role is not None and (role == "regulator") != manual:
            raise _Rejected("wrong_role", f"{role} key on reason {halt.reason}")
        ts = parse_ts(halt.ts)
        if self.max_seq_lead_us is not None and halt.seq > round(ts * 1e6) + self.max_seq_lead_us:
            raise _Rejected("seq_ahead", f"seq {halt.seq} is ahead of ts {halt.ts}")
        if self.max_future_s is not None and ts > self.wall_clock() + self.max_future_s:
            raise _Rejected("future_ts", f"ts {halt.ts} is in the future")

    def _store(self, halt: Halt) -> list[StateChange]:
        """Apply ``halt`` to its layer under the lock; the changes to report."""
        manual = halt.reason == MANUAL
        key = (halt.venue, halt.instrument, _layer(halt))
        with self._lock:
            before = self._effective_unlocked(halt.venue, halt.instrument)
            last = self._layers.get(key)
            if last is not None and halt.seq <= last.seq:
                raise _Rejected("replayed", f"{key}: seq {halt.seq} <= {last.seq}")
            self._layers[key] = halt
            if manual and halt.state == TRADING:  # the regulator's word lifts the detectors' too
                for layer in ("auto", "cross"):
                    auto = self._layers.get((halt.venue, halt.instrument, layer))
                    if auto is not None and auto.state != TRADING:
                        self._layers[(halt.venue, halt.instrument, layer)] = \
                            msgspec.structs.replace(auto, state=TRADING, reason=MANUAL,
                                                    resume_at=None)
            self.counters.applied += 1
            after = self._effective_unlocked(halt.venue, halt.instrument)
        if before == after:
            return []
        log.info("halt state %s/%s: %s -> %s (%s, seq %d)", halt.venue, halt.instrument, before,
                 after, halt.reason, halt.seq)
        return [StateChange(halt.venue, halt.instrument, before, after, halt.reason, halt.seq,
                            halt)]

    def _heartbeat(self, obj: Mapping[str, Any]) -> None:
        role = self._verify(obj)
        if role not in (None, "detector"):
            raise _Rejected("wrong_role", f"{role} key on a heartbeat")
        worker, seq = obj.get("worker"), obj.get("seq")
        if not isinstance(worker, str) or not isinstance(seq, int) or isinstance(seq, bool):
            raise ValueError("heartbeat without worker or seq")
        emitted = parse_ts(obj.get("emitted_at"))
        marks = obj.get("watermarks") or {}
        if not isinstance(marks, dict):
            raise ValueError("heartbeat watermarks must be an object")
        watermarks = {str(v): parse_ts(t) for v, t in marks.items()}
        now = self.wall_clock()
        with self._lock:
            last = self._beats.get(worker)
            if last is not None and seq <= last:
                raise _Rejected("replayed", f"heartbeat of {worker}: seq {seq} <= {last}")
            if emitted > now + self.heartbeat_skew_s:
                raise _Rejected("future_heartbeat", f"emitted_at {obj.get('emitted_at')}")
            if len(self._beats) >= MAX_WORKERS and worker not in self._beats:
                self._beats.pop(next(iter(self._beats)))
            self._beats[worker] = seq
        if emitted < now - self.heartbeat_skew_s:
            raise _Rejected("stale_heartbeat", f"{worker} at {obj.get('emitted_at')}")
        self.counters.heartbeats += 1
        self._last_beat = self.clock()
        for venue, t in watermarks.items():
            self._advance(venue, t)
        self.check()

    # ------------------------------------------------------------------ event time
    def advance(self, venue: str, event_ts: float) -> None:
        """Move ``venue``'s event clock to ``event_ts`` (never back); expire halts behind it."""
        self._advance(venue, event_ts)

    def _advance(self, venue: str, t: float) -> None:
        changes: list[StateChange] = []
        with self._lock:
            if t <= self._event.get(venue, -math.inf):
                return
            self._event[venue] = t
            for key, halt in list(self._layers.items()):
                if (key[0] != venue or halt.state == TRADING or halt.resume_at is None
                        or halt.reason in NO_EXPIRY
                        or parse_ts(halt.resume_at) + self.expiry_grace_s > t):
                    continue
                before = self._effective_unlocked(key[0], key[1])
                self._layers[key] = msgspec.structs.replace(halt, state=TRADING, reason="RESUME",
                                                            resume_at=None)
                self.counters.expired += 1
                after = self._effective_unlocked(key[0], key[1])
                log.warning("halt %s/%s (%s, seq %d) expired at resume_at %s without a "
                            "resumption (event clock %s)", key[0], key[1], halt.reason, halt.seq,
                            halt.resume_at, iso(t))
                if before != after:
                    changes.append(StateChange(key[0], key[1], before, after, "EXPIRED",
                                               halt.seq, halt))
        for change in changes:
            self._notify(change)

    def event_clock(self, venue: str) -> float | None:
        """The venue's event clock (epoch seconds), ``None`` before any event time is known."""
        return self._event.get(venue)

    # ------------------------------------------------------------------ liveness
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
            why = "FEED_SILENT" if self._feed_silent() else "HEARTBEAT_LOST"
            log.warning("halt feed silent (%s): every instrument is %s", why, self.fail_safe)
            change = StateChange("*", "*", TRADING, self.fail_safe, why)
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

    def _feed_silent(self) -> bool:
        if self.silence_s is None:
            return False
        last = self._last_alive
        return last is None or self.clock() - last > self.silence_s

    def _heartbeat_silent(self) -> bool:
        if self.heartbeat_timeout_s is None:
            return False
        last = self._last_beat
        return last is None or self.clock() - last > self.heartbeat_timeout_s

    # ------------------------------------------------------------------ queries
    @property
    def silent(self) -> bool:
        """Whether the fail-safe is in force: the feed is silent (``silence_s``) or the
        detectors' heartbeats stopped (``heartbeat_timeout_s``)."""
        return self._feed_silent() or self._heartbeat_silent()

    def _effective_unlocked(self, venue: str, instrument: str) -> str:
        level = 0
        for inst in {instrument, MARKET_WIDE}:
            for layer in LAYERS:
                halt = self._layers.get((venue, inst, layer))
                if halt is not None:
                    level = max(level, SEVERITY[halt.state])
        return _BY_SEVERITY[level]

    def state(self, venue: str, instrument: str) -> str:
        """Effective state: ``"TRADING"``, ``"QUOTE_ONLY"``, ``"PAUSED"`` or ``"HALTED"``."""
        level = SEVERITY[self.fail_safe] if self.silent else 0
        with self._lock:
            level = max(level, SEVERITY[self._effective_unlocked(venue, instrument)])
        return _BY_SEVERITY[level]

    def is_open(self, venue: str, instrument: str) -> bool:
        """Whether continuous matching is allowed."""
        return self.state(venue, instrument) == TRADING

    def last(self, venue: str, instrument: str) -> Halt | None:
        """The latest applied detector message of exactly this key (``"*"`` for market-wide),
        else the latest manual one."""
        with self._lock:
            return (self._layers.get((venue, instrument, "auto"))
                    or self._layers.get((venue, instrument, "cross"))
                    or self._layers.get((venue, instrument, "manual")))

    def reference_price(self, venue: str, instrument: str) -> float | None:
        """``reference_price`` of the instrument's latest signal (for the reopening auction)."""
        halt = self.last(venue, instrument)
        return halt.reference_price if halt is not None else None

    def snapshot(self) -> dict[tuple[str, str], str]:
        """Signalled state per key, the most restrictive of its layers (no fail-safe layer)."""
        with self._lock:
            out: dict[tuple[str, str], str] = {}
            for (venue, instrument, _), halt in self._layers.items():
                old = out.get((venue, instrument), TRADING)
                out[(venue, instrument)] = max(old, halt.state, key=SEVERITY.__getitem__)
            return out
