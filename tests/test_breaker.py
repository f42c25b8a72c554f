"""The circuit-breaker state machine: trips, escalation, resumption, seq and the limit state."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detectors.breaker import BreakerConfig, CircuitBreaker, Transition

__all__: list[str] = []

BANDS = {"reference_price": 2.0, "band_low": 1.9, "band_high": 2.1}


def trip(b: CircuitBreaker, ts: float, reason: str, *ids: str) -> Transition:
    return b.trip(ts, reason, alert_ids=list(ids), **BANDS)


@pytest.mark.parametrize(
    ("reason", "state", "pause"),
    [("VELOCITY", "PAUSED", 60.0), ("LUDP", "PAUSED", 300.0), ("SPIKE", "HALTED", 600.0)],
)
def test_trip_sets_state_and_resume_at(reason: str, state: str, pause: float) -> None:
    b = CircuitBreaker("GPU")
    t = trip(b, 1_000.5, reason, "a1")
    assert (t.state, t.reason, t.ts) == (state, reason, 1_000.5)
    assert t.resume_at == pytest.approx(1_000.5 + pause)
    assert t.seq == 1_000_500_000
    assert t.alert_ids == ("a1",)
    assert (t.reference_price, t.band_low, t.band_high) == (2.0, 1.9, 2.1)
    assert b.state == state
    assert not b.trading
    assert b.resume_at == t.resume_at


def test_durations_come_from_the_config() -> None:
    cfg = BreakerConfig(velocity_pause_s=5.0, ludp_pause_s=7.0, spike_halt_s=11.0)
    assert [trip(CircuitBreaker("X", cfg), 100.0, r).resume_at
            for r in ("VELOCITY", "LUDP", "SPIKE")] == [105.0, 107.0, 111.0]


def test_escalation_to_spike_during_a_pause_lengthens_and_accumulates() -> None:
    b = CircuitBreaker("GPU")
    first = trip(b, 100.0, "VELOCITY", "a1")
    second = trip(b, 110.0, "SPIKE", "a2")
    assert (second.state, second.reason) == ("HALTED", "SPIKE")
    assert second.resume_at == 710.0
    assert second.alert_ids == ("a1", "a2")
    assert second.seq > first.seq
    resumed = b.tick(710.0)
    assert resumed is not None
    assert resumed.alert_ids == ("a1", "a2")


def test_escalation_never_shortens_resume_at() -> None:
    b = CircuitBreaker("GPU")
    trip(b, 100.0, "LUDP", "a1")  # resume at 400
    t = trip(b, 101.0, "VELOCITY", "a2")  # would resume at 161 on its own
    assert t.resume_at == 400.0
    assert t.alert_ids == ("a1", "a2")
    assert b.tick(161.0) is None
    assert b.tick(399.999) is None
    assert b.tick(400.0) is not None


def test_a_halt_is_not_downgraded_to_a_pause() -> None:
    """A VELOCITY decision during a SPIKE halt must not turn HALTED into PAUSED."""
    b = CircuitBreaker("GPU")
    trip(b, 100.0, "SPIKE", "a1")
    t = trip(b, 105.0, "VELOCITY", "a2")
    assert t.resume_at == 700.0
    assert b.state == "HALTED", "a halt was downgraded to a pause by a weaker trigger"
    assert t.state == "HALTED"


def test_tick_before_and_at_resume_at() -> None:
    b = CircuitBreaker("GPU")
    assert b.tick(1e12) is None  # trading: nothing to resume
    halt = trip(b, 100.0, "VELOCITY", "a1")
    assert b.tick(159.999999) is None
    assert b.state == "PAUSED"
    t = b.tick(500.0)  # event time jumped well past resume_at
    assert t is not None
    assert (t.state, t.reason, t.resume_at) == ("TRADING", "RESUME", None)
    assert t.ts == 160.0, "a resumption is stamped with resume_at, not the clock that saw it"
    assert t.seq == 160_000_000 > halt.seq
    assert t.alert_ids == ("a1",)
    assert t.reference_price == 2.0
    assert (t.band_low, t.band_high) == (None, None)
    assert b.trading
    assert b.resume_at is None
    assert b.alert_ids == ()
    assert b.tick(600.0) is None, "a resumption fires once"


def test_after_resumption_a_new_trip_starts_fresh_alert_ids() -> None:
    b = CircuitBreaker("GPU")
    trip(b, 100.0, "VELOCITY", "a1")
    b.tick(160.0)
    t = trip(b, 200.0, "VELOCITY", "a2")
    assert t.alert_ids == ("a2",)
    assert t.resume_at == 260.0


def test_seq_strictly_increases_for_equal_and_backward_timestamps() -> None:
    b = CircuitBreaker("GPU", BreakerConfig(velocity_pause_s=0.0))
    seqs = [trip(b, 100.0, "VELOCITY").seq]
    resumed = b.tick(100.0)  # resume_at == trip time: same microsecond
    assert resumed is not None
    seqs.append(resumed.seq)
    seqs.append(trip(b, 100.0, "SPIKE").seq)
    seqs.append(trip(b, 99.0, "SPIKE").seq)  # a late decision stamped earlier
    assert seqs == sorted(set(seqs))
    assert len(seqs) == 4
    assert seqs[0] == 100_000_000


def test_limit_state_enter_keep_expire_exit() -> None:
    b = CircuitBreaker("GPU")
    assert not b.limit_expired(1e9)
    b.enter_limit(10.0, -1)
    b.enter_limit(12.0, -1)  # still in the limit state: the clock keeps its start
    assert (b.limit_since, b.limit_side) == (10.0, -1)
    assert not b.limit_expired(24.999)
    assert b.limit_expired(25.0)
    b.exit_limit()
    assert (b.limit_since, b.limit_side) == (None, 0)
    assert not b.limit_expired(100.0)
    b.enter_limit(30.0, 1)
    assert (b.limit_since, b.limit_side) == (30.0, 1)


def test_limit_state_duration_is_configurable_and_cleared_by_a_trip() -> None:
    b = CircuitBreaker("GPU", BreakerConfig(limit_state_s=2.0))
    b.enter_limit(10.0, 1)
    assert not b.limit_expired(11.9)
    assert b.limit_expired(12.0)
    trip(b, 12.0, "LUDP")
    assert b.limit_since is None
    assert not b.limit_expired(100.0)


OPS = st.lists(
    st.tuples(st.sampled_from(["VELOCITY", "LUDP", "SPIKE", "tick"]),
              st.floats(0.0, 900.0, allow_nan=False)),
    max_size=40,
)


@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(OPS)
def test_random_decision_sequences_keep_the_invariants(ops: list[tuple[str, float]]) -> None:
    b = CircuitBreaker("GPU")
    clock, last_seq = 0.0, 0
    for n, (op, dt) in enumerate(ops):
        clock += dt
        before = b.resume_at if not b.trading else None
        t = b.tick(clock) if op == "tick" else trip(b, clock, op, f"a{n}")
        if t is None:
            assert op == "tick"
            continue
        assert t.seq > last_seq
        last_seq = t.seq
        if t.state == "TRADING":
            assert before is not None
            assert t.ts == before <= clock
            assert b.trading
        else:
            assert t.resume_at is not None
            assert t.resume_at >= clock
            if before is not None:
                assert t.resume_at >= before, "escalation shortened a pause"
                assert t.alert_ids[-1] == f"a{n}"
                assert len(t.alert_ids) >= 2
            else:
                assert t.alert_ids == (f"a{n}",)
