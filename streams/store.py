"""The store writer: alerts, halts, bars, trades, heartbeats and acks from Kafka into Parquet.

Design
------
DuckDB lets one process write a database file and no other process may even open it read-only
meanwhile, yet the dashboard must read while the pipeline writes. So the store is not a DuckDB
file: it is a folder per record kind, ``store_dir/{alerts,halts,bars}/``, of **immutable Parquet
part files**. The writer (one process, enforced with ``store_dir/.writer.lock``) buffers records,
and on :meth:`StoreWriter.flush` writes each kind's buffer to a hidden temporary file, fsyncs it
and renames it to ``part-….parquet`` (an atomic rename: a reader sees a whole file or none). The
read side (:mod:`dashboard.queries`) lists the folder and queries the parts through DuckDB views
in an in-memory database, so any number of readers work while one writer writes.

Idempotency. A record's key is ``alert_id`` (alerts), ``(venue, instrument, seq)`` (halts),
``(venue, instrument, ts)`` (bars), ``(worker, second)`` (heartbeats: at most one row per worker
and second) or ``(exchange, venue, instrument, seq)`` (acks); :data:`KEYS` has them all. The
writer keeps the keys of recent records in memory, per kind, for a horizon of event time behind
the newest record seen (default 24 h for alerts and halts, 15 min for bars: one bar per
instrument and second is the bulk of the store). At start it loads the keys within that horizon
from the parts already on disk. A record older than the horizon is looked up in the parts on
disk instead (a semi-join in DuckDB), so the answer stays exact while memory stays bounded by
the event *rate* times the horizon, not by the history. Together with Kafka offsets committed
only after a flush (at-least-once delivery), every record is stored once.

Compaction. Each flush adds a part per kind; when a folder holds more than ``max_parts`` parts,
the smallest ones (together up to about ``target_part_bytes``) are merged, deduplicated and
sorted into one new part (same temp-then-rename). Then each original is retired with an empty
``<part>.merged`` tombstone and deleted only ``delete_grace_s`` later. Readers list live parts
only (:func:`streams.store_layout.part_files`), so a part vanishes from under a reader only if
that reader's listing is older than the grace period; the reader then re-lists and retries
once. A reader that listed between the publish and the tombstones sees a record twice, which
its views deduplicate by key. The number of live parts stays near ``max_parts`` plus one per
``target_part_bytes`` of data. (A crash between publishing a merge and retiring its inputs
leaves duplicates on disk; the next compaction merges them away.)

Trades. With ``settings.store_trades`` the writer also keeps every trade of ``trades`` (decoded
by :func:`streams.contracts.decode_message`; what it rejects is counted and skipped, the worker
dead-letters it). Trades are the bulk of the store, so they skip the key memory: they are
buffered as columns and written as zstd Parquet, and the readers drop duplicates by
``(venue, trade_id)`` (compaction drops those within the parts it merges).

Hostile input. A message or record that breaks its contract is counted (``stats``) and skipped;
the first of each kind is logged, then at most one summary a minute.

Columns. ``evidence`` differs per detector, so it is stored as a JSON string (sorted keys);
DuckDB's JSON operators still reach into it. ``agents`` and ``alert_ids`` are always lists of
strings, so they are Parquet list columns: DuckDB filters them natively
(``list_contains(agents, 'a1')``) and no reader has to parse them. Times are UTC timestamps.
"""

from __future__ import annotations

import fcntl
import logging
import os
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Final

import duckdb
import msgspec
import pyarrow as pa
import pyarrow.parquet as pq

from streams.contracts import Trade, decode_message, validate_row
from streams.settings import Settings
from streams.store_layout import (
    KEYS,
    KINDS,
    MERGED,
    SCHEMAS,
    SORT,
    Key,
    Kind,
    epoch_us,
    part_files,
    row_key,
    to_row,
)
from streams.throttle import ThrottledLog

__all__ = ["StoreWriter", "run_store_writer"]

log = logging.getLogger(__name__)

DEFAULT_HORIZON_S: Final[Mapping[Kind, float]] = {"alerts": 86_400.0, "halts": 86_400.0,
                                                  "bars": 900.0, "structure": 86_400.0,
                                                  "cases": 30 * 86_400.0,
                                                  "agents": 30 * 86_400.0,
                                                  "heartbeats": 900.0, "acks": 86_400.0,
                                                  "trades": 0.0}
#: Kinds stored without a key memory (deduplicated by the readers).
UNKEYED: Final[frozenset[Kind]] = frozenset({"trades"})
_TRADE_COLUMNS: Final = tuple(SCHEMAS["trades"].names)


