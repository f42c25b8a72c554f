"""Raw Kafka messages of ``trades`` and their bulk decoding (never raises)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal, overload

from streams.contracts import Rejected, Trade, decode_message

__all__ = ["RawMessage", "decode_messages"]


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


@overload
def decode_messages(messages: Iterable[RawMessage], *,
                    with_sources: Literal[False] = ...) -> tuple[list[Trade], list[Rejected]]: ...


@overload
def decode_messages(messages: Iterable[RawMessage], *, with_sources: Literal[True]
                    ) -> tuple[list[Trade], list[Rejected], list[dict[str, Any]]]: ...


def decode_messages(messages: Iterable[RawMessage], *, with_sources: bool = False) -> Any:
    """Decode a batch of ``trades`` messages; never raises.

    With ``with_sources`` also returns, aligned with the trades, the source (topic, partition,
    offset, key) of the message each came from (one shared dict per message).
    """
    trades: list[Trade] = []
    rejected: list[Rejected] = []
    sources: list[dict[str, Any]] = []
    for msg in messages:
        src = msg.source
        if msg.value is None:
            rejected.append(Rejected("bad_json: empty message (no value)", b"", None, src))
            continue
        ok, bad = decode_message(msg.value, src)
        trades += ok
        rejected += bad
        if with_sources:
            sources += [src] * len(ok)
    return (trades, rejected, sources) if with_sources else (trades, rejected)
