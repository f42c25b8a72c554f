"""What the worker sends, as Kafka records under a size limit, and the sinks that confirm it.

Every result of a batch — dead letters, alerts, halts, bars, window summaries, watermarks — becomes
``(topic, key, value)`` records no larger than ``max_message_bytes``: bars travel as JSON arrays
split to fit; a dead letter whose original bytes would not fit keeps the first part of them with
their full size and SHA-256 (``raw_truncated``). A sink's :meth:`Sink.deliver` returns only when
every record is acknowledged by the broker and raises :class:`DeliveryError` otherwise; the worker
then rolls its state back to its last checkpoint instead of moving on (see :mod:`streams.worker`).

>>> from streams.settings import Settings
>>> from streams.pipeline import EngineOutput
>>> from streams.contracts import Bar
>>> bar = Bar(venue="v", instrument="I", ts="2024-01-01T00:00:00Z", open=1.0, high=1.0,
...           low=1.0, close=1.0, volume=1.0, notional=1.0, trades=1)
>>> recs = to_records(Settings(), EngineOutput(bars=[bar] * 1000), max_message_bytes=20_000)
>>> len(recs), max(len(v) for _, _, v in recs) <= 20_000
(8, True)
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgspec

from streams.contracts import Halt, Rejected, encode
from streams.pipeline import EngineOutput
from streams.sealed import seal
from streams.settings import Settings
from streams.signing import signer_for

__all__ = ["DeliveryError", "KafkaSink", "MemorySink", "Record", "Sink", "halt_record",
           "to_records"]

Record = tuple[str, bytes | None, bytes]
_ENVELOPE = 2048  # room for a dead letter's other fields


class DeliveryError(RuntimeError):
    """Some records of a batch were not acknowledged."""


def to_records(settings: Settings, out: EngineOutput, rejected: Sequence[Rejected] = (), *,
               max_message_bytes: int | None = None,
               flows_key: bytes | None = None) -> list[Record]:
    """The Kafka records of a batch's results, each at most ``max_message_bytes``. Records for
    stage 2 (``flows``) are sealed with ``flows_key`` (:mod:`streams.sealed`); stage 2 reads
    no others."""
    limit = max_message_bytes or settings.max_message_bytes
    topics = settings.topics
    records: list[Record] = []
    for r in [*rejected, *out.rejected]:
        key = (r.source.get("key") or "").encode() or None
        records.append((topics.dlq, key, _dead_letter(r, limit)))
    records += [(topics.alerts, a.alert_id.encode(), encode(a)) for a in out.alerts]
    records += [halt_record(settings, h) for h in out.halts]
    records += [(topics.bars, None, v) for v in _arrays(out.bars, limit)]
    flows = [(s.venue, encode(s)) for s in out.summaries]
    flows += [(w.venue, encode({"schema": "watermark/1", "venue": w.venue,
                                "partition": w.partition, "watermark": w.watermark}))
              for w in out.watermarks]
    records += [(topics.flows, venue.encode(),
                 seal(flows_key, value) if flows_key is not None else value)
                for venue, value in flows]
    return records


def halt_record(settings: Settings, halt: Halt) -> Record:
    """A halt's record for the ``halts`` topic, signed (``kid``, ``sig``; :mod:`streams.signing`)
    when the settings' key folder holds a detector key. Only the topic's copy is signed: the
    backtest's ``halts.jsonl`` stays unsigned and deterministic."""
    signer = signer_for(settings)
    value = signer.sign_bytes(halt) if signer is not None else encode(halt)
    return (settings.topics.halts, halt.instrument.encode(), value)


def _dead_letter(r: Rejected, limit: int) -> bytes:
    value = encode(r.to_record())
    if len(value) <= limit:
        return value
    keep = max(0, (limit - _ENVELOPE) // 2)  # base64 or escapes may double the size
    short = Rejected(r.reason, r.raw[:keep], r.index, r.source)
    record = short.to_record()
    record.update(raw_truncated=True, raw_size=len(r.raw),
                  raw_sha256=hashlib.sha256(r.raw).hexdigest())
    return encode(record)


def _arrays(items: Sequence[Any], limit: int) -> list[bytes]:
    """JSON arrays of ``items``, each at most ``limit`` bytes (an item never splits)."""
    out: list[bytes] = []
    chunk: list[bytes] = []
    size = 2
    for item in items:
        b = encode(item)
        if chunk and size + len(b) + 1 > limit:
            out.append(b"[" + b",".join(chunk) + b"]")
            chunk, size = [], 2
        chunk.append(b)
        size += len(b) + 1
    if chunk:
        out.append(b"[" + b",".join(chunk) + b"]")
    return out


class Sink(Protocol):
    """Where the worker's records go.

    ``submit`` hands records over in order (it may wait when the sink's buffer is full) and
    returns an awaitable that completes once every one is acknowledged, or raises
    :class:`DeliveryError`; ``deliver`` is both in one.
    """

    async def submit(self, records: Sequence[Record]) -> Awaitable[None]: ...

    async def deliver(self, records: Sequence[Record]) -> None: ...


class KafkaSink:
    """Sends through an aiokafka producer (``acks=all``) and awaits every acknowledgement."""

    def __init__(self, producer: Any) -> None:
        self.producer = producer

    async def submit(self, records: Sequence[Record]) -> Awaitable[None]:
        from aiokafka.errors import KafkaError

        futures = []
        try:
            for topic, key, value in records:
                futures.append(await self.producer.send(topic, value, key=key))
        except KafkaError as exc:  # e.g. the buffer stayed full while the broker was away
            for f in futures:
                f.cancel()
            raise DeliveryError(f"could not hand {len(records)} records over: {exc!r}") from exc
        return _confirm(futures, len(records))

    async def deliver(self, records: Sequence[Record]) -> None:
        await (await self.submit(records))

    async def send_one(self, topic: str, partition: int, key: bytes, value: bytes) -> int:
        fut = await self.producer.send(topic, value, key=key, partition=partition)
        meta = await fut
        return int(meta.offset)


async def _confirm(futures: list[Any], n: int) -> None:
    results = await asyncio.gather(*futures, return_exceptions=True)
    failed = [r for r in results if isinstance(r, BaseException)]
    if failed:
        raise DeliveryError(f"{len(failed)} of {n} records not delivered: {failed[0]!r}")


@dataclass
class MemorySink:
    """Collects records; ``fail_after`` makes the n-th record of a delivery fail (tests)."""

    sent: list[Record] = field(default_factory=list)
    fail_after: int | None = None
    failures: int = 0

    async def deliver(self, records: Sequence[Record]) -> None:
        for i, rec in enumerate(records):
            if self.fail_after is not None and i >= self.fail_after:
                self.failures += 1
                self.fail_after = None
                raise DeliveryError(f"injected failure at record {i} of {len(records)}")
            self.sent.append(rec)

    async def submit(self, records: Sequence[Record]) -> Awaitable[None]:
        try:
            await self.deliver(records)
        except DeliveryError as exc:
            error = exc

            async def failed() -> None:
                raise error

            return failed()
        return asyncio.sleep(0)

    def decoded(self, topic: str) -> list[Any]:
        return [msgspec.json.decode(v) for t, _, v in self.sent if t == topic]
