"""Read-side queries of the market board: instruments, returns, the halt timeline, health.

Pure functions of a :class:`~dashboard.queries.StoreReader`; no Streamlit. Windows are anchored
at the newest bar in the store (not the wall clock), so a replayed day reads like a live one;
the health figures alone compare with the wall clock.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

import polars as pl

from dashboard.fmt import duration
from dashboard.queries import StoreReader
from streams.store_layout import KINDS, part_files

__all__ = ["ACK_GRACE_S", "Health", "board", "halt_timeline", "health", "returns_grid",
           "unacknowledged", "venue_index"]

#: Seconds after an active halt's emission by which an exchange must have acknowledged it.
ACK_GRACE_S: Final = 5.0
#: Seconds after which a health figure counts as stale (the banner turns red).
STALE_S: Final = {"store": 15.0, "heartbeat": 15.0, "watermark": 60.0}


def _bars_since(window_s: float) -> str:
    # filter the raw parts first, then drop duplicates: much cheaper than the deduplicated
    # view over a day of bars
    return ("SELECT * FROM _bars_raw WHERE ts >= (SELECT max(ts) FROM _bars_raw) - "
            f"to_microseconds({int(window_s * 1e6)}) QUALIFY row_number() OVER "
            "(PARTITION BY venue, instrument, ts ORDER BY ts) = 1")


def board(reader: StoreReader, *, window_s: float = 3600, buckets: int = 60) -> pl.DataFrame:
    """One row per (venue, instrument): state, last price, change over the window, band,
    volume, and a sparkline (``spark``: closes of ``buckets`` equal slices of the window)."""
    bucket_us = max(1, int(window_s * 1e6 / buckets))
    prices = reader.frame(
        f"WITH b AS ({_bars_since(window_s)}), "
        "agg AS (SELECT venue, instrument, arg_min(close, ts) AS first, arg_max(close, ts) AS last,"
        " max(ts) AS last_bar, sum(volume) AS volume, sum(notional) AS notional, "
        " sum(trades) AS trades, max(high) AS high, min(low) AS low FROM b GROUP BY ALL), "
        "sp AS (SELECT venue, instrument, list(close ORDER BY k) AS spark FROM ("
        f" SELECT venue, instrument, epoch_us(ts) // {bucket_us} AS k, arg_max(close, ts) AS close"
        " FROM b GROUP BY ALL) GROUP BY ALL) "
        "SELECT agg.*, last / first - 1 AS change, sp.spark FROM agg JOIN sp USING "
        "(venue, instrument) ORDER BY instrument, venue")
    states = reader.halt_board()
    if prices.is_empty():
        return prices
    venue_wide = states.filter((pl.col("instrument") == "*") & pl.col("active")).select(
        "venue", pl.col("state").alias("venue_state"), pl.col("reason").alias("venue_reason"),
        pl.col("since").alias("venue_since"), pl.col("acked_at").alias("venue_acked_at"),
        pl.col("emitted_at").alias("venue_emitted_at"))
    own = states.filter(pl.col("instrument") != "*").select(
        "venue", "instrument", "state", "reason", "since", "resume_at", "reference_price",
        "band_low", "band_high", "acked_at", "emitted_at")
    out = (prices.join(own, on=["venue", "instrument"], how="left")
           .join(venue_wide, on="venue", how="left")
           .with_columns(
               state=pl.when(pl.col("venue_state").is_not_null()).then(pl.col("venue_state"))
               .otherwise(pl.col("state").fill_null("TRADING")),
               reason=pl.coalesce("venue_reason", "reason"),
               # the exchange's own word, for the signal that holds the instrument
               acked_at=pl.when(pl.col("venue_state").is_not_null())
               .then(pl.col("venue_acked_at")).otherwise(pl.col("acked_at")),
               emitted_at=pl.when(pl.col("venue_state").is_not_null())
               .then(pl.col("venue_emitted_at")).otherwise(pl.col("emitted_at")))
           .drop("venue_state", "venue_reason", "venue_acked_at", "venue_emitted_at"))
    # besides its acknowledgement, the tape shows whether the exchange obeys: no bar (trade)
    # after the halt began (a bar's second may straddle the signal: one second of grace)
    since = pl.coalesce("venue_since", "since")
    out = out.with_columns(obeyed=pl.when(pl.col("state") == "TRADING").then(None).otherwise(
        pl.col("last_bar") <= since + pl.duration(seconds=1))).drop("venue_since")
    rank = pl.col("state").replace_strict({"HALTED": 0, "PAUSED": 1, "QUOTE_ONLY": 2},
                                          default=3, return_dtype=pl.Int8)
    return out.sort(rank, "instrument", "venue")


def returns_grid(reader: StoreReader, *, window_s: float = 3600,
                 bucket_s: float = 60) -> pl.DataFrame:
    """Return of each instrument in each ``bucket_s`` slice (close over previous close)."""
    bucket_us = int(bucket_s * 1e6)
    return reader.frame(
        f"WITH b AS ({_bars_since(window_s)}), k AS (SELECT venue, instrument, "
        f"time_bucket(to_microseconds({bucket_us}), ts) AS bucket, "
        "arg_max(close, ts) AS close FROM b GROUP BY ALL) "
        "SELECT venue, instrument, bucket, close, close / lag(close) OVER "
        "(PARTITION BY venue, instrument ORDER BY bucket) - 1 AS ret FROM k "
        "ORDER BY instrument, bucket")


def venue_index(grid: pl.DataFrame) -> pl.DataFrame:
    """An equal-weighted index per venue (100 at the window's start): the geometric mean of
    each instrument's price relative to its first close in the window."""
    if grid.is_empty():
        return pl.DataFrame(schema={"venue": pl.String, "bucket": pl.Datetime("us", "UTC"),
                                    "index": pl.Float64})
    rel = grid.with_columns(
        rel=(pl.col("close") / pl.col("close").first().over("venue", "instrument")).log())
    return (rel.group_by("venue", "bucket").agg(index=pl.col("rel").mean().exp() * 100)
            .sort("venue", "bucket"))


def halt_timeline(reader: StoreReader, *, window_s: float = 3600) -> pl.DataFrame:
    """Spans of non-trading state per (venue, instrument) overlapping the window (``*`` =
    the whole venue); an open span ends at the newest event in the store."""
    return reader.frame(
        "WITH ends AS (SELECT greatest((SELECT max(ts) FROM _bars_raw), "
        "(SELECT max(ts) FROM _halts_raw)) AS now), "
        "h AS (SELECT venue, instrument, state, reason, ts AS start, "
        "lead(ts) OVER (PARTITION BY venue, instrument ORDER BY seq) AS stop FROM halts) "
        "SELECT venue, CASE WHEN instrument = '*' THEN '* ' || venue ELSE instrument END "
        "AS instrument, state, reason, start, coalesce(stop, (SELECT now FROM ends)) AS stop, "
        "stop IS NULL AS open FROM h WHERE state <> 'TRADING' AND coalesce(stop, "
        "(SELECT now FROM ends)) >= (SELECT now FROM ends) - "
        f"to_microseconds({int(window_s * 1e6)}) ORDER BY instrument, start")


@dataclass(frozen=True)
class Health:
    """How alive the pipeline looks from the store; ages in wall-clock seconds (None = n/a)."""

    checked_at: datetime
    store_age_s: float | None
    newest_event: datetime | None
    watermark: datetime | None
    watermark_lag_s: float | None
    #: age of the newest stored worker heartbeat (None: the store has none)
    heartbeat_age_s: float | None
    #: workers whose heartbeat is stored from the last minute
    workers: int
    #: current halts: the latest signal of a (venue, instrument) key (``*`` too) is not TRADING
    halts_active: int
    #: current halts an exchange acknowledged applying (``halt_acks``)
    halts_acknowledged: int
    #: current halts not acknowledged within ``ACK_GRACE_S`` of their emission, in words
    unacknowledged: tuple[str, ...] = ()

    @property
    def problems(self) -> list[str]:
        """What is stale, in words (empty when all is well)."""
        out = []
        if self.store_age_s is None:
            out.append("the store has no data yet")
        elif self.store_age_s > STALE_S["store"]:
            out.append(f"the store writer last wrote {duration(self.store_age_s)} ago")
        if self.heartbeat_age_s is not None and self.heartbeat_age_s > STALE_S["heartbeat"]:
            out.append(f"the last worker heartbeat is {duration(self.heartbeat_age_s)} old")
        if self.watermark_lag_s is not None and self.watermark_lag_s > STALE_S["watermark"]:
            out.append(f"event time lags the wall clock by {duration(self.watermark_lag_s)}")
        return out


def _newest_part_mtime(reader: StoreReader) -> float | None:
    newest = None
    for kind in KINDS:
        for part in part_files(reader.store_dir / kind)[-3:]:  # names sort by write time
            try:
                mtime = os.stat(part).st_mtime
            except FileNotFoundError:
                continue
            newest = mtime if newest is None else max(newest, mtime)
    return newest


def unacknowledged(states: pl.DataFrame, now: datetime, *,
                   grace_s: float = ACK_GRACE_S) -> list[str]:
    """The active halts of a :meth:`~dashboard.queries.StoreReader.halt_board` that no exchange
    acknowledged within ``grace_s`` of their emission, in words."""
    late = states.filter(pl.col("active") & pl.col("acked_at").is_null()
                         & (pl.col("emitted_at") < now - timedelta(seconds=grace_s)))
    return [f"{'* ' + r['venue'] if r['instrument'] == '*' else r['instrument']} "
            f"{r['state']} for {duration((now - r['emitted_at']).total_seconds())}"
            for r in late.sort("emitted_at").iter_rows(named=True)]


def health(reader: StoreReader, now: datetime | None = None) -> Health:
    """Store freshness (newest part file), event-time lag (stage-2 watermark, else the newest
    bar), the workers' stored heartbeats and the exchanges' acknowledgements of the halts in
    force."""
    now = now or datetime.now(UTC)
    mtime = _newest_part_mtime(reader)
    ((newest, watermark),) = reader.rows(
        "SELECT greatest((SELECT max(ts) FROM _bars_raw), (SELECT max(ts) FROM _alerts_raw), "
        "(SELECT max(ts) FROM _halts_raw)), (SELECT max(window_end) FROM _structure_raw)")
    mark = watermark or newest
    # a heartbeat stamped ahead of the wall clock (a skewed or forged one) proves nothing
    ((beat, workers),) = reader.rows(
        "SELECT max(emitted_at), count(DISTINCT worker) FILTER (WHERE emitted_at >= $recent) "
        "FROM _heartbeats_raw WHERE emitted_at <= $ahead",
        recent=now - timedelta(seconds=60), ahead=now + timedelta(seconds=10))
    states = reader.halt_board().filter(pl.col("active"))
    return Health(
        checked_at=now,
        store_age_s=None if mtime is None else max(0.0, now.timestamp() - mtime),
        newest_event=newest,
        watermark=mark,
        watermark_lag_s=None if mark is None else (now - mark).total_seconds(),
        heartbeat_age_s=None if beat is None else max(0.0, (now - beat).total_seconds()),
        workers=int(workers or 0),
        halts_active=states.height,
        halts_acknowledged=int(states["acked_at"].is_not_null().sum()) if states.height else 0,
        unacknowledged=tuple(unacknowledged(states, now)),
    )
