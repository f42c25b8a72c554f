"""The stage-1 worker loop: trades in; results out, confirmed; state checkpointed with offsets.

One consumer-group member reads ``trades`` (aiokafka, the client Faust wraps). For each fetched
batch of one partition it decodes the messages, judges them with the engine on a dedicated thread
(so fetching goes on), and hands the results to the sink, which returns only when the broker has
acknowledged every record. Then:

- every ``checkpoint_interval_s`` (wall clock) the partition's engine state is written to the
  checkpoint topic together with the offset of the next unread message, and only after that is
  the offset committed to the consumer group (:mod:`streams.checkpoint`);
- if a delivery fails, the partition's state is rolled back to its last checkpoint and the
  consumer seeks back to that checkpoint's offset: the batch is judged again, and its results
  (deterministic ids, deterministic halt ``seq``) are sent again. Nothing is marked seen before
  its results are delivered, because "seen" is part of the state that rolls back;
- on assignment (start, restart after ``kill -9``, rebalance) the newest checkpoint of each
  partition is restored and the consumer seeks to its offset; messages the restored state
  already reflects are skipped. On revocation the partition is checkpointed and dropped.

So a crash at any moment repeats some results (the same ids) and loses none, and a restart —
on the same worker or another — continues exactly where the checkpointed state left off.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import msgspec

from streams.app_messages import RawMessage, decode_messages
from streams.contracts import Rejected
from streams.heartbeat import send_heartbeat
from streams.member import CheckpointCounters, CheckpointedMember, rebalance_listener
from streams.outputs import DeliveryError, KafkaSink, Sink, to_records
from streams.pipeline import EngineOutput, Surveillance
from streams.settings import Settings

__all__ = ["Worker", "WorkerCounters"]

log = logging.getLogger("surveil.worker")


@dataclass(slots=True)
class WorkerCounters(CheckpointCounters):
    messages: int = 0
    trades: int = 0
    rejected: int = 0
    duplicates: int = 0
    alerts: int = 0
    halts: int = 0
    batches: int = 0
    config_applied: int = 0
    config_rejected: int = 0
    busy_s: float = 0.0


class Worker(CheckpointedMember):
    """Stage 1 of the pipeline as a consumer-group member (see the module docs)."""

    label = "trades partition"

    counters: WorkerCounters

    def __init__(self, settings: Settings, *, engine: Surveillance | None = None,
                 sink: Sink | None = None) -> None:
        super().__init__(settings, settings.topics.trades, log, WorkerCounters())
        self.engine = engine or Surveillance(engine=settings.engine_config())
        self.sink = sink
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="surveil-engine")
        self.inflight: dict[int, list[asyncio.Future[None]]] = {}
        self.ready = asyncio.Event()

    # ------------------------------------------------------------------ lifecycle
    async def run(self, stop: asyncio.Event) -> None:
        from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

        s, topics = self.settings, self.settings.topics
        producer = AIOKafkaProducer(bootstrap_servers=s.brokers, acks="all", linger_ms=5,
                                    max_request_size=max(s.max_message_bytes, 1 << 20) + 4096,
                                    enable_idempotence=False, request_timeout_ms=15_000)
        await producer.start()
        kafka = KafkaSink(producer)
        self.sink = self.sink or kafka
        store = self.open_store(s.group_id, kafka.send_one)
        session_ms = int(s.session_timeout_s * 1000)
        consumer = self.consumer = AIOKafkaConsumer(
            bootstrap_servers=s.brokers, group_id=s.group_id, enable_auto_commit=False,
            auto_offset_reset="earliest", fetch_max_wait_ms=50,
            max_partition_fetch_bytes=64 << 20, fetch_max_bytes=64 << 20,
            session_timeout_ms=session_ms, heartbeat_interval_ms=max(1000, session_ms // 10),
            max_poll_interval_ms=600_000)
        await consumer.start()
        parts = consumer.partitions_for_topic(topics.checkpoints)
        store.partitions = len(parts) if parts else 1
        consumer.subscribe([topics.trades], listener=rebalance_listener(self))
        # runtime settings: read to the end before the first trade, then kept up with
        config = AIOKafkaConsumer(topics.config, bootstrap_servers=s.brokers,
                                  auto_offset_reset="earliest", enable_auto_commit=False,
                                  fetch_max_wait_ms=50)
        await config.start()
        while (found := await config.getmany(timeout_ms=1000)):
            async with self.lock:
                await self._configure(found)
        next_tick = last_log = time.monotonic()
        try:
            while not stop.is_set():
                batch = await consumer.getmany(timeout_ms=100,
                                               max_records=max(1, s.batch_messages))
                changes = await config.getmany(timeout_ms=0)
                async with self.lock:
                    self.ready.set()
                    if changes:
                        await self._configure(changes)
                    await self._check_inflight()
                    for tp in sorted(batch, key=lambda t: t.partition):
                        await self._handle(tp, batch[tp])
                    now = time.monotonic()
                    if now >= next_tick:
                        next_tick = now + 1.0
                        await self._deliver_tick()
                        # -- heartbeat/1 on the halts topic (streams.heartbeat) --
                        await send_heartbeat(self)
                    await self.checkpoint_due()
                if time.monotonic() - last_log >= 10:
                    last_log = time.monotonic()
                    log.info("worker: %s", self.counters)
            await self._final_checkpoint()
        except asyncio.CancelledError:
            await asyncio.shield(self._final_checkpoint())
            raise
        finally:
            await config.stop()
            await consumer.stop()
            await producer.stop()
            self.executor.shutdown(wait=False)

    async def _configure(self, found: dict[Any, list[Any]]) -> None:
        """Runtime setting changes from ``config``: validated, applied from their effective
        time on (:mod:`streams.runtime_config`); a bad one goes to the dead-letter topic with
        its reason, whole."""
        from streams.runtime_config import ConfigError, validate

        rejected: list[Rejected] = []
        for tp in sorted(found, key=lambda t: t.partition):
            for r in found[tp]:
                try:
                    doc = msgspec.json.decode(r.value or b"")
                    if not isinstance(doc, dict):
                        raise ConfigError("not a JSON object")
                    change = validate(doc, self.engine.config)
                except (msgspec.DecodeError, ConfigError) as exc:
                    self.counters.config_rejected += 1
                    rejected.append(Rejected(f"bad_config: {exc}", r.value or b"", None, {
                        "topic": r.topic, "partition": r.partition, "offset": r.offset,
                        "key": (r.key or b"").decode(errors="replace")}))
                    continue
                late = self.engine.configure(change)
                self.counters.config_applied += 1
                log.info("runtime settings %s for %s from %s by %s%s", change.settings,
                         change.scope, change.effective_ts, change.user,
                         " (arrived late: applies from the next trade)" if late else "")
        if rejected:
            assert self.sink is not None
            await self.sink.deliver(to_records(self.settings, EngineOutput(), rejected,
                                               flows_key=self.key))

    async def _final_checkpoint(self) -> None:
        await self.checkpoint_all()
        log.info("worker stopped: %s", self.counters)

    # ------------------------------------------------------------------ batches
    def _judge(self, partition: int, msgs: list[RawMessage]) -> tuple[Any, EngineOutput, int]:
        trades, rejected, sources = decode_messages(msgs, with_sources=True)
        out = self.engine.process(trades, partition=partition, sources=sources,
                                  next_offset=msgs[-1].offset + 1)
        return rejected, out, len(trades)

    async def _handle(self, tp: Any, records: Sequence[Any]) -> None:
        p = tp.partition
        if p not in self.engine.partitions or not records:
            return  # revoked meanwhile
        msgs = [RawMessage(r.value, r.topic, r.partition, r.offset, r.key)
                for r in self.unread(p, records)]
        if not msgs:
            return
        began = time.perf_counter()
        rejected, out, n = await asyncio.get_running_loop().run_in_executor(
            self.executor, self._judge, p, msgs)
        assert self.sink is not None
        # handed over in order now, confirmed in the background: the next batch is judged
        # while this one's acknowledgements come back; nothing is checkpointed (so no offset
        # is committed) before they have all come back
        try:
            confirm = await self.sink.submit(to_records(self.settings, out, rejected,
                                                        flows_key=self.key))
        except DeliveryError as exc:
            log.warning("partition %d: results not handed over (%s); rolling back to the last "
                        "checkpoint", p, exc)
            await self.rollback(p)
            return
        self.inflight.setdefault(p, []).append(asyncio.ensure_future(confirm))
        if len(self.inflight[p]) > 8:
            await self.settle(p)
        c = self.counters
        c.messages += len(msgs)
        c.trades += n
        c.rejected += len(rejected) + len(out.rejected)
        c.duplicates += out.duplicates
        c.alerts += len(out.alerts)
        c.halts += len(out.halts)
        c.batches += 1
        c.busy_s += time.perf_counter() - began
        for h in out.halts:
            log.info("halt %s %s %s seq=%s ts=%s", h.instrument, h.state, h.reason, h.seq, h.ts)

    async def settle(self, p: int) -> bool:
        """Wait for every in-flight delivery of partition ``p``; on a failure roll back."""
        pending = self.inflight.pop(p, [])
        if not pending:
            return True
        results = await asyncio.gather(*pending, return_exceptions=True)
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:
            log.warning("partition %d: results not delivered (%r); rolling back to the last "
                        "checkpoint", p, failed[0])
            await self.rollback(p)
            return False
        return True

    async def _check_inflight(self) -> None:
        """Roll back early when a background delivery has already failed."""
        for p in sorted(self.inflight):
            if any(f.done() and not f.cancelled() and f.exception() is not None
                   for f in self.inflight[p]):
                await self.settle(p)

    async def _deliver_tick(self) -> None:
        for p in sorted(self.inflight):  # the timers see every partition's state
            await self.settle(p)
        out = self.engine.tick(backlogged=await self._backlogged())
        if not len(out):
            return
        try:
            assert self.sink is not None
            await self.sink.deliver(to_records(self.settings, out, flows_key=self.key))
        except DeliveryError as exc:
            log.warning("heartbeat results not delivered (%s); rolling back", exc)
            for p in sorted(self.engine.partitions):
                await self.rollback(p)
            return
        self.counters.halts += len(out.halts)
        for h in out.halts:
            log.info("halt %s %s %s seq=%s ts=%s (watermark)", h.instrument, h.state, h.reason,
                     h.seq, h.ts)

    async def _backlogged(self) -> set[int]:
        """Partitions with records not yet consumed: silent to the engine, but not idle (an
        idle partition's watermark follows the others, which would make its backlog late).
        A partition not fetched yet (end unknown) counts as backlogged."""
        from aiokafka import TopicPartition

        out: set[int] = set()
        if self.consumer is None:
            return out
        for p in self.engine.partitions:
            tp = TopicPartition(self.settings.topics.trades, p)
            try:
                high = self.consumer.highwater(tp)
                position = await self.consumer.position(tp) if high is not None else None
            except Exception:  # noqa: BLE001 - not assigned (any more): not backlogged here
                continue
            if high is None or (position is not None and position < high):
                out.add(p)
        return out

    # ------------------------------------------------------------------ state (CheckpointedMember)
    def owned(self) -> list[int]:
        return list(self.engine.partitions)

    def next_offset(self, p: int) -> int | None:
        state = self.engine.partitions.get(p)
        return None if state is None else state.next_offset

    async def snapshot(self, p: int) -> bytes:
        return await asyncio.get_running_loop().run_in_executor(self.executor,
                                                                 self.engine.snapshot, p)

    def restore(self, p: int, blob: bytes) -> None:
        self.engine.restore(p, blob)

    def start_fresh(self, p: int, offset: int) -> bytes:
        self.engine.state(p).next_offset = offset
        return self.engine.snapshot(p)

    def drop(self, p: int) -> None:
        self.engine.drop(p)

    def forget_inflight(self, p: int) -> None:
        for f in self.inflight.pop(p, []):
            f.cancel()
