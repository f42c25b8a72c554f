"""Acknowledging halts: the exchange tells the desk which halt signals it applied.

Each time the exchange's :class:`~exchange.haltbook.HaltBook` applies a halt signal of one of
its venues (``on_applied``: a halt, an extension, a resumption; never a stale or rejected one),
:class:`HaltAcks` publishes a ``halt_ack/1`` record (:class:`streams.contracts.HaltAck`) on the
``halt_acks`` topic::

    {"schema": "halt_ack/1", "exchange": "m2m-sim", "venue": "m2m-sim", "instrument": "KWH",
     "seq": 1715005810000000, "state": "HALTED", "reason": "SPIKE", "effective": "HALTED",
     "ts": "…Z", "applied_at": "…Z"}

``ts`` is the halt's event time, ``applied_at`` the exchange's wall clock when it applied it and
``effective`` the state it then enforces for the key. The record key is
``exchange/venue/instrument/seq``: re-reading the halts topic after a restart re-sends the same
acknowledgements under the same keys, and the store keeps one of each.

Trading never waits for an acknowledgement: the callback only puts the record on a bounded
queue; a sender thread hands it to the sink (Kafka). When the topic cannot be written, the
records are counted (``counters``), the failure is logged (the first at once, then a summary a
minute) and, once the queue is full, newer acknowledgements are dropped and counted.

>>> from streams.contracts import Halt
>>> sink = MemoryAckSink()
>>> acks = HaltAcks(sink, exchange="x1", venues=["v"], wall_clock=lambda: 0.0).start()
>>> t = "2024-01-01T00:00:00Z"
>>> acks(Halt(seq=7, ts=t, emitted_at=t, venue="v", instrument="I", state="HALTED",
...           reason="MANUAL", resume_at=None, reference_price=None, band_low=None,
...           band_high=None, alert_ids=[]), "HALTED")
>>> acks.close()
>>> key, value = sink.sent[0]
>>> key, msgspec.json.decode(value)["applied_at"]
(b'x1/v/I/7', '1970-01-01T00:00:00.000000Z')
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final, Protocol, runtime_checkable

import msgspec

from streams.contracts import Halt, HaltAck, iso
from streams.throttle import ThrottledLog

__all__ = ["AckCounters", "HaltAcks", "KafkaAckSink", "MemoryAckSink"]

log = logging.getLogger(__name__)

_STOP: Final = object()


@runtime_checkable
class AckSink(Protocol):
    """Where acknowledgements go; ``send`` may block or raise (it runs on the sender thread)."""

    def send(self, key: bytes, value: bytes) -> None: ...

    def close(self) -> None: ...


class MemoryAckSink:
    """Keeps every acknowledgement in memory (tests)."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, bytes]] = []

    def send(self, key: bytes, value: bytes) -> None:
        self.sent.append((key, value))

    def close(self) -> None:
        pass


class KafkaAckSink:
    """A kafka-python producer on the ``halt_acks`` topic; ``on_error`` hears of failed
    deliveries (called on the producer's I/O thread)."""

    def __init__(self, brokers: str, topic: str, *,
                 on_error: Callable[[BaseException], None] | None = None,
                 on_sent: Callable[[], None] | None = None) -> None:
        from kafka import KafkaProducer

        self.topic = topic
        self.on_error, self.on_sent = on_error, on_sent
        wanted = {"bootstrap_servers": brokers.split(","), "acks": "all", "linger_ms": 5,
                  "retries": 3, "max_block_ms": 5_000, "request_timeout_ms": 10_000,
                  "delivery_timeout_ms": 30_000,
                  # same key, same record: idempotence buys nothing (and Tansu refuses it)
                  "enable_idempotence": False}
        self.producer = KafkaProducer(**{k: v for k, v in wanted.items()
                                         if k in KafkaProducer.DEFAULT_CONFIG})

    def send(self, key: bytes, value: bytes) -> None:
        future = self.producer.send(self.topic, key=key, value=value)
        if self.on_error is not None:
            future.add_errback(self.on_error)
        if self.on_sent is not None:
            on_sent = self.on_sent
            future.add_callback(lambda _meta: on_sent())

    def close(self) -> None:
        self.producer.close(timeout=5)


@dataclass
class AckCounters:
    """What became of the acknowledgements (``sent`` = confirmed by the sink)."""

    acknowledged: int = 0
    handed_off: int = 0
    sent: int = 0
    failed: int = 0
    dropped: int = 0
    other_venue: int = 0


