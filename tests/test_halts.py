"""HaltBook rules (seq per key, market-wide layer, invalid input, fail-safe) and the subscriber."""

from __future__ import annotations

import logging
from typing import Any

import msgspec
import pytest

from exchange.halts import HaltBook, HaltSubscriber, StateChange
from streams.broker import free_port
from streams.contracts import Halt, encode

__all__: list[str] = []

GPU, KWH = "GPU-H100-1H", "KWH-SA-GRID"


def halt(seq: int, state: str, instrument: str = GPU, venue: str = "v1", reason: str = "SPIKE",
         reference_price: float | None = None) -> Halt:
    return Halt(seq=seq, ts="2024-05-06T14:30:00Z", emitted_at="2024-05-06T14:30:00.1Z",
                venue=venue, instrument=instrument, state=state, reason=reason, resume_at=None,
                reference_price=reference_price, band_low=None, band_high=None, alert_ids=["a1"])


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_seq_must_increase_per_key() -> None:
    book = HaltBook()
    assert book.apply(encode(halt(100, "HALTED"))) is not None
    assert book.state("v1", GPU) == "HALTED"
    assert book.apply(encode(halt(100, "TRADING", reason="RESUME"))) is None  # duplicate seq
    assert book.apply(encode(halt(99, "TRADING", reason="RESUME"))) is None  # older decision
    assert book.state("v1", GPU) == "HALTED"
    # another key has its own sequence: a lower seq there is not stale
    assert book.apply(halt(5, "PAUSED", instrument=KWH, reason="LUDP")) is not None
    assert book.apply(halt(7, "PAUSED", venue="v2", reason="LUDP")) is not None
    assert book.apply(encode(halt(101, "TRADING", reason="RESUME", reference_price=2.5)))
    assert book.state("v1", GPU) == "TRADING"
    assert book.is_open("v1", GPU)
    assert book.reference_price("v1", GPU) == 2.5
    assert (book.state("v1", KWH), book.state("v2", GPU)) == ("PAUSED", "PAUSED")
    counters = book.counters
    assert (counters.received, counters.applied, counters.stale, counters.invalid) == (6, 4, 2, 0)


def test_contagion_pauses_have_a_layer_and_a_sequence_of_their_own() -> None:
    """Stage 2's cross-market pause and the instrument's own breaker decide independently:
    neither's resumption lifts the other's pause, and their seqs do not compete."""
    book = HaltBook()
    assert book.apply(halt(500, "PAUSED", reason="CONTAGION"))
    assert book.apply(halt(900, "PAUSED", reason="LUDP"))  # the breaker, later in event time
    assert book.apply(halt(600, "TRADING", reason="CONTAGION"))  # not stale: its own layer
    assert book.state("v1", GPU) == "PAUSED"  # the breaker's pause holds
    assert book.apply(halt(950, "TRADING", reason="RESUME"))
    assert book.state("v1", GPU) == "TRADING"
    assert book.apply(halt(1000, "PAUSED", reason="CONTAGION"))
    assert book.apply(halt(1100, "TRADING", reason="RESUME"))  # the breaker's resumption
    assert book.state("v1", GPU) == "PAUSED"  # does not end the contagion pause
    assert book.apply(halt(1200, "TRADING", reason="MANUAL"))  # a regulator's resume ends both
    assert book.state("v1", GPU) == "TRADING"


def test_market_wide_overrides_and_clears() -> None:
    book = HaltBook()
    book.apply(halt(10, "PAUSED", instrument=KWH, reason="LUDP"))
    book.apply(halt(20, "PAUSED", instrument=GPU, reason="VELOCITY"))
    book.apply(halt(30, "HALTED", instrument="*", reason="MWC1"))
    for instrument in (GPU, KWH, "NEVER-SEEN", "*"):
        assert book.state("v1", instrument) == "HALTED"
    assert book.state("v2", GPU) == "TRADING"  # other venues are not affected
    # an instrument's resumption does not reopen it during a market-wide halt
    book.apply(halt(40, "TRADING", instrument=GPU, reason="RESUME"))
    assert book.state("v1", GPU) == "HALTED"
    # the market-wide resumption clears the market-wide layer only
    book.apply(halt(50, "TRADING", instrument="*", reason="RESUME"))
    assert (book.state("v1", GPU), book.state("v1", "NEVER-SEEN")) == ("TRADING", "TRADING")
    assert book.state("v1", KWH) == "PAUSED"  # its own LULD pause is still in force
    book.apply(halt(60, "QUOTE_ONLY", instrument="*", reason="MANUAL"))
    assert (book.state("v1", KWH), book.state("v1", GPU)) == ("PAUSED", "QUOTE_ONLY")
    assert book.snapshot()[("v1", "*")] == "QUOTE_ONLY"


def _valid() -> dict[str, Any]:
    return msgspec.to_builtins(halt(1, "HALTED"))  # type: ignore[no-any-return]


