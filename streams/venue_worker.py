"""Stage 2 as a process: :class:`~streams.venue.VenueStage` as a consumer-group member of ``flows``
(one checkpointed state per ``flows`` partition) that also reads the registry (``agents``).

Like stage 1 (:mod:`streams.worker`): results are confirmed delivered before a state that
reflects them is checkpointed with its offset; a failed delivery rolls the partition back to its
last checkpoint; an assignment restores the newest checkpoint.
"""

from __future__ import annotations

import asyncio
import logging
import pickle
import time
import zlib
from collections.abc import Sequence
from typing import Any

from streams.checkpoint import CheckpointStore, checkpoint_key
from streams.contracts import encode
from streams.outputs import DeliveryError, KafkaSink, Record, halt_record
from streams.settings import Settings
from streams.venue import VenueOutput, VenueStage
from streams.worker import rebalance_listener

__all__ = ["VenueWorker"]

log = logging.getLogger("surveil.venue")


class VenueWorker:
    """Runs :class:`VenueStage` on ``flows`` (one checkpointed state per ``flows`` partition)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.stages: dict[int, VenueStage] = {}
        self.good: dict[int, tuple[bytes, int]] = {}
        self.saved_at: dict[int, float] = {}
        self.lock = asyncio.Lock()
        self.consumer: Any = None
        self.store: CheckpointStore | None = None
        self.sink: KafkaSink | None = None
        self.metrics = 0
        self.alerts = 0
        self.trades_partitions = 1

    async def run(self, stop: asyncio.Event) -> None:
        from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

        s, topics = self.settings, self.settings.topics
        producer = AIOKafkaProducer(bootstrap_servers=s.brokers, acks="all", linger_ms=5,
                                    enable_idempotence=False, request_timeout_ms=15_000,
                                    max_request_size=max(s.max_message_bytes, 1 << 20) + 4096)
        await producer.start()
        self.sink = KafkaSink(producer)
        self.store = CheckpointStore(bootstrap=s.brokers, topic=topics.checkpoints,
                                     group=s.group_id + ".venue", source_topic=topics.flows,
                                     key=checkpoint_key(s.data_dir, s.checkpoint_key),
                                     send=self.sink.send_one)
        session_ms = int(s.session_timeout_s * 1000)
        consumer = self.consumer = AIOKafkaConsumer(
            bootstrap_servers=s.brokers, group_id=s.group_id + ".venue", enable_auto_commit=False,
            auto_offset_reset="earliest", fetch_max_wait_ms=100, session_timeout_ms=session_ms,
            heartbeat_interval_ms=max(1000, session_ms // 10), max_poll_interval_ms=600_000)
        await consumer.start()
        parts = consumer.partitions_for_topic(topics.checkpoints)
        self.store.partitions = len(parts) if parts else 1
        inputs = consumer.partitions_for_topic(topics.trades)
        self.trades_partitions = len(inputs) if inputs else 1
        consumer.subscribe([topics.flows], listener=rebalance_listener(self))
        registry: Any = None
        try:
            registry = AIOKafkaConsumer(topics.agents, bootstrap_servers=s.brokers,
                                        auto_offset_reset="earliest", enable_auto_commit=False,
                                        fetch_max_wait_ms=100)
            await registry.start()
            last_log = time.monotonic()
            while not stop.is_set():
                batch = await consumer.getmany(timeout_ms=200, max_records=500)
                agents = await registry.getmany(timeout_ms=0, max_records=1000)
                async with self.lock:
                    for records in agents.values():
                        for r in records:
                            for stage in self.stages.values():
                                stage.registry(r.value)
                    for tp in sorted(batch, key=lambda t: t.partition):
                        await self._handle(tp.partition, batch[tp])
                    await self._checkpoint_due()
                if time.monotonic() - last_log >= 10:
                    last_log = time.monotonic()
                    self._log_counters("venue stage")
        finally:
            async with self.lock:
                for p in sorted(self.stages):
                    await self._checkpoint(p)
            self._log_counters("venue stage stopped")
            if registry is not None:
                await registry.stop()
            await consumer.stop()
            await producer.stop()

    def _log_counters(self, what: str) -> None:
        """Metrics, alerts and each flows partition's counters (late input shows here)."""
        parts = {p: st.report() for p, st in sorted(self.stages.items())}
        log.info("%s: metrics=%d alerts=%d counters=%s", what, self.metrics, self.alerts,
                 {p: c for p, c in parts.items() if c})

    async def _handle(self, p: int, records: Sequence[Any]) -> None:
        stage = self.stages.get(p)
        if stage is None:
            return
        fresh = [r for r in records if stage.next_offset is None or r.offset >= stage.next_offset]
        if not fresh:
            return
        out = VenueOutput()
        for r in fresh:
            out.extend(stage.handle(r.value))
        stage.next_offset = fresh[-1].offset + 1
        topics = self.settings.topics
        recs: list[Record] = [(topics.structure, m.venue.encode(), encode(m)) for m in out.metrics]
        recs += [(topics.alerts, a.alert_id.encode(), encode(a)) for a in out.alerts]
        recs += [halt_record(self.settings, h) for h in out.halts]  # signed
        try:
            assert self.sink is not None
            await self.sink.deliver(recs)
        except DeliveryError as exc:
            log.warning("venue stage: results not delivered (%s); rolling back", exc)
            await self._rollback(p)
            return
        self.metrics += len(out.metrics)
        self.alerts += len(out.alerts)

    async def _rollback(self, p: int) -> None:
        from aiokafka import TopicPartition

        blob, offset = self.good[p]
        self.stages[p] = pickle.loads(zlib.decompress(blob))  # noqa: S301 - our own bytes
        self.consumer.seek(TopicPartition(self.settings.topics.flows, p), offset)
        await asyncio.sleep(0.5)

    async def _checkpoint_due(self) -> None:
        now = time.monotonic()
        for p in sorted(self.stages):
            if now - self.saved_at.get(p, 0.0) >= self.settings.checkpoint_interval_s:
                await self._checkpoint(p)

    async def _checkpoint(self, p: int) -> None:
        from aiokafka import TopicPartition

        self.saved_at[p] = time.monotonic()
        stage = self.stages.get(p)
        if stage is None or stage.next_offset is None:
            return
        offset = stage.next_offset
        if self.good.get(p, (b"", -1))[1] == offset:
            return
        blob = zlib.compress(pickle.dumps(stage, protocol=pickle.HIGHEST_PROTOCOL), 3)
        assert self.store is not None
        try:
            await self.store.save(p, offset, blob)
            await self.consumer.commit({TopicPartition(self.settings.topics.flows, p): offset})
        except Exception as exc:  # noqa: BLE001 - retried at the next interval
            log.warning("venue stage: checkpoint of partition %d failed: %r", p, exc)
            return
        self.good[p] = (blob, offset)

    async def assigned(self, partitions: Sequence[Any]) -> None:
        async with self.lock:
            for tp in partitions:
                assert self.store is not None
                found = await self.store.load(tp.partition)
                if found is not None:
                    blob, offset = found
                    stage = pickle.loads(zlib.decompress(blob))  # noqa: S301 - authenticated
                    self.consumer.seek(tp, offset)
                else:
                    committed = await self.consumer.committed(tp)
                    if committed is None:
                        committed = (await self.consumer.beginning_offsets([tp]))[tp]
                    offset = int(committed)
                    self.consumer.seek(tp, offset)
                    stage = VenueStage()
                    stage.next_offset = offset
                    blob = zlib.compress(pickle.dumps(stage), 3)
                stage.partitions_total = self.trades_partitions
                self.stages[tp.partition] = stage
                self.good[tp.partition] = (blob, offset)
                log.info("venue stage: flows partition %d from offset %d", tp.partition, offset)

    async def revoked(self, partitions: Sequence[Any]) -> None:
        async with self.lock:
            for tp in partitions:
                await self._checkpoint(tp.partition)
                self.stages.pop(tp.partition, None)
                self.good.pop(tp.partition, None)
