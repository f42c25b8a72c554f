"""Checkpoints: the engine state of one input partition, with the offset it reflects, on Kafka.

Why not a Faust table: its recovery reads the changelog up to ``ListOffsets(LATEST)``, which the
embedded broker answers wrongly (the last batch's base offset + 1), and a table would still not
tie the state to the *input* offsets. Here a checkpoint is written as

1. ``part`` records holding the compressed snapshot, split under ``part_bytes``;
2. one ``commit`` record naming the input offset, the parts' offsets and the digest of the whole.

Only after the commit record is acknowledged does the worker commit the input offset to the
consumer group, so the newest complete checkpoint is never behind the committed offset. A crash
mid-checkpoint leaves parts without a commit; readers ignore them.

Every record is authenticated with HMAC-SHA256 (key from ``SURVEIL_CHECKPOINT_KEY`` or the
``checkpoint.key`` file in the data folder, made on first use): a checkpoint is unpickled, and
nobody who can merely write to the topic may choose what gets unpickled. Records that fail the
check are counted and skipped.

The checkpoint topic has as many partitions as ``trades`` (input partition ``p`` writes to
``p % n``); records are keyed by ``group|topic|partition``. On real Kafka make it compacted with a
retention of a few hours; the embedded broker keeps everything in memory, so checkpoints are
written every ``checkpoint_interval_s`` (default 10 s) and only when the state moved.

>>> codec = Codec(b"k" * 32)
>>> header, payload = codec.decode(codec.encode({"kind": "part", "n": 1}, b"xyz"))
>>> header["n"], payload
(1, b'xyz')
>>> Codec(b"other-key-000000000000000000000").decode(codec.encode({"kind": "part"}, b"x"))
Traceback (most recent call last):
...
ValueError: checkpoint record fails authentication
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec

__all__ = ["CheckpointStore", "Codec", "checkpoint_key"]

log = logging.getLogger(__name__)

MAGIC = b"SCK1"
_MAC = 32


def checkpoint_key(data_dir: Path, configured: str | None = None) -> bytes:
    """The HMAC key: ``configured`` (e.g. ``SURVEIL_CHECKPOINT_KEY``) or ``data_dir/checkpoint.key``
    (created with 32 random bytes, mode 0600, when missing). Workers that share checkpoints must
    share the key."""
    if configured:
        return configured.encode()
    path = data_dir / "checkpoint.key"
    try:
        return path.read_bytes().strip()
    except FileNotFoundError:
        pass
    data_dir.mkdir(parents=True, exist_ok=True)
    key = secrets.token_hex(32).encode()
    tmp = path.with_name(f".checkpoint.key.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key)
    try:
        os.link(tmp, path)  # first writer wins; others read its key
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)
    return path.read_bytes().strip()


class Codec:
    """``MAGIC | HMAC(header + payload) | len(header) | header JSON | payload``."""

    def __init__(self, key: bytes) -> None:
        self.key = key

    def encode(self, header: dict[str, Any], payload: bytes = b"") -> bytes:
        head = msgspec.json.encode(header)
        body = len(head).to_bytes(4, "big") + head + payload
        return MAGIC + hmac.digest(self.key, body, "sha256") + body

    def decode(self, value: bytes) -> tuple[dict[str, Any], bytes]:
        if value[:4] != MAGIC or len(value) < 4 + _MAC + 4:
            raise ValueError("not a checkpoint record")
        mac, body = value[4:4 + _MAC], value[4 + _MAC:]
        if not hmac.compare_digest(mac, hmac.digest(self.key, body, "sha256")):
            raise ValueError("checkpoint record fails authentication")
        n = int.from_bytes(body[:4], "big")
        header = msgspec.json.decode(body[4:4 + n])
        if not isinstance(header, dict):
            raise ValueError("malformed checkpoint header")
        return header, body[4 + n:]


Send = Callable[[str, int, bytes, bytes], Awaitable[int]]


class CheckpointStore:
    """Writes and reads checkpoints on ``topic`` (see the module docs).

    ``send(topic, partition, key, value)`` must return the record's offset once acknowledged;
    reading uses its own unassigned aiokafka consumer.
    """

    def __init__(self, *, bootstrap: str, topic: str, group: str, source_topic: str,
                 key: bytes, send: Send, part_bytes: int = 512 * 1024) -> None:
        self.bootstrap, self.topic, self.group = bootstrap, topic, group
        self.source_topic = source_topic
        self.codec = Codec(key)
        self.send = send
        self.part_bytes = part_bytes
        self.partitions = 1
        self.rejected = 0

    def record_key(self, partition: int) -> bytes:
        return f"{self.group}|{self.source_topic}|{partition}".encode()

    async def save(self, partition: int, offset: int, blob: bytes) -> None:
        """Write a checkpoint of input ``partition`` at input ``offset``; returns once the
        commit record is acknowledged (raises if any record could not be delivered)."""
        q = partition % self.partitions
        key = self.record_key(partition)
        ident = uuid.uuid4().hex
        parts: list[int] = []
        for i in range(0, max(len(blob), 1), self.part_bytes):
            chunk = blob[i:i + self.part_bytes]
            parts.append(await self.send(self.topic, q, key, self.codec.encode(
                {"kind": "part", "id": ident, "index": len(parts)}, chunk)))
        commit = {"kind": "commit", "id": ident, "partition": partition, "offset": offset,
                  "parts": parts, "size": len(blob), "sha256": hashlib.sha256(blob).hexdigest()}
        await self.send(self.topic, q, key, self.codec.encode(commit))

    async def load(self, partition: int) -> tuple[bytes, int] | None:
        """The newest complete checkpoint of input ``partition``: ``(blob, offset)``."""
        from aiokafka import AIOKafkaConsumer, TopicPartition

        q = partition % self.partitions
        key = self.record_key(partition)
        tp = TopicPartition(self.topic, q)
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False,
                                    fetch_max_wait_ms=50, max_partition_fetch_bytes=8 << 20)
        await consumer.start()
        try:
            consumer.assign([tp])
            end = (await consumer.end_offsets([tp]))[tp]
            window = 64
            while True:
                start = max(0, end - window)
                found = await self._newest_commit(consumer, tp, key, start)
                if found is not None:
                    return await self._assemble(consumer, tp, found)
                if start == 0:
                    return None
                window *= 8
        finally:
            await consumer.stop()

    async def _read(self, consumer: Any, tp: Any, start: int,
                    stop: Callable[[int], bool] | None = None) -> list[Any]:
        consumer.seek(tp, start)
        records: list[Any] = []
        empty = 0
        while empty < 3:
            batch = await consumer.getmany(tp, timeout_ms=200, max_records=500)
            got = batch.get(tp, [])
            records += got
            empty = 0 if got else empty + 1
            if got and stop is not None and stop(got[-1].offset):
                break
        return records

    async def _newest_commit(self, consumer: Any, tp: Any, key: bytes,
                             start: int) -> dict[str, Any] | None:
        newest = None
        for rec in await self._read(consumer, tp, start):
            if rec.key != key or rec.value is None:
                continue
            try:
                header, _ = self.codec.decode(rec.value)
            except ValueError as exc:
                self.rejected += 1
                log.warning("checkpoint: skipping record at offset %s: %s", rec.offset, exc)
                continue
            if header.get("kind") == "commit":
                newest = header
        return newest

    async def _assemble(self, consumer: Any, tp: Any,
                        commit: dict[str, Any]) -> tuple[bytes, int] | None:
        wanted = list(commit["parts"])
        last = max(wanted)
        chunks: dict[int, bytes] = {}
        for rec in await self._read(consumer, tp, min(wanted), stop=lambda o: o >= last):
            if rec.offset in wanted:
                header, payload = self.codec.decode(rec.value)
                if header.get("id") == commit["id"]:
                    chunks[rec.offset] = payload
        if len(chunks) != len(wanted):
            log.warning("checkpoint %s: %d of %d parts found", commit["id"], len(chunks),
                        len(wanted))
            return None
        blob = b"".join(chunks[o] for o in wanted)
        if hashlib.sha256(blob).hexdigest() != commit["sha256"]:
            log.warning("checkpoint %s: digest mismatch", commit["id"])
            return None
        return blob, int(commit["offset"])