class HaltAcks:
    """Publishes a ``halt_ack/1`` for each halt its exchange applied (see the module notes).

    Parameters
    ----------
    sink
        An :class:`AckSink`, or a factory making one on the sender thread (retried every
        ``retry_s`` while it fails: the broker may not be up yet).
    exchange
        This exchange's id (``exchange`` of every record, first part of the key).
    venues
        Acknowledge only halts of these venues (the ones the exchange runs); ``None`` = all.
    max_queue
        Acknowledgements waiting for the sink; beyond, newer ones are dropped and counted.
    wall_clock
        Epoch seconds for ``applied_at``.
    """

    def __init__(self, sink: AckSink | Callable[[], AckSink], *, exchange: str,
                 venues: Iterable[str] | None = None, max_queue: int = 10_000,
                 retry_s: float = 1.0, wall_clock: Callable[[], float] = time.time) -> None:
        self.exchange = exchange
        self.venues = None if venues is None else frozenset(venues)
        self.retry_s, self.wall_clock = retry_s, wall_clock
        self.counters = AckCounters()
        self._sink: AckSink | None = sink if isinstance(sink, AckSink) else None
        self._factory = None if isinstance(sink, AckSink) else sink
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max_queue)
        self._thread: threading.Thread | None = None
        self._closing = threading.Event()
        self._problems = ThrottledLog(log)

    @classmethod
    def from_settings(cls, settings: Any, *, exchange: str,
                      venues: Iterable[str] | None = None) -> HaltAcks:
        """Acknowledgements on ``settings``' brokers and ``halt_acks`` topic."""
        acks: HaltAcks

        def sink() -> AckSink:
            return KafkaAckSink(settings.brokers, settings.topics.halt_acks,
                                on_error=acks._failed, on_sent=acks._confirmed)

        acks = cls(sink, exchange=exchange, venues=venues)
        return acks

    def record(self, halt: Halt, effective: str | None = None) -> tuple[bytes, bytes]:
        """Key and value of the acknowledgement of ``halt``."""
        ack = HaltAck(exchange=self.exchange, venue=halt.venue, instrument=halt.instrument,
                      seq=halt.seq, state=halt.state, reason=halt.reason, ts=halt.ts,
                      applied_at=iso(self.wall_clock()), effective=effective)
        key = f"{self.exchange}/{halt.venue}/{halt.instrument}/{halt.seq}".encode()
        return key, msgspec.json.encode(ack)

    def __call__(self, halt: Halt, effective: str) -> None:
        """``HaltBook(on_applied=…)``: queue the acknowledgement; never blocks, never raises."""
        if self.venues is not None and halt.venue not in self.venues:
            self.counters.other_venue += 1
            return
        self.counters.acknowledged += 1
        try:
            self._queue.put_nowait(self.record(halt, effective))
        except queue.Full:
            self.counters.dropped += 1
            self._report("acknowledgement queue full: dropped the ack of %s/%s seq %d",
                         halt.venue, halt.instrument, halt.seq)

    # ------------------------------------------------------------------ sender thread
    def start(self) -> HaltAcks:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="halt-acks", daemon=True)
            self._thread.start()
        return self

    def close(self, timeout: float = 10.0) -> None:
        """Send what is queued (within ``timeout``), then close the sink."""
        thread, self._thread = self._thread, None
        self._closing.set()  # a sink that cannot be made is not waited for
        if thread is not None:
            try:
                self._queue.put(_STOP, timeout=timeout)
            except queue.Full:
                log.warning("halt acks: queue still full at close; %d not sent",
                            self._queue.qsize())
            thread.join(timeout)
        sink, self._sink = self._sink, None
        if sink is not None:
            try:
                sink.close()
            except Exception:
                log.exception("halt acks: closing the sink failed")
        log.info("halt acks: %s", self.counters)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            key, value = item
            while self._sink is None and self._factory is not None:
                try:
                    self._sink = self._factory()
                except Exception as exc:  # noqa: BLE001 - the broker may not be up yet
                    self._report("halt acks: cannot reach the sink (%s); retrying", exc)
                    if self._closing.wait(self.retry_s):
                        return
            if self._sink is None:
                return
            try:
                self._sink.send(key, value)
            except Exception as exc:  # noqa: BLE001 - count it; trading goes on
                self._failed(exc)
                continue
            self.counters.handed_off += 1
            if not isinstance(self._sink, KafkaAckSink):
                self.counters.sent += 1

    def _confirmed(self) -> None:
        self.counters.sent += 1

    def _failed(self, exc: BaseException) -> None:
        self.counters.failed += 1
        self._report("halt acks: an acknowledgement was not written (%s)", exc)

    def _report(self, msg: str, *args: Any) -> None:
        """One throttled stream of warnings for every problem of the acknowledgements."""
        self._problems.warning("acks", msg, *args)
