"""The Faust app factory: a thin agent around the surveillance engine.

One agent consumes ``trades`` in batches of Kafka messages (each message one trade or a JSON array
of trades), decodes them in bulk, sends what breaks the contract to ``trades.dlq`` (with the reason,
the original bytes and topic/partition/offset) and hands the valid trades to
:class:`streams.pipeline.Surveillance`. Alerts go to ``alerts`` (key = alert_id), halts to ``halts``
(key = instrument), one-second bars to ``bars`` (a JSON array per batch).

Delivery is at-least-once: Faust acks a batch only after the agent has handled it and flushes the
producer before committing offsets. Redelivered trades are recognised by (venue, trade_id) and
processed once; alert ids and halt sequence numbers are deterministic, so downstream sinks stay
idempotent.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

import faust

from detectors.market import MarketConfig
from streams.contracts import Rejected, Trade, decode_message, encode
from streams.pipeline import EngineOutput, Surveillance
from streams.settings import Settings
from streams.transport import SurveilApp

__all__ = [
    "MemorySink",
    "ProducerSink",
    "RawMessage",
    "Sink",
    "WorkerCounters",
    "create_app",
    "decode_messages",
    "publish_output",
]

log = logging.getLogger("surveil.worker")


@dataclass(frozen=True, slots=True)
class RawMessage:
    value: bytes | None
    topic: str = ""
    partition: int = -1
    offset: int = -1
    key: bytes | None = None

    @property
    def source(self) -> dict[str, Any]:
        key = self.key.decode("utf-8", "replace") if self.key is not None else None
        return {"topic": self.topic, "partition": self.partition, "offset": self.offset,
                "key": key}


@dataclass(slots=True)
class WorkerCounters:
    messages: int = 0
    trades: int = 0
    rejected: int = 0
    duplicates: int = 0
    alerts: int = 0
    halts: int = 0
    batches: int = 0
    busy_s: float = 0.0


def decode_messages(messages: Iterable[RawMessage]) -> tuple[list[Trade], list[Rejected]]:
    """Decode a batch of ``trades`` messages; never raises."""
    trades: list[Trade] = []
    rejected: list[Rejected] = []
    for msg in messages:
        if msg.value is None:
            rejected.append(Rejected("bad_json: empty message (no value)", b"", None, msg.source))
            continue
        ok, bad = decode_message(msg.value, msg.source)
        trades += ok
        rejected += bad
    return trades, rejected


class Sink(Protocol):
    """Where the worker's results go (the Faust producer live, a list in tests)."""

    async def send(self, topic: str, key: bytes | None, value: bytes) -> None: ...


class ProducerSink:
    """Sends through the Faust app's producer (buffered; flushed before offsets commit)."""

    def __init__(self, app: faust.App) -> None:
        self.app = app

    async def send(self, topic: str, key: bytes | None, value: bytes) -> None:
        await self.app.producer.send(topic, key, value, None, None, None)


@dataclass
class MemorySink:
    """Collects ``(topic, key, value)`` triples."""

    sent: list[tuple[str, bytes | None, bytes]] = field(default_factory=list)

    async def send(self, topic: str, key: bytes | None, value: bytes) -> None:
        self.sent.append((topic, key, value))


async def publish_output(sink: Sink, settings: Settings, out: EngineOutput,
                         rejected: Sequence[Rejected]) -> None:
    """Send a batch's results to their topics."""
    topics = settings.topics
    for r in rejected:
        key = (r.source.get("key") or "").encode()
        await sink.send(topics.dlq, key or None, encode(r.to_record()))
    for a in out.alerts:
        await sink.send(topics.alerts, a.alert_id.encode(), encode(a))
    for h in out.halts:
        await sink.send(topics.halts, h.instrument.encode(), encode(h))
    if out.bars:
        await sink.send(topics.bars, None, encode(out.bars))


def create_app(
    settings: Settings,
    *,
    engine: Surveillance | None = None,
    market: MarketConfig | None = None,
    sink: Sink | None = None,
) -> faust.App:
    """Build the worker's Faust app (no module-level app: tests build as many as they like)."""
    app = SurveilApp(
        settings.app_id,
        broker=[f"kafka://{b.strip()}" for b in settings.brokers.split(",") if b.strip()],
        value_serializer="raw",
        key_serializer="raw",
        store="memory://",
        autodiscover=False,
        web_enabled=False,
        topic_partitions=settings.partitions,
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=max(1.0, settings.session_timeout_s / 10),
        consumer_auto_offset_reset="earliest",
        producer_linger_ms=5,
        consumer_max_fetch_size=64 * 1024 * 1024,
        broker_max_poll_records=2000,
        stream_wait_empty=False,
    )
    surveillance = engine or Surveillance(market)
    output: Sink = sink or ProducerSink(app)
    counters = WorkerCounters()
    trades_topic = app.topic(settings.topics.trades, key_type=bytes, value_type=bytes,
                             value_serializer="raw", key_serializer="raw")
    last_log = [time.monotonic()]
    # Decoding and judging run on one dedicated thread, awaited batch by batch: the engine stays
    # single-threaded and in order, while Faust's event loop keeps fetching. (Running CPU-bound
    # batches on the loop itself starves Faust's fetcher: measured ~85 vs ~320 messages/s.)
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="surveil-engine")

    def judge_batch(msgs: list[RawMessage]) -> tuple[int, list[Rejected], EngineOutput]:
        trades, rejected = decode_messages(msgs)
        return len(trades), rejected, surveillance.process(trades)

    @app.agent(trades_topic, name="judge-trades")
    async def judge(stream: faust.StreamT[bytes]) -> None:
        async for events in stream.take_events(  # type: ignore[attr-defined]
                settings.batch_messages,
                within=settings.batch_within_s):
            began = time.perf_counter()
            msgs = [RawMessage(e.message.value, e.message.topic, e.message.partition,
                               e.message.offset, e.message.key) for e in events]
            n_trades, rejected, out = await asyncio.get_running_loop().run_in_executor(
                executor, judge_batch, msgs)
            await publish_output(output, settings, out, rejected)
            counters.messages += len(msgs)
            counters.trades += n_trades
            counters.rejected += len(rejected)
            counters.duplicates += out.duplicates
            counters.alerts += len(out.alerts)
            counters.halts += len(out.halts)
            counters.batches += 1
            counters.busy_s += time.perf_counter() - began
            for h in out.halts:
                log.info("halt %s %s %s seq=%s ts=%s", h.instrument, h.state, h.reason, h.seq,
                         h.ts)
            if time.monotonic() - last_log[0] >= 10:
                last_log[0] = time.monotonic()
                log.info("worker: %s", counters)

    app.surveillance = surveillance  # type: ignore[attr-defined]
    app.counters = counters  # type: ignore[attr-defined]
    app.judge = judge  # type: ignore[attr-defined]
    return app
