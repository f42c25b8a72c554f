"""The read side of the store: DuckDB views over the writer's Parquet parts.

:class:`StoreReader` opens an **in-memory** DuckDB database (it never opens a database file, so
it never contends with the writer) and keeps one view per kind over the part files in
``store_dir/{alerts,halts,bars}/`` (see :mod:`streams.store`). Before each query it lists the
folders; when the list changed it re-points the raw view at the new files, or at an empty table
of the right schema while a folder is still empty. The public views deduplicate by key, so a
reader that lands between a compaction's publish and its cleanup still sees each record once;
one that finds a file gone (compacted away) re-lists and retries once.

Everything here is a pure function of the store and returns polars frames or plain values;
nothing imports Streamlit, so the same queries serve tests, notebooks and the dashboard.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import duckdb
import polars as pl

from streams.store_layout import KEYS, KINDS, SCHEMAS, Kind, part_files

__all__ = ["HALT_STATES_ACTIVE", "StoreCounts", "StoreReader"]

#: States that mean "not freely trading" (DESIGN §3.6: a halt is any state but TRADING).
HALT_STATES_ACTIVE = ("HALTED", "PAUSED", "QUOTE_ONLY")

T = TypeVar("T")
Relation = duckdb.DuckDBPyRelation
_ATTEMPTS = 2  # one retry
_ALERT_COLUMNS = "ts, kind, score, instrument, venue, summary, agents, detector, alert_id"


@dataclass(frozen=True)
class StoreCounts:
    """Headline numbers of the store."""

    alerts: int = 0
    alerts_by_kind: Mapping[str, int] = field(default_factory=dict)
    halts: int = 0
    halts_active: int = 0
    instruments: int = 0
    bars: int = 0
    last_event: datetime | None = None

    @property
    def is_empty(self) -> bool:
        return not (self.alerts or self.halts or self.bars)


def _polars(rel: Relation) -> pl.DataFrame:
    df: pl.DataFrame = rel.pl()
    return df


def _sql_str(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


class StoreReader:
    """Queries over a store directory; safe to share between threads (queries serialise).

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     StoreReader(Path(d)).counts().is_empty
    True
    """

    def __init__(self, store_dir: Path) -> None:
        self.store_dir = Path(store_dir)
        self._lock = threading.Lock()
        self._con = duckdb.connect()
        self._con.execute("SET TimeZone = 'UTC'")
        self._files: dict[Kind, list[Path] | None] = dict.fromkeys(KINDS)
        for kind in KINDS:
            self._con.register(f"_empty_{kind}", SCHEMAS[kind].empty_table())
            self._point(kind, [])
            keys = ", ".join(KEYS[kind])
            self._con.execute(
                f"CREATE OR REPLACE VIEW {kind} AS SELECT * FROM _{kind}_raw "
                f"QUALIFY row_number() OVER (PARTITION BY {keys} ORDER BY ts) = 1"
            )

    # -- plumbing -----------------------------------------------------------------------------

    def _point(self, kind: Kind, files: list[Path]) -> None:
        if files:
            listing = ", ".join(_sql_str(str(p)) for p in files)
            source = f"read_parquet([{listing}], union_by_name = true)"
        else:
            source = f"_empty_{kind}"
        self._con.execute(f"CREATE OR REPLACE VIEW _{kind}_raw AS SELECT * FROM {source}")
        self._files[kind] = files

    def _refresh(self) -> None:
        for kind in KINDS:
            files = part_files(self.store_dir / kind)
            if files != self._files[kind]:
                self._point(kind, files)

    def _run(self, sql: str, params: Mapping[str, Any], fetch: Callable[[Relation], T]) -> T:
        """Refresh the views, run ``sql`` and fetch; re-list and retry if a file vanished.

        Compaction deletes a merged-away part a grace period after retiring it from listings,
        so only a listing older than that can name a vanished file; a fresh one works.
        """
        for attempt in range(_ATTEMPTS):
            try:
                self._refresh()
                return fetch(self._con.sql(sql, params=dict(params)))
            except duckdb.IOException:
                if attempt == _ATTEMPTS - 1:
                    raise
                self._files = dict.fromkeys(KINDS)
        raise AssertionError("unreachable")

    def frame(self, sql: str, **params: Any) -> pl.DataFrame:
        """Any SQL over the views ``alerts``, ``halts`` and ``bars``, as a polars frame."""
        with self._lock:
            return self._run(sql, params, _polars)

    def rows(self, sql: str, **params: Any) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._run(sql, params, lambda rel: rel.fetchall())

    def close(self) -> None:
        with self._lock:
            self._con.close()

    # -- queries ------------------------------------------------------------------------------

    def instruments(self) -> list[str]:
        """Every instrument seen in bars, halts (not market-wide ``*``) or alerts, sorted."""
        return [r[0] for r in self.rows(
            # distinct values need no deduplication: the raw views are cheaper
            "SELECT instrument FROM _bars_raw UNION SELECT instrument FROM _halts_raw "
            "WHERE instrument <> '*' UNION SELECT instrument FROM _alerts_raw "
            "WHERE instrument IS NOT NULL ORDER BY 1"
        )]

    def bars(
        self,
        instrument: str,
        *,
        venue: str | None = None,
        window_s: float | None = None,
        limit: int = 20_000,
    ) -> pl.DataFrame:
        """One-second bars of an instrument, oldest first: the newest ``limit`` of them, and
        with ``window_s`` only those within that many seconds of the newest bar."""
        return self.frame(
            "WITH b AS (SELECT venue, instrument, ts, open, high, low, close, volume, notional, "
            "trades FROM bars WHERE instrument = $instrument "
            "AND ($venue::VARCHAR IS NULL OR venue = $venue)) "
            "SELECT * FROM (SELECT * FROM b WHERE $window_us::BIGINT IS NULL "
            "OR epoch_us(ts) >= (SELECT max(epoch_us(ts)) FROM b) - $window_us "
            "ORDER BY ts DESC LIMIT $limit) ORDER BY ts, venue",
            instrument=instrument, venue=venue, limit=limit,
            window_us=None if window_s is None else int(window_s * 1e6),
        )

    def bars_between(self, instrument: str, start: datetime, end: datetime, *,
                     limit: int = 20_000) -> pl.DataFrame:
        """One-second bars of an instrument from ``start`` to ``end``, oldest first."""
        return self.frame(
            "SELECT venue, instrument, ts, open, high, low, close, volume, notional, trades "
            "FROM bars WHERE instrument = $instrument AND ts BETWEEN $start AND $end "
            "ORDER BY ts, venue LIMIT $limit",
            instrument=instrument, start=start, end=end, limit=limit)

    def halts(
        self,
        instrument: str | None = None,
        *,
        venue: str | None = None,
        limit: int = 200,
        market_wide: bool = True,
    ) -> pl.DataFrame:
        """Halt and resume signals, newest first; for one instrument, market-wide ones too."""
        return self.frame(
            "SELECT ts, venue, instrument, state, reason, resume_at, reference_price, band_low, "
            "band_high, alert_ids, seq, emitted_at FROM halts "
            "WHERE ($instrument::VARCHAR IS NULL OR instrument = $instrument "
            "OR ($market_wide AND instrument = '*')) "
            "AND ($venue::VARCHAR IS NULL OR venue = $venue) "
            "ORDER BY ts DESC, seq DESC LIMIT $limit",
            instrument=instrument, venue=venue, limit=limit, market_wide=market_wide,
        )

    def venues(self) -> list[str]:
        """Every venue seen in bars or halts, sorted."""
        return [r[0] for r in self.rows(
            "SELECT venue FROM _bars_raw UNION SELECT venue FROM _halts_raw ORDER BY 1")]

    def halt_board(self) -> pl.DataFrame:
        """Current state per (venue, instrument): the latest signal, and since when it holds.

        ``since`` is the time the current state began (a halt extended by a second HALTED
        signal keeps its start); halted instruments come first. ``seq`` and ``emitted_at`` are
        the latest signal's; ``acked_at`` is when an exchange first acknowledged applying that
        very signal (``halt_acks``; null: no acknowledgement stored) and ``acked_by`` which.
        """
        return self.frame(
            "WITH h AS (SELECT *, lag(state) OVER (PARTITION BY venue, instrument ORDER BY seq)"
            " AS prev FROM halts), "
            "starts AS (SELECT venue, instrument, arg_max(ts, seq) FILTER "
            "(WHERE prev IS NULL OR prev <> state) AS since FROM h GROUP BY venue, instrument), "
            "latest AS (SELECT * FROM halts QUALIFY row_number() OVER "
            "(PARTITION BY venue, instrument ORDER BY seq DESC) = 1) "
            "SELECT l.venue, l.instrument, l.state, l.reason, s.since, l.resume_at, "
            "l.reference_price, l.band_low, l.band_high, l.alert_ids, l.ts AS last_signal, "
            "l.state <> 'TRADING' AS active, l.seq, l.emitted_at, a.acked_at, a.acked_by "
            "FROM latest l JOIN starts s USING (venue, instrument) "
            "LEFT JOIN (SELECT venue, instrument, seq, min(applied_at) AS acked_at, "
            "string_agg(DISTINCT exchange, ', ' ORDER BY exchange) AS acked_by FROM _acks_raw "
            "GROUP BY ALL) a USING (venue, instrument, seq) "
            "ORDER BY active DESC, s.since DESC, l.instrument"
        )

    def latest_alerts(
        self,
        limit: int = 50,
        kind: str | None = None,
        *,
        min_score: float = 0.0,
        instrument: str | None = None,
    ) -> pl.DataFrame:
        """The newest alerts (without evidence), optionally of one kind / instrument."""
        return self.frame(
            f"SELECT {_ALERT_COLUMNS} FROM alerts "
            "WHERE ($kind::VARCHAR IS NULL OR kind = $kind) AND score >= $min_score "
            "AND ($instrument::VARCHAR IS NULL OR instrument = $instrument) "
            "ORDER BY ts DESC, score DESC, alert_id LIMIT $limit",
            kind=kind, min_score=min_score, instrument=instrument, limit=limit,
        )

    def alert(self, alert_id: str) -> dict[str, Any] | None:
        """One alert with its evidence decoded, or None."""
        df = self.frame("SELECT * FROM alerts WHERE alert_id = $id", id=alert_id)
        if df.is_empty():
            return None
        record = df.row(0, named=True)
        record["evidence"] = json.loads(record["evidence"] or "{}")
        return record

    def alert_kinds(self) -> list[str]:
        return [r[0] for r in self.rows("SELECT DISTINCT kind FROM _alerts_raw ORDER BY 1")]

    def counts(self) -> StoreCounts:
        """Alerts (total and by kind), halts (total, active now), instruments, bars."""
        by_kind = dict(self.rows(
            "SELECT kind, count(*) FROM alerts GROUP BY kind ORDER BY 2 DESC, 1"))
        ((halts, bars, last),) = self.rows(
            "SELECT (SELECT count(*) FROM halts), "
            "(SELECT count(*) FROM (SELECT DISTINCT venue, instrument, ts FROM _bars_raw)), "
            "greatest((SELECT max(ts) FROM _alerts_raw), (SELECT max(ts) FROM _halts_raw), "
            "(SELECT max(ts) FROM _bars_raw))"
        )
        board = self.halt_board()
        return StoreCounts(
            alerts=sum(by_kind.values()),
            alerts_by_kind=by_kind,
            halts=halts,
            halts_active=int(board["active"].sum()) if board.height else 0,
            instruments=len(self.instruments()),
            bars=bars,
            last_event=last,
        )