@pytest.mark.parametrize("message", [
    b"{not json",
    b"[]",
    b"",
    {**_valid(), "state": "CLOSED"},
    {**_valid(), "reason": "BORED"},
    {**_valid(), "schema": "halt/2"},
    {**_valid(), "seq": -1},
    {**_valid(), "seq": "12"},
    {**_valid(), "seq": True},
    {**_valid(), "ts": "yesterday"},
    {**_valid(), "ts": "2024-05-06T14:30:00"},  # no zone
    {**_valid(), "resume_at": "soon"},
    {**_valid(), "instrument": ""},
    {**_valid(), "reference_price": -1.0},
    {k: v for k, v in _valid().items() if k != "venue"},
])
def test_invalid_messages_are_counted_never_raised(message: Any,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    book = HaltBook()
    raw = message if isinstance(message, bytes) else msgspec.json.encode(message)
    with caplog.at_level(logging.WARNING, logger="exchange.haltbook"):
        assert book.apply(raw) is None
    assert (book.counters.invalid, book.counters.applied) == (1, 0)
    assert book.state("v1", GPU) == "TRADING"
    assert "invalid halt message" in caplog.text


def test_unknown_fields_are_allowed() -> None:
    assert HaltBook().apply({**_valid(), "extra": {"note": "kept out"}}) is not None


def test_on_change_reports_layer_changes_and_survives_callback_errors() -> None:
    seen: list[StateChange] = []
    book = HaltBook(on_change=seen.append)
    book.apply(halt(1, "PAUSED", reason="LUDP"))
    book.apply(halt(2, "PAUSED", reason="VELOCITY"))  # same state: no change
    book.apply(halt(3, "TRADING", reason="RESUME"))
    assert [(c.instrument, c.old, c.new, c.reason, c.seq) for c in seen] == [
        (GPU, "TRADING", "PAUSED", "LUDP", 1), (GPU, "PAUSED", "TRADING", "RESUME", 3)]

    def broken(change: StateChange) -> None:
        raise RuntimeError("callback bug")

    book.on_change = broken
    assert book.apply(halt(4, "HALTED")) is not None  # logged, not raised
    assert book.state("v1", GPU) == "HALTED"


def test_silent_feed_fails_safe_and_recovers() -> None:
    clock = Clock()
    seen: list[StateChange] = []
    book = HaltBook(silence_s=5.0, clock=clock, on_change=seen.append)
    assert book.silent
    assert book.state("v1", GPU) == "QUOTE_ONLY"
    book.mark_alive()
    assert not book.silent
    assert book.state("v1", GPU) == "TRADING"
    book.apply(halt(10, "HALTED", instrument=KWH))
    clock.now += 5.0
    assert book.check() is None
    assert book.state("v1", GPU) == "TRADING"
    clock.now += 0.01
    assert book.state("v1", GPU) == "QUOTE_ONLY"
    assert book.state("v9", "ANY") == "QUOTE_ONLY"
    assert book.state("v1", KWH) == "HALTED"  # a stricter known state stays
    change = book.check()
    assert change is not None
    assert (change.venue, change.new, change.reason) == (
        "*", "QUOTE_ONLY", "FEED_SILENT")
    assert book.check() is None  # reported once
    book.mark_alive()  # the feed is back
    assert book.state("v1", GPU) == "TRADING"
    assert book.state("v1", KWH) == "HALTED"
    assert [c.reason for c in seen if c.venue == "*"] == ["FEED_LIVE", "FEED_SILENT", "FEED_LIVE"]
    assert (book.counters.silences, book.counters.recoveries) == (1, 1)


def test_fail_safe_can_halt_everything_or_be_disabled() -> None:
    clock = Clock()
    strict = HaltBook(silence_s=1.0, fail_safe="HALTED", clock=clock)
    assert strict.state("v1", GPU) == "HALTED"
    trusting = HaltBook(silence_s=None, clock=clock)
    clock.now += 1e6
    assert trusting.state("v1", GPU) == "TRADING"
    assert not trusting.silent
    with pytest.raises(ValueError, match="fail_safe"):
        HaltBook(fail_safe="TRADING")
    with pytest.raises(ValueError, match="silence_s"):
        HaltBook(silence_s=0)


def test_subscriber_without_a_broker_is_silent_and_never_raises() -> None:
    port = free_port()  # nothing listens there
    subscriber = HaltSubscriber(f"127.0.0.1:{port}", "t.halts", silence_s=1.0)
    try:
        for _ in range(2):
            assert subscriber.poll(0.05) == 0
        assert subscriber.state("v1", GPU) == "QUOTE_ONLY"
        assert not subscriber.is_open("v1", GPU)
        assert not subscriber.ready
        assert subscriber.counters.connect_failures >= 1
    finally:
        subscriber.stop()
