"""What both stage workers do with their state: a consumer-group member keeps one state per input
partition, checkpoints it with the offset it reflects, rolls it back when a delivery fails and
restores it on assignment.

:class:`CheckpointedMember` decides *when* (every ``checkpoint_interval_s``, on revocation, at
stop), keeps each partition's last good snapshot for rollbacks, and commits an input offset only
after the checkpoint that reflects it is stored (:mod:`streams.checkpoint`). A stage says *how*:
its snapshot, its restore, a fresh state, and whether its deliveries in flight are confirmed.
Stage 1 (:class:`streams.worker.Worker`) and stage 2 (:class:`streams.venue_worker.VenueWorker`)
are its two subclasses.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from streams.checkpoint import CheckpointStore, checkpoint_key
from streams.settings import Settings

__all__ = ["CheckpointCounters", "CheckpointedMember", "rebalance_listener"]



class _Positioned(Protocol):
    @property
    def offset(self) -> int: ...


R = TypeVar("R", bound=_Positioned)


@dataclass(slots=True)
class CheckpointCounters:
    rollbacks: int = 0
    checkpoints: int = 0
    restored: int = 0
    unreadable: int = 0


class CheckpointedMember:
    """Checkpoint, rollback and restore-on-assignment of per-partition state (module docs).

    Subclasses set ``source_topic`` (the input topic) and ``label`` (how log lines name one of
    its partitions), create ``consumer`` and ``store`` when they start, and implement the hooks
    below. Every call that changes states holds ``lock``.
    """

    label = "partition"

    def __init__(self, settings: Settings, source_topic: str, log: logging.Logger,
                 counters: CheckpointCounters) -> None:
        self.settings = settings
        self.source_topic = source_topic
        self.log = log
        self.counters = counters
        self.lock = asyncio.Lock()
        self.consumer: Any = None
        self.store: CheckpointStore | None = None
        #: the deployment's HMAC key: checkpoints, and stage 2's sealed input (streams.sealed)
        self.key: bytes | None = None
        self.last_good: dict[int, tuple[bytes, int]] = {}
        self.saved_at: dict[int, float] = {}
        self.logged: set[int] = set()
        self.rewound: set[int] = set()

    def open_store(self, group: str, send: Any) -> CheckpointStore:
        """The checkpoint store of this member (group ``group``), under the deployment's key."""
        s = self.settings
        self.key = checkpoint_key(s.data_dir, s.checkpoint_key)
        self.store = CheckpointStore(bootstrap=s.brokers, topic=s.topics.checkpoints, group=group,
                                     source_topic=self.source_topic, key=self.key, send=send)
        return self.store

    # ------------------------------------------------------------------ hooks
    def owned(self) -> Iterable[int]:
        """The input partitions whose state this member holds."""
        raise NotImplementedError

    def next_offset(self, p: int) -> int | None:
        """The offset of the first message partition ``p``'s state does not reflect yet."""
        raise NotImplementedError

    async def snapshot(self, p: int) -> bytes:
        raise NotImplementedError

    def restore(self, p: int, blob: bytes) -> None:
        raise NotImplementedError

    def start_fresh(self, p: int, offset: int) -> bytes:
        """A new state for partition ``p`` that reads from ``offset``; return its snapshot."""
        raise NotImplementedError

    def drop(self, p: int) -> None:
        raise NotImplementedError

    async def settle(self, p: int) -> bool:
        """Wait for partition ``p``'s deliveries in flight; False when one failed (and the
        partition was rolled back)."""
        return True

    def forget_inflight(self, p: int) -> None:
        """Abandon partition ``p``'s deliveries in flight (it is being rolled back)."""

    # ------------------------------------------------------------------ reading
    def unread(self, p: int, records: Sequence[R]) -> list[R]:
        """The records of ``records`` that partition ``p``'s state does not reflect yet. After a
        rollback, records fetched before the seek are ignored until the fetch from the
        checkpoint's offset arrives."""
        expected = self.next_offset(p)
        if p in self.rewound:
            if expected is not None and records and records[0].offset != expected:
                return []
            self.rewound.discard(p)
        return [r for r in records if expected is None or r.offset >= expected]

    # ------------------------------------------------------------------ checkpoints
    async def rollback(self, p: int) -> None:
        """Back to partition ``p``'s last checkpoint: its state, and the consumer's position."""
        from aiokafka import TopicPartition

        self.counters.rollbacks += 1
        good = self.last_good.get(p)
        if good is None:
            return
        blob, offset = good
        self.restore(p, blob)
        self.consumer.seek(TopicPartition(self.source_topic, p), offset)
        self.forget_inflight(p)
        self.rewound.add(p)
        await asyncio.sleep(0.5)

    async def checkpoint_due(self) -> None:
        now = time.monotonic()
        for p in sorted(self.owned()):
            if now - self.saved_at.get(p, 0.0) >= self.settings.checkpoint_interval_s:
                await self.checkpoint(p)

    async def checkpoint_all(self) -> None:
        async with self.lock:
            for p in sorted(self.owned()):
                await self.checkpoint(p)

    async def checkpoint(self, p: int) -> None:
        """Store partition ``p``'s state with its offset once every result it reflects is
        confirmed, then commit that offset. A failure is retried at the next interval."""
        from aiokafka import TopicPartition

        self.saved_at[p] = time.monotonic()
        if not await self.settle(p):
            return
        offset = self.next_offset(p)
        if offset is None:
            return
        good = self.last_good.get(p)
        if good is not None and good[1] == offset:
            return  # nothing new since the last checkpoint
        blob = await self.snapshot(p)
        assert self.store is not None
        try:
            await self.store.save(p, offset, blob)
            await self.consumer.commit({TopicPartition(self.source_topic, p): offset})
        except Exception as exc:  # noqa: BLE001 - a failed checkpoint is retried next time
            self.log.warning("%s %d: checkpoint at offset %d failed: %r", self.label, p, offset,
                             exc)
            return
        first = p not in self.logged
        self.logged.add(p)
        self.log.log(logging.INFO if first else logging.DEBUG,
                     "%s %d: checkpointed at offset %d (%d bytes)", self.label, p, offset,
                     len(blob))
        self.last_good[p] = (blob, offset)
        self.counters.checkpoints += 1

    # ------------------------------------------------------------------ rebalances
    async def assigned(self, partitions: Sequence[Any]) -> None:
        """Restore each partition's newest checkpoint and seek to its offset; with none, start
        fresh from the committed offset (or the beginning)."""
        async with self.lock:
            for tp in sorted(partitions, key=lambda t: t.partition):
                p = tp.partition
                assert self.store is not None
                found = await self.store.load(p)
                self.drop(p)
                self.rewound.discard(p)
                if found is not None and not self._restored(p, *found):
                    found = None
                if found is not None:
                    blob, offset = found
                    self.consumer.seek(tp, offset)
                    self.counters.restored += 1
                    self.log.info("%s %d: restored the checkpoint at offset %d", self.label, p,
                                  offset)
                else:
                    committed = await self.consumer.committed(tp)
                    if committed is None:
                        committed = (await self.consumer.beginning_offsets([tp]))[tp]
                    offset = int(committed)
                    self.consumer.seek(tp, offset)
                    blob = self.start_fresh(p, offset)
                    self.log.info("%s %d: no checkpoint; starting at offset %d", self.label, p,
                                  offset)
                self.last_good[p] = (blob, offset)
                self.saved_at[p] = time.monotonic()

    def _restored(self, p: int, blob: bytes, offset: int) -> bool:
        """Restore a stored checkpoint. One this code cannot read (written by another version)
        is not a reason to leave the partition unread: it is reported, and the partition starts
        without it, from the committed offset."""
        try:
            self.restore(p, blob)
        except Exception as exc:  # noqa: BLE001 - any unreadable snapshot: start without it
            self.drop(p)
            self.counters.unreadable += 1
            self.log.error("%s %d: the checkpoint at offset %d cannot be restored (%r); "
                           "starting without it", self.label, p, offset, exc)
            return False
        return True

    async def revoked(self, partitions: Sequence[Any]) -> None:
        """Checkpoint each revoked partition, then forget it (another member owns it now)."""
        async with self.lock:
            owned = set(self.owned())
            for tp in sorted(partitions, key=lambda t: t.partition):
                if tp.partition in owned:
                    await self.checkpoint(tp.partition)
                    self.drop(tp.partition)
                    self.last_good.pop(tp.partition, None)


def rebalance_listener(owner: CheckpointedMember) -> Any:
    """aiokafka rebalance callbacks calling ``owner.revoked`` / ``owner.assigned``."""
    from aiokafka import ConsumerRebalanceListener

    class Listener(ConsumerRebalanceListener):  # type: ignore[misc]
        async def on_partitions_revoked(self, revoked: Any) -> None:
            await owner.revoked(list(revoked))

        async def on_partitions_assigned(self, assigned: Any) -> None:
            await owner.assigned(list(assigned))

    return Listener()
