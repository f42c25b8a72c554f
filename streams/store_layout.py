"""The store's on-disk layout, shared by the writer (:mod:`streams.store`) and every reader.

``store_dir/<kind>/`` (:data:`KINDS`) each hold immutable Parquet part files with the schema in
:data:`SCHEMAS`; :func:`to_row` maps a contract record (DESIGN §3.1, §3.5, §3.6, bars, stage-2
structure metrics, worker heartbeats, exchange acknowledgements) to a row. A record is
identified by its :data:`KEYS`. Files starting with ``.`` are being written; a part with a
``<name>.merged`` tombstone beside it was merged into a newer part and is about to be deleted.
:func:`part_files` applies these rules, so readers need no more.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final, Literal, TypeAlias, get_args

import msgspec
import pyarrow as pa

from detectors.structure import StructureMetrics
from streams.cases import CaseAction
from streams.contracts import Agent, Alert, Bar, Halt, HaltAck, Heartbeat, Trade, validate_row

__all__ = [
    "KEYS",
    "KINDS",
    "MERGED",
    "SCHEMAS",
    "SORT",
    "Key",
    "Kind",
    "epoch_us",
    "part_files",
    "row_key",
    "to_row",
    "trade_row",
]

Kind: TypeAlias = Literal["alerts", "halts", "bars", "structure", "cases", "agents",
                          "heartbeats", "acks", "trades"]
KINDS: Final[tuple[Kind, ...]] = get_args(Kind)

_TS = pa.timestamp("us", tz="UTC")
_STR_LIST = pa.list_(pa.string())
#: Parquet schema of each kind (also what readers use while a folder is still empty).
SCHEMAS: Final[Mapping[Kind, pa.Schema]] = {
    "alerts": pa.schema([
        ("alert_id", pa.string()), ("ts", _TS), ("kind", pa.string()), ("score", pa.float64()),
        ("instrument", pa.string()), ("agents", _STR_LIST), ("venue", pa.string()),
        ("detector", pa.string()), ("summary", pa.string()), ("evidence", pa.string()),
        ("schema", pa.string()),
    ]),
    "halts": pa.schema([
        ("seq", pa.int64()), ("ts", _TS), ("emitted_at", _TS), ("venue", pa.string()),
        ("instrument", pa.string()), ("state", pa.string()), ("reason", pa.string()),
        ("resume_at", _TS), ("reference_price", pa.float64()), ("band_low", pa.float64()),
        ("band_high", pa.float64()), ("alert_ids", _STR_LIST), ("schema", pa.string()),
    ]),
    "bars": pa.schema([
        ("venue", pa.string()), ("instrument", pa.string()), ("ts", _TS),
        ("open", pa.float64()), ("high", pa.float64()), ("low", pa.float64()),
        ("close", pa.float64()), ("volume", pa.float64()), ("notional", pa.float64()),
        ("trades", pa.int64()), ("schema", pa.string()),
    ]),
    # stage 2: market structure per instrument and window (detectors/structure.py)
    "structure": pa.schema([
        ("venue", pa.string()), ("instrument", pa.string()), ("ts", _TS),
        ("window_start", _TS), ("window_end", _TS), ("trades", pa.int64()),
        ("volume", pa.float64()), ("notional", pa.float64()), ("agents", pa.int64()),
        ("hhi", pa.float64()),
        ("top5_share", pa.float64()), ("new_entrant_share", pa.float64()),
        ("new_entrants", pa.int64()), ("counterparty_hhi", pa.float64()),
        ("top_pair_share", pa.float64()), ("self_trade_share", pa.float64()),
        ("partitions", pa.int64()), ("truncated", pa.bool_()), ("schema", pa.string()),
    ]),
    # regulator case actions (streams/cases.py): the append-only audit trail of the desk
    "cases": pa.schema([
        ("action_id", pa.string()), ("ts", _TS), ("case_id", pa.string()),
        ("action", pa.string()), ("actor", pa.string()), ("role", pa.string()),
        ("reason", pa.string()), ("alert_ids", _STR_LIST), ("assignee", pa.string()),
        ("disposition", pa.string()), ("note", pa.string()), ("venue", pa.string()),
        ("instrument", pa.string()), ("state", pa.string()), ("schema", pa.string()),
    ]),
    # the agent registry (DESIGN §3.2); ts = created_ts, else when the writer first saw it
    "agents": pa.schema([
        ("agent_id", pa.string()), ("ts", _TS), ("owner", pa.string()),
        ("funded_by", pa.string()), ("created_ts", _TS), ("kind", pa.string()),
        ("venue", pa.string()),
    ]),
    # stage-1 worker heartbeats (streams/heartbeat.py): one row per worker and second (ts =
    # emitted_at cut to the second), so a day of them stays small
    "heartbeats": pa.schema([
        ("worker", pa.string()), ("ts", _TS), ("emitted_at", _TS), ("seq", pa.int64()),
        ("watermark", _TS), ("watermarks", pa.string()), ("partitions", pa.list_(pa.int64())),
        ("kid", pa.string()),
    ]),
    # exchanges' acknowledgements of the halts they applied (exchange/acks.py); ts = the halt's
    "acks": pa.schema([
        ("exchange", pa.string()), ("venue", pa.string()), ("instrument", pa.string()),
        ("seq", pa.int64()), ("ts", _TS), ("state", pa.string()), ("reason", pa.string()),
        ("effective", pa.string()), ("applied_at", _TS), ("schema", pa.string()),
    ]),
    # every trade (DESIGN §3.1), for case files and agent pages; written from columnar buffers
    # without a key memory: duplicates (at-least-once delivery) are dropped by the readers
    "trades": pa.schema([
        ("ts", _TS), ("venue", pa.string()), ("instrument", pa.string()),
        ("trade_id", pa.string()), ("price", pa.float64()), ("qty", pa.float64()),
        ("buyer", pa.string()), ("seller", pa.string()),
    ]),
}
#: The columns that identify a record; a second record with the same key is a duplicate.
KEYS: Final[Mapping[Kind, tuple[str, ...]]] = {
    "alerts": ("alert_id",),
    "halts": ("venue", "instrument", "seq"),
    "bars": ("venue", "instrument", "ts"),
    "structure": ("venue", "instrument", "ts"),
    "cases": ("action_id",),
    "agents": ("agent_id",),
    "heartbeats": ("worker", "ts"),
    "acks": ("exchange", "venue", "instrument", "seq"),
    "trades": ("venue", "trade_id"),
}
#: Sort order inside compacted parts (lets Parquet row-group statistics prune reads).
SORT: Final[Mapping[Kind, tuple[str, ...]]] = {
    "alerts": ("ts", "alert_id"),
    "halts": ("venue", "instrument", "seq"),
    "bars": ("venue", "instrument", "ts"),
    "structure": ("venue", "instrument", "ts"),
    "cases": ("ts", "action_id"),
    "agents": ("agent_id",),
    "heartbeats": ("worker", "ts"),
    "acks": ("venue", "instrument", "seq", "exchange"),
    "trades": ("venue", "instrument", "ts"),
}

#: Suffix of the tombstone that retires a part merged away by compaction (see the module docs).
MERGED: Final = ".merged"


def part_files(folder: Path) -> list[Path]:
    """The live part files of one kind's folder, sorted.

    Excludes temporary files and parts retired by compaction (those with a ``.merged``
    tombstone next to them), so readers stop using a part before it is deleted.
    """
    try:
        names = {entry.name for entry in os.scandir(folder)}
    except FileNotFoundError:
        return []
    return sorted(folder / n for n in names
                  if n.endswith(".parquet") and not n.startswith(".") and n + MERGED not in names)
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_US: Final = timedelta(microseconds=1)
_json = msgspec.json.Encoder(order="sorted")

Key: TypeAlias = tuple[Any, ...]


def _utc(value: Any) -> datetime:
    """An ISO-8601 string with a zone (or epoch seconds) as an aware UTC datetime."""
    if isinstance(value, str):
        dt = datetime.fromisoformat(value.strip())
    elif isinstance(value, int | float) and not isinstance(value, bool):
        dt = datetime.fromtimestamp(value, UTC)
    else:
        raise ValueError(f"not a timestamp: {value!r}")
    if dt.tzinfo is None:
        raise ValueError(f"timestamp has no time zone: {value!r}")
    return dt.astimezone(UTC)


def _utc_or_none(value: Any) -> datetime | None:
    return None if value is None else _utc(value)


def epoch_us(dt: datetime) -> int:
    """Microseconds since the epoch (exact, unlike ``timestamp() * 1e6``)."""
    return (dt - _EPOCH) // _US


def to_row(kind: Kind, record: Mapping[str, Any]) -> dict[str, Any]:
    """Validate one record against its contract and turn it into a Parquet row.

    Raises ``msgspec.ValidationError`` or ``ValueError`` when the record breaks the contract.
    """
    if kind == "alerts":
        a = msgspec.convert(record, Alert)
        return {"alert_id": a.alert_id, "ts": _utc(a.ts), "kind": a.kind, "score": a.score,
                "instrument": a.instrument, "agents": list(a.agents), "venue": a.venue,
                "detector": a.detector, "summary": a.summary,
                "evidence": _json.encode(a.evidence).decode(), "schema": a.schema}
    if kind == "halts":
        h = msgspec.convert(record, Halt)
        return {"seq": h.seq, "ts": _utc(h.ts), "emitted_at": _utc(h.emitted_at),
                "venue": h.venue, "instrument": h.instrument, "state": h.state,
                "reason": h.reason, "resume_at": _utc_or_none(h.resume_at),
                "reference_price": h.reference_price, "band_low": h.band_low,
                "band_high": h.band_high, "alert_ids": list(h.alert_ids), "schema": h.schema}
    if kind == "cases":
        c = msgspec.convert(record, CaseAction)
        return {**msgspec.structs.asdict(c), "ts": _utc(c.ts), "alert_ids": list(c.alert_ids)}
    if kind == "agents":
        g = msgspec.convert(record, Agent)
        created = _utc_or_none(g.created_ts)
        return {"agent_id": g.agent_id, "ts": created or datetime.now(UTC), "owner": g.owner,
                "funded_by": g.funded_by, "created_ts": created, "kind": g.kind,
                "venue": g.venue}
    if kind == "heartbeats":
        beat = msgspec.convert(record, Heartbeat)
        if beat.schema != "heartbeat/1":
            raise ValueError(f"unknown schema {beat.schema!r}")
        emitted = _utc(beat.emitted_at)
        marks = {v: _utc(t) for v, t in beat.watermarks.items()}
        return {"worker": beat.worker, "ts": emitted.replace(microsecond=0),
                "emitted_at": emitted, "seq": beat.seq,
                "watermark": min(marks.values(), default=None),
                "watermarks": _json.encode({v: t.isoformat() for v, t in marks.items()}).decode(),
                "partitions": list(beat.partitions), "kid": beat.kid}
    if kind == "acks":
        k = msgspec.convert(record, HaltAck)
        if k.schema != "halt_ack/1":
            raise ValueError(f"unknown schema {k.schema!r}")
        return {"exchange": k.exchange, "venue": k.venue, "instrument": k.instrument,
                "seq": k.seq, "ts": _utc(k.ts), "state": k.state, "reason": k.reason,
                "effective": k.effective, "applied_at": _utc(k.applied_at), "schema": k.schema}
    if kind == "trades":
        return trade_row(validate_row(dict(record)))
    if kind == "structure":
        m = msgspec.convert(record, StructureMetrics)
        row = msgspec.structs.asdict(m)
        row["window_start"], row["window_end"] = _utc(m.window_start), _utc(m.window_end)
        return {"ts": row["window_start"], **row}  # ts = the window's start (its key)
    b = msgspec.convert(record, Bar)
    return {"venue": b.venue, "instrument": b.instrument, "ts": _utc(b.ts), "open": b.open,
            "high": b.high, "low": b.low, "close": b.close, "volume": b.volume,
            "notional": b.notional, "trades": b.trades, "schema": b.schema}


def trade_row(t: Trade) -> dict[str, Any]:
    """The row of a decoded trade (``ts`` epoch seconds, as :func:`decode_message` leaves it)."""
    return {"ts": _EPOCH + round(float(t.ts) * 1e6) * _US, "venue": t.venue,
            "instrument": t.instrument, "trade_id": t.trade_id, "price": t.price, "qty": t.qty,
            "buyer": t.buyer, "seller": t.seller}


def row_key(kind: Kind, row: Mapping[str, Any]) -> Key:
    """The key of a row (:data:`KEYS`; times as epoch microseconds)."""
    return tuple(epoch_us(row[c]) if c == "ts" else row[c] for c in KEYS[kind])