class StoreWriter:
    """Appends alerts, halts and bars to the Parquet store, once each (see the module docs).

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d, StoreWriter(Path(d)) as w:
    ...     bar = {"venue": "v", "instrument": "I", "ts": "2024-01-01T00:00:00Z", "open": 1,
    ...            "high": 1, "low": 1, "close": 1, "volume": 2, "notional": 2, "trades": 1}
    ...     w.add("bars", [bar, bar]), w.add("bars", [bar])
    (1, 0)
    """

    def __init__(
        self,
        store_dir: Path,
        *,
        max_parts: int = 16,
        target_part_bytes: int = 32 << 20,
        horizon_s: Mapping[Kind, float] | None = None,
        delete_grace_s: float = 5.0,
    ) -> None:
        self.store_dir = Path(store_dir)
        self.max_parts = max_parts
        self.target_part_bytes = target_part_bytes
        self.delete_grace_s = delete_grace_s
        self.horizon_us = {k: int((horizon_s or DEFAULT_HORIZON_S).get(k, DEFAULT_HORIZON_S[k])
                                  * 1e6) for k in KINDS}
        #: Counters: new, duplicate, malformed, parts_written, parts_compacted.
        self.stats: Counter[str] = Counter()
        self.store_dir.mkdir(parents=True, exist_ok=True)
        self._lock_file = self._acquire_lock()
        self._db = duckdb.connect()
        self._db.execute("SET TimeZone = 'UTC'")
        self._pending: dict[Kind, list[dict[str, Any]]] = {k: [] for k in KINDS}
        self._keys: dict[Kind, dict[Key, int]] = {k: {} for k in KINDS}
        self._max_us: dict[Kind, int | None] = dict.fromkeys(KINDS)
        self._prune_at: dict[Kind, int] = dict.fromkeys(KINDS, 10_000)
        #: Trades buffered as columns (``ts`` in epoch microseconds).
        self._trades: dict[str, list[Any]] = {c: [] for c in _TRADE_COLUMNS}
        self.problems = ThrottledLog(log)
        #: Parts merged away, deleted after a grace period (a reader may have just listed them).
        self._doomed: list[tuple[float, Path]] = []
        self._closed = False
        for kind in KINDS:
            folder = self.store_dir / kind
            folder.mkdir(exist_ok=True)
            for tmp in folder.glob(".*.tmp"):  # left by a crash mid-write; never published
                tmp.unlink(missing_ok=True)
            for tomb in folder.glob("*.parquet" + MERGED):  # retired before a crash
                tomb.with_suffix("").unlink(missing_ok=True)
                tomb.unlink()
            if kind not in UNKEYED:
                self._load_keys(kind)
            self.compact(kind)

    # -- public API ---------------------------------------------------------------------------

    def add(self, kind: Kind, records: Iterable[Mapping[str, Any]]) -> int:
        """Buffer the records not stored yet; return how many were new.

        A record that breaks its contract is logged and skipped (counted in ``stats``).
        """
        if kind not in KINDS:
            raise ValueError(f"unknown kind {kind!r}; expected one of {KINDS}")
        if kind in UNKEYED:
            return self._add_unkeyed(kind, records)
        keys, pending = self._keys[kind], self._pending[kind]
        old: dict[Key, tuple[int, dict[str, Any]]] = {}
        new = 0
        for record in records:
            try:
                row = to_row(kind, record)
                key = row_key(kind, row)
            except (msgspec.ValidationError, ValueError, TypeError, OverflowError) as exc:
                self.stats["malformed"] += 1
                self.problems.warning(kind, "store: skipping malformed %s record (%s): %.200r",
                                      kind, exc, record)
                continue
            order = epoch_us(row["ts"])
            if key in keys or key in old:
                self.stats["duplicate"] += 1
                continue
            floor = self._floor(kind)
            if floor is not None and order < floor:
                old[key] = (order, row)  # older than the in-memory horizon: ask the disk
                continue
            keys[key] = order
            pending.append(row)
            new += 1
            current = self._max_us[kind]
            if current is None or order > current:
                self._max_us[kind] = order
        if old:
            on_disk = self._stored_keys(kind, list(old))
            for key, (order, row) in old.items():
                if key in on_disk:
                    self.stats["duplicate"] += 1
                    continue
                keys[key] = order
                pending.append(row)
                new += 1
        self.stats["new"] += new
        return new

    def add_trades(self, trades: Iterable[Trade]) -> int:
        """Buffer decoded trades (``ts`` epoch seconds) as columns; return how many.

        No key memory: a re-delivered trade is stored again and dropped by the readers.
        """
        batch = list(trades)
        cols = self._trades
        cols["ts"] += [round(float(t.ts) * 1e6) for t in batch]
        for c in _TRADE_COLUMNS[1:]:
            cols[c] += [getattr(t, c) for t in batch]
        self.stats["trades"] += len(batch)
        return len(batch)

    def _add_unkeyed(self, kind: Kind, records: Iterable[Mapping[str, Any]]) -> int:
        trades = []
        for record in records:
            try:
                trades.append(validate_row(dict(record)))
            except (msgspec.ValidationError, ValueError, TypeError, OverflowError) as exc:
                self.stats["malformed"] += 1
                self.problems.warning(kind, "store: skipping malformed %s record (%s): %.200r",
                                      kind, exc, record)
        return self.add_trades(trades)

    @property
    def pending(self) -> int:
        """Records buffered and not yet written."""
        return sum(len(rows) for rows in self._pending.values()) + len(self._trades["ts"])

    def flush(self) -> None:
        """Write each kind's buffer as one part file (durable on return), then compact."""
        for kind in KINDS:
            if kind in UNKEYED:
                if not self._trades["ts"]:
                    continue
                self._write_part(kind, self._trade_table())
                self._trades = {c: [] for c in _TRADE_COLUMNS}
                self.compact(kind)
                continue
            rows = self._pending[kind]
            if not rows:
                continue
            self._write_part(kind, pa.Table.from_pylist(rows, schema=SCHEMAS[kind]))
            self._pending[kind] = []
            self._prune(kind)
            self.compact(kind)
        self._reap()

    def _trade_table(self) -> pa.Table:
        schema = SCHEMAS["trades"]
        return pa.Table.from_arrays(
            [pa.array(self._trades[f.name], type=f.type) for f in schema], schema=schema)

    def compact(self, kind: Kind, *, force: bool = False) -> int:
        """Merge small parts of ``kind`` into one when there are too many; return how many.

        Safe while readers read: the merged part is published before the originals are deleted.
        """
        parts = part_files(self.store_dir / kind)
        if len(parts) <= self.max_parts and not force:
            return 0
        # the smallest parts first, up to about target_part_bytes in all: bounded memory
        sizes = sorted((p.stat().st_size, p) for p in parts)
        small: list[Path] = []
        total = 0
        for size, p in sizes:
            if size >= self.target_part_bytes or (len(small) >= 2
                                                  and total + size > self.target_part_bytes):
                break
            small.append(p)
            total += size
        if len(small) < 2:
            return 0
        keys, order = ", ".join(KEYS[kind]), ", ".join(SORT[kind])
        table = self._db.sql(
            f"SELECT * FROM read_parquet($files, union_by_name = true) "
            f"QUALIFY row_number() OVER (PARTITION BY {keys} ORDER BY ts) = 1 ORDER BY {order}",
            params={"files": [str(p) for p in small]},
        ).to_arrow_table()
        schema = SCHEMAS[kind]
        if set(table.column_names) == set(schema.names):
            table = table.select(schema.names).cast(schema)
        self._write_part(kind, table, prefix="compact")
        for p in small:  # retire, and delete once no reader can still hold an old listing
            p.with_name(p.name + MERGED).touch()
        expiry = time.monotonic() + self.delete_grace_s
        self._doomed.extend((expiry, p) for p in small)
        self.stats["parts_compacted"] += len(small)
        log.debug("store: compacted %d %s parts (%d rows)", len(small), kind, table.num_rows)
        return len(small)

    def close(self) -> None:
        """Flush and release the store."""
        if self._closed:
            return
        try:
            self.flush()
            self._reap(everything=True)
        finally:
            self._closed = True
            self._db.close()
            fcntl.flock(self._lock_file.fileno(), fcntl.LOCK_UN)
            self._lock_file.close()

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals ----------------------------------------------------------------------------

    def _acquire_lock(self) -> Any:
        fh = open(self.store_dir / ".writer.lock", "a+b")  # held until close()
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.close()
            raise RuntimeError(f"another store writer holds {self.store_dir}") from None
        return fh

    def _reap(self, *, everything: bool = False) -> None:
        """Delete merged-away parts whose grace period is over."""
        now = time.monotonic()
        keep: list[tuple[float, Path]] = []
        for expiry, path in self._doomed:
            if everything or expiry <= now:
                path.unlink(missing_ok=True)
                path.with_name(path.name + MERGED).unlink(missing_ok=True)
            else:
                keep.append((expiry, path))
        self._doomed = keep

    def _floor(self, kind: Kind) -> int | None:
        newest = self._max_us[kind]
        return None if newest is None else newest - self.horizon_us[kind]

    def _select_key_cols(self, kind: Kind) -> str:
        return ", ".join("epoch_us(ts) AS ts" if c == "ts" else c for c in KEYS[kind])

    def _load_keys(self, kind: Kind) -> None:
        """Keys of the stored records within the horizon of the newest one."""
        files = [str(p) for p in part_files(self.store_dir / kind)]
        if not files:
            return
        src = "read_parquet($files, union_by_name = true)"
        rows = self._db.sql(
            f"SELECT {self._select_key_cols(kind)}, epoch_us(ts) AS _order FROM {src} "
            f"WHERE epoch_us(ts) >= (SELECT max(epoch_us(ts)) FROM {src}) - $horizon",
            params={"files": files, "horizon": self.horizon_us[kind]},
        ).fetchall()
        self._keys[kind] = {tuple(r[:-1]): r[-1] for r in rows}
        self._max_us[kind] = max(self._keys[kind].values(), default=None)

    def _stored_keys(self, kind: Kind, candidates: list[Key]) -> set[Key]:
        """Which of these keys the parts on disk already hold."""
        files = [str(p) for p in part_files(self.store_dir / kind)]
        if not files:
            return set()
        cols = KEYS[kind]
        cand = pa.Table.from_pylist([dict(zip(cols, k, strict=True)) for k in candidates])
        self._db.register("_candidates", cand)
        try:
            # bars carry their time in the key: let Parquet statistics skip unrelated row groups
            orders = [k[cols.index("ts")] for k in candidates] if "ts" in cols else None
            where = "WHERE epoch_us(ts) BETWEEN $lo AND $hi" if orders else ""
            params: dict[str, Any] = {"files": files}
            if orders:
                params.update(lo=min(orders), hi=max(orders))
            rows = self._db.sql(
                f"SELECT c.* FROM _candidates c SEMI JOIN (SELECT {self._select_key_cols(kind)} "
                f"FROM read_parquet($files, union_by_name = true) {where}) p "
                f"USING ({', '.join(cols)})",
                params=params,
            ).fetchall()
        finally:
            self._db.unregister("_candidates")
        return {tuple(r) for r in rows}

    def _prune(self, kind: Kind) -> None:
        """Forget flushed keys older than the horizon (amortised: only when the map doubled)."""
        keys, floor = self._keys[kind], self._floor(kind)
        if floor is None or len(keys) < self._prune_at[kind]:
            return
        kept = {k: o for k, o in keys.items() if o >= floor}
        self._keys[kind] = kept
        self._prune_at[kind] = max(10_000, 2 * len(kept))

    def _write_part(self, kind: Kind, table: pa.Table, *, prefix: str = "part") -> Path:
        folder = self.store_dir / kind
        name = f"{prefix}-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.parquet"
        tmp, final = folder / f".{name}.tmp", folder / name
        with open(tmp, "wb") as fh:
            pq.write_table(table, fh, compression="zstd")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, final)
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        self.stats["parts_written"] += 1
        return final


