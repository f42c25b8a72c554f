"""Publishing trades to Kafka in batches: one JSON array per message, key = instrument.

Used by ``surveil replay`` (a tape, in event-time order, at a chosen speed), by the live
synthetic feed of ``surveil up`` and by the benchmark.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import chain

from kafka import KafkaProducer

from streams.contracts import Trade, encode

__all__ = ["MAX_SPAN_S", "BatchPublisher", "pace", "pace_stream", "to_messages"]

#: Event seconds one chunk spans at most when publishing as fast as possible (under the
#: engine's default ``out_of_order_s`` of 2 s).
MAX_SPAN_S = 1.0


def to_messages(trades: Sequence[Trade], *, max_batch: int = 500) -> list[tuple[bytes, bytes]]:
    """Group trades into ``(key, value)`` messages: per instrument, arrival order kept.

    >>> t = [Trade(ts=1.0, trade_id=str(i), instrument="AB"[i % 2], price=1.0, qty=1.0,
    ...            buyer="a", seller="b") for i in range(5)]
    >>> [(k, v.count(b'trade_id')) for k, v in to_messages(t, max_batch=2)]
    [(b'A', 2), (b'A', 1), (b'B', 2)]
    """
    groups: dict[str, list[Trade]] = {}
    for t in trades:
        groups.setdefault(t.instrument, []).append(t)
    out = []
    for instrument, group in groups.items():
        key = instrument.encode()
        for i in range(0, len(group), max_batch):
            out.append((key, encode(group[i:i + max_batch])))
    return out


def pace(trades: Sequence[Trade], speed: float | None, *, chunk_s: float = 0.05,
         max_batch: int = 2000) -> Iterable[list[Trade]]:
    """Yield chunks of event-time-ordered trades, sleeping to keep ``speed``× event time.

    ``speed=None`` means as fast as possible (chunks of ``max_batch``). See :func:`pace_stream`
    for trades that arrive as a stream.
    """
    return pace_stream(trades, speed, chunk_s=chunk_s, max_batch=max_batch)


def pace_stream(trades: Iterable[Trade], speed: float | None, *, chunk_s: float = 0.05,
                max_batch: int = 2000) -> Iterator[list[Trade]]:
    """:func:`pace` for any iterable, consumed lazily (a tape read in chunks, a generator).

    The event clock starts at the first trade; a chunk ends when the next trade is more than
    ``chunk_s × speed`` event seconds past the chunk's start or holds ``max_batch`` trades.
    As fast as possible (``speed=None``) a chunk spans at most :data:`MAX_SPAN_S` of event
    time: its messages group trades per instrument, so a thin tape's chunk of ``max_batch``
    trades could otherwise put one instrument minutes ahead of another in a shared partition,
    more disorder than the engine tolerates (``out_of_order_s``).

    >>> t = (Trade(ts=float(i), trade_id=str(i), instrument="A", price=1.0, qty=1.0, buyer="a",
    ...            seller="b") for i in range(5))
    >>> [len(c) for c in pace_stream(t, None, max_batch=2)]
    [2, 2, 1]
    """
    it = iter(trades)
    if speed is None:  # as fast as possible: parts of max_batch trades and MAX_SPAN_S at most
        part: list[Trade] = []
        horizon = -math.inf
        for t in it:
            ts = float(t.ts)
            if part and (ts > horizon or len(part) >= max_batch):
                yield part
                part = []
            if not part:
                horizon = ts + MAX_SPAN_S
            part.append(t)
        if part:
            yield part
        return
    first = next(it, None)
    if first is None:
        return
    t0_event, t0_wall = float(first.ts), time.monotonic()
    chunk: list[Trade] = []
    horizon = t0_event
    for t in chain([first], it):
        ts = float(t.ts)
        if ts > horizon or len(chunk) >= max_batch:
            if chunk:
                yield chunk
                chunk = []
            due = t0_wall + (ts - t0_event) / speed
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            horizon = ts + chunk_s * speed
        chunk.append(t)
    if chunk:
        yield chunk


@dataclass
class BatchPublisher:
    """A kafka-python producer that sends trade batches and counts what it sent."""

    brokers: str
    topic: str
    max_batch: int = 500
    sent_trades: int = 0
    sent_messages: int = 0

    def __post_init__(self) -> None:
        self.producer = KafkaProducer(bootstrap_servers=self.brokers.split(","), linger_ms=5,
                                      acks=1, batch_size=1 << 20, max_request_size=16 << 20,
                                      retries=5)

    def send(self, trades: Sequence[Trade],
             on_sent: Callable[[int], None] | None = None) -> None:
        for key, value in to_messages(trades, max_batch=self.max_batch):
            self.producer.send(self.topic, key=key, value=value)
            self.sent_messages += 1
        self.sent_trades += len(trades)
        if on_sent is not None:
            on_sent(len(trades))

    def send_raw(self, value: bytes, key: bytes | None = None) -> None:
        self.producer.send(self.topic, key=key, value=value)
        self.sent_messages += 1

    def flush(self) -> None:
        self.producer.flush()

    def close(self) -> None:
        self.producer.flush()
        self.producer.close()
