"""Circuit-breaker state machine for one (venue, instrument), driven by event time.

States follow the halt contract (``TRADING``, ``PAUSED``, ``HALTED``) plus an internal *limit
state* (LULD): a price outside the band opens a limit state; if it has not come back inside the
band after ``limit_state_s`` the instrument is paused (reason ``LUDP``). A velocity breach pauses
at once (``VELOCITY``); an extreme move halts (``SPIKE``), also when it happens during a pause
(escalation). A pause or halt ends at ``resume_at`` (event time) with a ``TRADING``/``RESUME``
transition that links the same alerts.

>>> b = CircuitBreaker("GPU-H100-1H")
>>> t = b.trip(100.0, "VELOCITY", reference_price=2.0, band_low=1.9, band_high=2.1,
...            alert_ids=["a1"])
>>> (t.state, t.reason, t.resume_at, t.seq)
('PAUSED', 'VELOCITY', 160.0, 100000000)
>>> b.tick(159.9) is None, b.tick(160.0).state
(True, 'TRADING')
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["BreakerConfig", "CircuitBreaker", "Transition", "next_seq"]

TRADING, PAUSED, HALTED = "TRADING", "PAUSED", "HALTED"
#: No band (shared, so an idle breaker costs no tuple of its own).
_NO_BAND: tuple[float | None, float | None] = (None, None)


def next_seq(ts: float, last: int) -> int:
    """A halt key's next ``seq``: its event time in microseconds, bumped to stay strictly
    increasing after ``last`` (stage 1's breakers and stage 2's decisions alike)."""
    return max(round(ts * 1e6), last + 1)


@dataclass(frozen=True, kw_only=True)
class BreakerConfig:
    """Durations in event-time seconds (LULD, CME velocity logic, DESIGN §4)."""

    limit_state_s: float = 15.0
    ludp_pause_s: float = 300.0
    velocity_pause_s: float = 60.0
    spike_halt_s: float = 600.0
    #: A dynamic-breaker pause (reason ``LUDP``; CME dynamic circuit breakers: 2 minutes).
    dynamic_pause_s: float = 120.0

    def duration(self, reason: str) -> float:
        return {"LUDP": self.ludp_pause_s, "VELOCITY": self.velocity_pause_s,
                "SPIKE": self.spike_halt_s}.get(reason, self.ludp_pause_s)


@dataclass(frozen=True, slots=True)
class Transition:
    """A published state change (becomes one ``halt/1`` message)."""

    ts: float
    seq: int
    state: str
    reason: str
    resume_at: float | None
    reference_price: float | None
    band_low: float | None
    band_high: float | None
    alert_ids: tuple[str, ...]


class CircuitBreaker:
    """State machine of one instrument. Pure: it only sees event times and decisions."""

    __slots__ = ("alert_ids", "band", "config", "instrument", "last_seq", "limit_since",
                 "limit_side", "reference_price", "resume_at", "state")

    def __init__(self, instrument: str, config: BreakerConfig | None = None) -> None:
        self.instrument = instrument
        self.config = config or BreakerConfig()
        self.state = TRADING
        self.limit_since: float | None = None
        self.limit_side = 0
        self.resume_at: float | None = None
        self.reference_price: float | None = None
        self.band = _NO_BAND
        self.alert_ids: tuple[str, ...] = ()
        self.last_seq = 0

    @property
    def trading(self) -> bool:
        return self.state == TRADING

    def _seq(self, ts: float) -> int:
        self.last_seq = next_seq(ts, self.last_seq)
        return self.last_seq

    def enter_limit(self, ts: float, side: int) -> None:
        """Price printed outside the band: start (or keep) the limit-state clock."""
        if self.limit_since is None:
            self.limit_since, self.limit_side = ts, side

    def exit_limit(self) -> None:
        self.limit_since, self.limit_side = None, 0

    def limit_expired(self, ts: float) -> bool:
        return self.limit_since is not None and ts - self.limit_since >= self.config.limit_state_s

    def trip(
        self,
        ts: float,
        reason: str,
        *,
        reference_price: float | None,
        band_low: float | None,
        band_high: float | None,
        alert_ids: list[str],
        duration: float | None = None,
    ) -> Transition:
        """Pause (``LUDP``, ``VELOCITY``) or halt (``SPIKE``) at event time ``ts``, for
        ``duration`` seconds (default: the reason's, from the configuration)."""
        state = HALTED if reason == "SPIKE" else PAUSED
        until = ts + (self.config.duration(reason) if duration is None else duration)
        if self.state != TRADING and self.resume_at is not None:  # escalation: never soften
            until = max(until, self.resume_at)
            if self.state == HALTED:
                state = HALTED
            self.alert_ids = (*self.alert_ids, *alert_ids)
        else:
            self.alert_ids = tuple(alert_ids)
        self.state, self.resume_at = state, until
        self.reference_price, self.band = reference_price, (band_low, band_high)
        self.exit_limit()
        return Transition(ts, self._seq(ts), state, reason, until, reference_price, band_low,
                          band_high, self.alert_ids)

    def tick(self, clock: float) -> Transition | None:
        """Resume when event time reaches ``resume_at``; the transition is stamped ``resume_at``."""
        if self.state == TRADING or self.resume_at is None or clock < self.resume_at:
            return None
        ts = self.resume_at
        t = Transition(ts, self._seq(ts), TRADING, "RESUME", None, self.reference_price, None, None,
                       self.alert_ids)
        self.state, self.resume_at, self.alert_ids = TRADING, None, ()
        self.band = _NO_BAND
        return t