def _records(raw: bytes | None) -> Iterator[Mapping[str, Any]]:
    """The JSON object(s) of one Kafka message; raises ``ValueError`` when it holds none."""
    if raw is None:
        raise ValueError("empty message")
    value = msgspec.json.decode(raw)
    items = value if isinstance(value, list) else [value]
    for item in items:
        if not isinstance(item, dict):
            raise ValueError(f"expected a JSON object, got {type(item).__name__}")
        yield item


def _store_trades(writer: StoreWriter, tp: Any, messages: Iterable[Any]) -> None:
    """Buffer the valid trades of these ``trades`` messages; count (and log, throttled) what
    the contract rejects: the worker dead-letters it, the store only skips it."""
    for msg in messages:
        if msg.value is None:
            writer.stats["trades_rejected"] += 1
            continue
        try:
            trades, rejected = decode_message(msg.value)
            bad = len(rejected)
        except Exception:  # noqa: BLE001 - decode_message never raises; belt and braces
            trades, bad = [], 1
        writer.add_trades(trades)
        if bad:
            writer.stats["trades_rejected"] += bad
            writer.problems.warning("trades", "store: %d invalid trade(s) skipped in %s[%d]@%d "
                                    "(the worker dead-letters them)", bad, tp.topic,
                                    tp.partition, msg.offset)


