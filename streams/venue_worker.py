"""Stage 2 as a process: :class:`~streams.venue.VenueStage` as a consumer-group member of ``flows``
(one checkpointed state per ``flows`` partition) that also reads the registry (``agents``).

Like stage 1 (:mod:`streams.worker`; both are :class:`~streams.member.CheckpointedMember`):
results are confirmed delivered before a state that reflects them is checkpointed with its
offset; a failed delivery rolls the partition back to its last checkpoint; an assignment restores
the newest checkpoint.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

from detectors.registry import AgentBook
from streams.contracts import encode
from streams.member import CheckpointCounters, CheckpointedMember, rebalance_listener
from streams.outputs import DeliveryError, KafkaSink, Record, halt_record
from streams.sealed import unseal
from streams.settings import Settings
from streams.venue import VenueOutput, VenueStage, read_agent, restore_stage, snapshot_stage

__all__ = ["VenueWorker"]

log = logging.getLogger("surveil.venue")

#: At most this long reading the registry before the first flows record.
REGISTRY_CATCH_UP_S = 30.0


class VenueWorker(CheckpointedMember):
    """Runs :class:`VenueStage` on ``flows`` (one checkpointed state per ``flows`` partition)."""

    label = "venue stage: flows partition"

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings, settings.topics.flows, log, CheckpointCounters())
        self.stages: dict[int, VenueStage] = {}
        self.sink: KafkaSink | None = None
        self.metrics = 0
        self.alerts = 0
        self.trades_partitions = 1
        #: every registry entry read (bounded), for partitions assigned or rolled back later
        self.agents = AgentBook()
        self.bad_agents = 0
        #: ``flows`` records not sealed with the deployment's key (``key``): ignored
        self.unsealed = 0

    async def run(self, stop: asyncio.Event) -> None:
        from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

        s, topics = self.settings, self.settings.topics
        producer = AIOKafkaProducer(bootstrap_servers=s.brokers, acks="all", linger_ms=5,
                                    enable_idempotence=False, request_timeout_ms=15_000,
                                    max_request_size=max(s.max_message_bytes, 1 << 20) + 4096)
        await producer.start()
        self.sink = KafkaSink(producer)
        store = self.open_store(s.group_id + ".venue", self.sink.send_one)
        session_ms = int(s.session_timeout_s * 1000)
        consumer = self.consumer = AIOKafkaConsumer(
            bootstrap_servers=s.brokers, group_id=s.group_id + ".venue", enable_auto_commit=False,
            auto_offset_reset="earliest", fetch_max_wait_ms=100, session_timeout_ms=session_ms,
            heartbeat_interval_ms=max(1000, session_ms // 10), max_poll_interval_ms=600_000)
        await consumer.start()
        parts = consumer.partitions_for_topic(topics.checkpoints)
        store.partitions = len(parts) if parts else 1
        inputs = consumer.partitions_for_topic(topics.trades)
        self.trades_partitions = len(inputs) if inputs else 1
        registry: Any = None
        try:
            registry = AIOKafkaConsumer(topics.agents, bootstrap_servers=s.brokers,
                                        auto_offset_reset="earliest", enable_auto_commit=False,
                                        fetch_max_wait_ms=100)
            await registry.start()
            # the registry as it stands, before the first window closes (bounded in time: a
            # producer flooding it cannot keep the stage from starting)
            began = time.monotonic()
            while (found := await registry.getmany(timeout_ms=1000, max_records=10_000)):
                self._registry(found)
                if time.monotonic() - began > REGISTRY_CATCH_UP_S:
                    break
            log.info("venue stage: %d registry entries read before the first window",
                     len(self.agents))
            consumer.subscribe([topics.flows], listener=rebalance_listener(self))
            last_log = time.monotonic()
            while not stop.is_set():
                batch = await consumer.getmany(timeout_ms=200, max_records=500)
                agents = await registry.getmany(timeout_ms=0, max_records=1000)
                async with self.lock:
                    self._registry(agents)
                    for tp in sorted(batch, key=lambda t: t.partition):
                        await self._handle(tp.partition, batch[tp])
                    await self.checkpoint_due()
                if time.monotonic() - last_log >= 10:
                    last_log = time.monotonic()
                    self._log_counters("venue stage")
        finally:
            await self.checkpoint_all()
            self._log_counters("venue stage stopped")
            if registry is not None:
                await registry.stop()
            await consumer.stop()
            await producer.stop()

    def _registry(self, found: dict[Any, list[Any]]) -> None:
        """``agents`` records: into this worker's book (so a partition assigned or rolled back
        later gets them too) and into every stage's."""
        for tp in sorted(found, key=lambda t: t.partition):
            for r in found[tp]:
                entry = read_agent(r.value)
                if entry is None:
                    self.bad_agents += 1
                    continue
                self.agents.observe(*entry)
                for stage in self.stages.values():
                    stage.agents.observe(*entry)

    def _log_counters(self, what: str) -> None:
        """Metrics, alerts and each flows partition's counters (late input shows here)."""
        parts = {p: st.report() for p, st in sorted(self.stages.items())}
        log.info("%s: metrics=%d alerts=%d unsealed=%d registry=%d (bad %d, dropped %d) %s "
                 "counters=%s", what, self.metrics, self.alerts, self.unsealed, len(self.agents),
                 self.bad_agents, self.agents.dropped, self.counters,
                 {p: c for p, c in parts.items() if c})

    async def _handle(self, p: int, records: Sequence[Any]) -> None:
        stage = self.stages.get(p)
        if stage is None:
            return
        fresh = self.unread(p, records)
        if not fresh:
            return
        out = VenueOutput()
        for r in fresh:
            payload = unseal(self.key, r.value)
            if payload is None:
                self.unsealed += 1
                if self.unsealed == 1:
                    log.warning("venue stage: a flows record at offset %d of partition %d is "
                                "not sealed with this deployment's key; ignored (counted as "
                                "unsealed)", r.offset, p)
                continue
            out.extend(stage.handle(payload))
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
            await self.rollback(p)
            return
        self.metrics += len(out.metrics)
        self.alerts += len(out.alerts)

    # ------------------------------------------------------------------ state (CheckpointedMember)
    def owned(self) -> list[int]:
        return list(self.stages)

    def next_offset(self, p: int) -> int | None:
        stage = self.stages.get(p)
        return None if stage is None else stage.next_offset

    async def snapshot(self, p: int) -> bytes:
        return snapshot_stage(self.stages[p])

    def restore(self, p: int, blob: bytes) -> None:
        self._adopt(p, restore_stage(blob))

    def start_fresh(self, p: int, offset: int) -> bytes:
        stage = VenueStage()
        stage.next_offset = offset
        self._adopt(p, stage)
        return snapshot_stage(stage)

    def _adopt(self, p: int, stage: VenueStage) -> None:
        """Own ``stage`` for partition ``p``, with every registry entry read so far (a
        checkpoint holds those read when it was written; applying them again is harmless)."""
        stage.partitions_total = self.trades_partitions
        stage.agents.update(self.agents)
        self.stages[p] = stage

    def drop(self, p: int) -> None:
        self.stages.pop(p, None)
