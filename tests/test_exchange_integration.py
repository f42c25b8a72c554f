"""The Exchange: halts obeyed, reopening auctions, batching; then end to end on the real broker.

The ``integration`` tests use the embedded Kafka-protocol broker: halt signals are produced and
the exchange's trades read back with confluent-kafka, a client independent of the kafka-python
code under test.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import msgspec
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from exchange.book import Ack, Order, Reject
from exchange.halts import HaltBook, HaltSubscriber
from exchange.venue import Exchange, KafkaSink, MemorySink
from streams.broker import EmbeddedBroker, free_port
from streams.contracts import Halt, Trade, decode_message, encode, iso
from streams.topics import Topics, ensure_topics

__all__: list[str] = []

GPU, KWH = "GPU-H100-1H", "KWH-SA-GRID"


def halt(seq_s: float, state: str, instrument: str = GPU, reason: str = "SPIKE",
         reference_price: float | None = None) -> Halt:
    """A halt decided at event time ``seq_s`` (seq = microseconds, as the detectors do)."""
    return Halt(seq=round(seq_s * 1e6), ts=iso(seq_s), emitted_at=iso(time.time()), venue="v1",
                instrument=instrument, state=state, reason=reason, resume_at=None,
                reference_price=reference_price, band_low=None, band_high=None, alert_ids=[])


def wait_until(condition: Callable[[], object], timeout: float = 30.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.02)


def order(oid: str, side: str, qty: float, agent: str, price: float | None = None,
          instrument: str = GPU) -> Order:
    return Order(oid, instrument, side, qty, agent, price=price)  # type: ignore[arg-type]


def traded(result: list[Trade] | Reject) -> list[Trade]:
    assert not isinstance(result, Reject), result
    return result


class WallClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


# ---------------------------------------------------------------------- in memory
def test_halt_queues_then_reopens_by_auction() -> None:
    halts, sink = HaltBook(), MemorySink()
    ex = Exchange("v1", [GPU, KWH], halts=halts, sink=sink, batch_size=1000, linger_ms=0)
    assert ex.submit(order("s1", "sell", 5, "s1", 10.0), ts=1.0) == []
    assert [t.qty for t in traded(ex.submit(order("b1", "buy", 2, "b1", 10.0), ts=2.0))] == [2]
    halts.apply(halt(3.0, "PAUSED", reason="LUDP", reference_price=10.0))
    queued = ex.place(order("b2", "buy", 4, "b2", 10.5), ts=4.0)
    assert isinstance(queued, Ack)
    assert queued.queued
    assert queued.trades == ()
    rejected = ex.submit(order("m1", "buy", 1, "b3"), ts=4.5)
    assert rejected == Reject("m1", "market_order_during_halt")
    assert ex.submit(order("k1", "sell", 1, "s9", 0.3, instrument=KWH), ts=4.6) == []  # open
    assert ex.tick(5.0) == []
    assert ex.books[GPU].phase == "AUCTION"
    halts.apply(halt(6.0, "TRADING", reason="RESUME", reference_price=10.2))
    auction = ex.tick(7.0)
    assert [(t.price, t.qty, t.buyer, t.seller, t.aggressor, t.ts) for t in auction] == [
        (10.2, 3, "b2", "s1", None, 7.0)]
    assert ex.books[GPU].phase == "CONTINUOUS"
    assert ex.books[GPU].remaining("b2") == 1
    c = ex.counters
    assert (c.orders, c.accepted, c.queued, c.trades, c.halts_obeyed, c.auctions) == (
        5, 4, 1, 2, 1, 1)
    assert c.rejects == {"market_order_during_halt": 1}
    assert c.auction_trades == 1
    assert [t.trade_id for t in sink.trades] == ["v1-GPU-H100-1H-1", "v1-GPU-H100-1H-2"]


def test_reject_policy_unknown_instruments_and_cancels() -> None:
    halts = HaltBook()
    ex = Exchange("v1", [GPU, KWH], halts=halts, on_halt="reject")
    assert ex.submit(order("x", "buy", 1, "a", 1.0, instrument="NOPE"), ts=1.0) == Reject(
        "x", "unknown_instrument")
    assert ex.submit(order("k1", "buy", 1, "a", 1.0, instrument=KWH), ts=1.0) == []
    assert ex.submit(order("k1", "buy", 1, "a", 1.0), ts=1.0) == Reject("k1", "duplicate_order_id")
    halts.apply(halt(2.0, "HALTED", instrument="*", reason="MWC1"))
    assert ex.submit(order("g1", "buy", 1, "a", 1.0), ts=3.0) == Reject("g1", "halted")
    assert ex.cancel("k1")
    assert not ex.cancel("k1")
    assert ex.counters.rejects == {"unknown_instrument": 1, "duplicate_order_id": 1, "halted": 1}
    assert ex.counters.halts_obeyed == 1  # only GPU was touched; KWH syncs at its next call
    ex.tick(4.0)
    assert ex.counters.halts_obeyed == 2
    with pytest.raises(ValueError, match="on_halt"):
        Exchange("v1", on_halt="maybe")  # type: ignore[arg-type]


def test_silent_feed_queues_orders_and_recovery_reopens() -> None:
    clock = WallClock()
    halts = HaltBook(silence_s=5.0, clock=clock)
    halts.mark_alive()
    ex = Exchange("v1", [GPU], halts=halts)
    ex.submit(order("s1", "sell", 1, "s", 10.0), ts=1.0)
    clock.now += 6.0  # the feed went silent
    assert ex.state(GPU) == "QUOTE_ONLY"
    assert ex.submit(order("b1", "buy", 1, "b", 11.0), ts=2.0) == []  # queued, not matched
    halts.mark_alive()
    assert [(t.price, t.qty) for t in ex.tick(3.0)] == [(10.5, 1)]


def test_batches_by_size_and_by_linger() -> None:
    wall, batches = WallClock(), list[list[Trade]]()
    ex = Exchange("v1", [GPU], sink=batches.append, batch_size=3, linger_ms=5, wall_clock=wall)
    for i in range(4):
        ex.submit(order(f"s{i}", "sell", 1, f"s{i}", 10.0), ts=1.0)
    ex.submit(order("b", "buy", 4, "b"), ts=2.0)  # 4 trades: a batch of 3 goes at once
    assert [len(b) for b in batches] == [3]
    wall.now += 0.004
    ex.tick(2.0)
    assert [len(b) for b in batches] == [3]  # the 4th waited 4 ms < 5 ms
    wall.now += 0.002
    ex.tick(2.0)
    assert [len(b) for b in batches] == [3, 1]
    assert isinstance(batches[0][0], Trade)
    ex.submit(order("s9", "sell", 1, "s9", 10.0), ts=0.5)  # event time never goes backwards
    ex.submit(order("b9", "buy", 1, "b9"), ts=0.5)
    ex.close()  # publishes what is left
    assert [len(b) for b in batches] == [3, 1, 1]
    assert batches[-1][0].ts == 2.0
    assert (ex.counters.published_trades, ex.counters.published_batches) == (5, 3)


def test_flusher_thread_publishes_after_linger() -> None:
    sink = MemorySink()
    ex = Exchange("v1", [GPU], sink=sink, clock=lambda: 42.0, linger_ms=5).start()
    try:
        ex.submit(order("s", "sell", 1, "s", 10.0))
        ex.submit(order("b", "buy", 1, "b", 10.0))
        wait_until(lambda: len(sink.trades) == 1, 10, "the flusher")
        assert sink.trades[0].ts == 42.0
    finally:
        ex.close()
    with pytest.raises(ValueError, match="clock"):
        Exchange("v1", [GPU]).tick()


# ---------------------------------------------------------------------- real broker
def _consume(broker: str, topic: str, count: int, timeout: float = 60) -> list[tuple[bytes, bytes]]:
    """Read ``count`` messages of ``topic`` (one partition) from the beginning, without a group."""
    consumer = Consumer({"bootstrap.servers": broker, "group.id": f"check-{uuid.uuid4().hex}",
                         "session.timeout.ms": 6000, "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    got: list[tuple[bytes, bytes]] = []
    deadline = time.monotonic() + timeout
    try:
        while len(got) < count and time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is None or msg.error():
                continue
            got.append((msg.key() or b"", msg.value() or b""))
    finally:
        consumer.close()
    assert len(got) >= count, f"read {len(got)} of {count} messages from {topic}"
    return got


class HaltProducer:
    """Publishes halt signals the way the detectors do (key = instrument), with confluent-kafka."""

    def __init__(self, broker: str, topic: str) -> None:
        self.topic = topic
        self.producer = Producer({"bootstrap.servers": broker, "enable.idempotence": False})

    def send(self, signal: Halt) -> None:
        self.producer.produce(self.topic, key=signal.instrument.encode(), value=encode(signal))
        assert self.producer.flush(30) == 0

    def close(self) -> None:
        self.producer.close()


@pytest.mark.integration
def test_exchange_obeys_halts_from_kafka(broker: str, topic_prefix: str) -> None:
    topics = Topics(prefix=topic_prefix)
    ensure_topics(broker, [topics.trades, topics.halts])
    halts = HaltProducer(broker, topics.halts)
    subscriber = HaltSubscriber(broker, topics.halts, silence_s=5.0).start()
    ex = Exchange("v1", [GPU], halts=subscriber, sink=KafkaSink(broker, topics.trades))
    try:
        wait_until(lambda: subscriber.ready and subscriber.is_open("v1", GPU), 30, "catch-up")
        ex.submit(order("s1", "sell", 5, "s1", 10.0), ts=1.0)
        assert [t.qty for t in traded(ex.submit(order("b1", "buy", 2, "b1", 10.0), ts=2.0))] == [2]

        halts.send(halt(3.0, "HALTED", reference_price=10.0))
        wait_until(lambda: subscriber.state("v1", GPU) == "HALTED", 30, "the halt")
        queued = ex.place(order("b2", "buy", 4, "b2", 10.5), ts=4.0)
        assert isinstance(queued, Ack)
        assert queued.queued
        assert queued.trades == ()
        assert ex.submit(order("m", "buy", 1, "b3"), ts=4.0) == Reject(
            "m", "market_order_during_halt")

        halts.send(halt(2.5, "TRADING", reason="RESUME"))  # an older decision
        wait_until(lambda: subscriber.counters.stale >= 1, 30, "the stale signal")
        assert subscriber.state("v1", GPU) == "HALTED"
        assert ex.tick(5.0) == []

        halts.send(halt(6.0, "TRADING", reason="RESUME", reference_price=10.2))
        wait_until(lambda: subscriber.is_open("v1", GPU), 30, "the resumption")
        auction = ex.tick(7.0)
        assert [(t.price, t.qty, t.aggressor) for t in auction] == [(10.2, 3, None)]
        assert ex.counters.halts_obeyed == 1
        assert ex.counters.auctions == 1
        ex.flush()
    finally:
        subscriber.stop()
        ex.close()
        halts.close()

    messages = _consume(broker, topics.trades, 2)
    trades: list[Trade] = []
    for key, value in messages:
        ok, bad = decode_message(value)
        assert bad == []
        assert {t.instrument for t in ok} == {key.decode()}
        trades += ok
    assert [(t.trade_id, t.price, t.qty, t.venue, t.aggressor) for t in trades] == [
        ("v1-GPU-H100-1H-1", 10.0, 2, "v1", "buy"), ("v1-GPU-H100-1H-2", 10.2, 3, "v1", None)]
    halts_read = [msgspec.json.decode(value, type=Halt) for _, value in
                  _consume(broker, topics.halts, 3)]
    assert [(h.seq, h.state) for h in halts_read] == [
        (3_000_000, "HALTED"), (2_500_000, "TRADING"), (6_000_000, "TRADING")]


@pytest.mark.integration
@pytest.mark.slow
def test_dead_broker_fails_safe_and_recovery_reopens(tmp_path: Path) -> None:
    broker = EmbeddedBroker(port=free_port(), log_path=tmp_path / "tansu.log").start()
    restarted: EmbeddedBroker | None = None
    ensure_topics(broker.bootstrap, ["halts"])
    halts = HaltProducer(broker.bootstrap, "halts")
    halts.send(halt(1.0, "TRADING", instrument=KWH, reason="RESUME"))
    subscriber = HaltSubscriber(broker.bootstrap, "halts", silence_s=1.5,
                                probe_interval_s=0.2).start()
    ex = Exchange("v1", [GPU], halts=subscriber)
    try:
        wait_until(lambda: subscriber.ready and subscriber.is_open("v1", GPU), 30, "catch-up")
        # live but quiet: well past silence_s without messages, the probes keep it open
        quiet_until = time.monotonic() + 3.0
        while time.monotonic() < quiet_until:
            assert subscriber.is_open("v1", GPU), "a quiet but live feed must not fail safe"
            time.sleep(0.05)
        ex.submit(order("s1", "sell", 1, "s", 10.0), ts=1.0)

        assert broker.pid is not None
        os.kill(broker.pid, signal.SIGKILL)  # the broker dies (a graceful stop waits 5 s)
        broker.stop()
        wait_until(lambda: subscriber.state("v1", GPU) == "QUOTE_ONLY", 20, "the fail-safe")
        wait_until(lambda: subscriber.counters.silences == 1, 10, "the silence to be reported")
        assert ex.submit(order("b1", "buy", 1, "b", 11.0), ts=2.0) == []  # queued

        restarted = EmbeddedBroker(port=broker.port, log_path=broker.log_path).start()
        ensure_topics(restarted.bootstrap, ["halts"])
        wait_until(lambda: subscriber.is_open("v1", GPU), 60, "the recovery")
        wait_until(lambda: subscriber.counters.recoveries == 1, 10, "the recovery report")
        assert [(t.price, t.qty) for t in ex.tick(3.0)] == [(10.5, 1)]
        # the restarted (in-memory) broker lost the log: the subscriber re-reads it
        halts.send(halt(4.0, "HALTED", instrument=KWH))
        wait_until(lambda: subscriber.state("v1", KWH) == "HALTED", 30, "a post-restart halt")
        assert subscriber.counters.resets >= 1
    finally:
        subscriber.stop()
        halts.close()
        ex.close()
        broker.stop()
        if restarted is not None:
            restarted.stop()