def _genuine(beats: list[Mapping[str, Any]], keys: Any, writer: StoreWriter,
             topic: str) -> list[Mapping[str, Any]]:
    """The heartbeats signed by a detector key of ``keys`` (all of them when there are no
    keys). A forged or unsigned beat is counted (``forged_heartbeats``) and dropped: it must
    not make a dead pipeline look alive on the desk, nor grow the store with made-up workers."""
    if keys is None:
        return beats
    good = [b for b in beats if keys.verify(b) == "detector"]
    if len(good) < len(beats):
        writer.stats["forged_heartbeats"] += len(beats) - len(good)
        writer.problems.warning(topic, "store: dropped %d heartbeat(s) that no detector key "
                                "signed", len(beats) - len(good))
    return good


def run_store_writer(
    settings: Settings,
    *,
    stop: threading.Event | None = None,
    flush_every_s: float = 1.0,
    max_pending: int = 50_000,
) -> None:
    """Consume the pipeline's topics into the store until ``stop`` is set: alerts, halts (and
    the workers' heartbeats on it), bars, structure, cases, agents, the exchanges' halt
    acknowledgements and, with ``settings.store_trades``, trades.

    Offsets are committed only after a flush made the records durable: at-least-once delivery,
    and the writer's idempotency turns that into effectively-once storage.
    """
    from kafka import KafkaConsumer  # imported here: the store itself does not need Kafka

    stop = stop or threading.Event()
    topics = settings.topics
    kind_of: dict[str, Kind] = {topics.alerts: "alerts", topics.halts: "halts",
                                topics.bars: "bars", topics.structure: "structure",
                                topics.cases: "cases", topics.agents: "agents",
                                topics.halt_acks: "acks"}
    if settings.store_trades:
        kind_of[topics.trades] = "trades"
    session_ms = int(settings.session_timeout_s * 1000)
    writer = StoreWriter(settings.store_dir)
    from streams.signing import public_keys

    keys, _ = public_keys(settings)  # with keys, only signed heartbeats say a worker is alive
    previous_sigterm = None
    if threading.current_thread() is threading.main_thread():  # `surveil up` stops us so
        previous_sigterm = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    consumer = None
    uncommitted = False
    try:
        consumer = KafkaConsumer(
            *kind_of,
            bootstrap_servers=settings.brokers.split(","),
            group_id=f"{settings.group_id}-store",
            client_id=f"{settings.app_id}-store",
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            session_timeout_ms=session_ms,
            heartbeat_interval_ms=max(100, session_ms // 3),
            request_timeout_ms=max(30_000, session_ms + 5_000),
            metadata_max_age_ms=5_000,
        )
        log.info("store writer: %s -> %s", ", ".join(kind_of), settings.store_dir)
        next_flush = time.monotonic() + flush_every_s
        while not stop.is_set():
            polled = consumer.poll(timeout_ms=200, max_records=10_000)
            for tp, messages in polled.items():
                kind = kind_of[tp.topic]
                if kind == "trades":
                    uncommitted = True
                    _store_trades(writer, tp, messages)
                    continue
                for msg in messages:
                    uncommitted = True
                    try:
                        records = list(_records(msg.value))
                    except (msgspec.DecodeError, ValueError) as exc:
                        writer.stats["malformed"] += 1
                        writer.problems.warning(
                            tp.topic, "store: skipping malformed message %s[%d]@%d: %s",
                            tp.topic, tp.partition, msg.offset, exc)
                        continue
                    if kind == "halts":  # the workers' liveness signal: a kind of its own
                        beats = [r for r in records if r.get("schema") == "heartbeat/1"]
                        if beats:
                            writer.add("heartbeats", _genuine(beats, keys, writer, tp.topic))
                            records = [r for r in records if r.get("schema") != "heartbeat/1"]
                    writer.add(kind, records)
            if uncommitted and (time.monotonic() >= next_flush or writer.pending >= max_pending):
                writer.flush()
                consumer.commit()
                uncommitted = False
            if time.monotonic() >= next_flush:
                next_flush = time.monotonic() + flush_every_s
    except KeyboardInterrupt:
        log.info("store writer: interrupted")
    finally:
        try:
            writer.flush()
            if consumer is not None and uncommitted:
                consumer.commit()
        except Exception:  # re-delivery on restart is harmless: the writer is idempotent
            log.exception("store writer: final commit failed; records will be re-read")
        finally:
            if previous_sigterm is not None:
                signal.signal(signal.SIGTERM, previous_sigterm)
            if consumer is not None:
                consumer.close(autocommit=False)
            writer.close()
            log.info("store writer stopped: %s", dict(writer.stats))
