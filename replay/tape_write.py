"""Writing tapes: validated frames in, CSV/JSONL text or Parquet out, atomically.

Internal to :mod:`replay.tape`; import :func:`write_tape` from there.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from itertools import islice
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq

from replay.tape_common import (
    _REQUIRED,
    TRADE_COLUMNS,
    TapeError,
    _json_raw,
    _missing,
    _open_out,
    tape_format,
)
from replay.tape_frames import _frame_of, _normalise_typed, _validate
from streams.contracts import Trade

__all__ = ["write_tape"]


def write_tape(trades: Iterable[Trade] | pl.DataFrame, path: Path | str, *,
               chunk_rows: int = 100_000) -> None:
    """Write trades as a tape in the format named by the suffix (atomically: all or nothing).

    ``trades`` may be :class:`Trade` structs or a polars frame with the columns of DESIGN §3.1
    (typed: ``ts`` as epoch seconds, a zoned timestamp or ISO strings). Only contract columns
    are written, in :data:`TRADE_COLUMNS` order; ``ts`` becomes an ISO-8601 UTC string with
    microseconds (CSV, JSONL) or a UTC microsecond timestamp (Parquet). Trades that break the
    contract raise :class:`TapeError` and nothing is written.
    """
    path = Path(path)
    fmt = tape_format(path)
    frames = _frames_to_write(trades, chunk_rows)
    tmp = path.with_name(f".{path.name}.part")
    try:
        if fmt == "parquet":
            _write_parquet(frames, tmp)
        else:
            with _open_out(tmp, fmt.endswith(".gz")) as out:
                for i, frame in enumerate(frames):
                    text = frame.with_columns(ts=_utc(pl.col("ts")).dt.strftime(
                        "%Y-%m-%dT%H:%M:%S%.6fZ"))
                    if fmt.startswith("csv"):
                        text.write_csv(out, include_header=i == 0)
                    else:
                        text.write_ndjson(out)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# --- writing -----------------------------------------------------------------------------------


def _utc(ts: pl.Expr) -> pl.Expr:
    """Epoch seconds as a UTC timestamp with microseconds, rounded as ``datetime.fromtimestamp``
    rounds (whole seconds plus the rounded fraction: ``ts * 1e6`` itself loses the last digit)."""
    whole = ts.floor()
    us = whole.cast(pl.Int64) * 1_000_000 + ((ts - whole) * 1_000_000).round().cast(pl.Int64)
    return us.cast(pl.Datetime("us", "UTC"))


def _checked(frame: pl.DataFrame, first: int) -> pl.DataFrame:
    rows = pl.int_range(first, first + frame.height, eager=True)
    valid, rejects = _validate(frame, rows, strict=True, raw_of=_json_raw(frame.columns))
    if rejects:
        r = rejects[0]
        raise TapeError(f"refusing to write {len(rejects)} invalid trade(s); "
                        f"the first, #{r.row}: {r.reason}")
    return valid


def _frames_to_write(trades: Iterable[Trade] | pl.DataFrame,
                     chunk_rows: int) -> Iterator[pl.DataFrame]:
    """Validated frames of at most ``chunk_rows`` trades; at least one (maybe empty)."""
    if isinstance(trades, pl.DataFrame):
        _missing("frame", trades.columns, _REQUIRED, "a trade frame")
        df = _normalise_typed(trades.select([c for c in TRADE_COLUMNS if c in trades.columns]))
        for start in range(0, max(df.height, 1), chunk_rows):
            yield _checked(df.slice(start, chunk_rows), start + 1)
        return
    it = iter(trades)
    first = 1
    while True:
        batch = list(islice(it, chunk_rows))
        try:
            frame = _frame_of(batch)
        except ValueError as exc:
            raise TapeError(f"cannot write trades #{first}-#{first + len(batch) - 1}: {exc}") \
                from None
        yield _checked(frame, first)
        first += len(batch)
        if len(batch) < chunk_rows:
            return


def _write_parquet(frames: Iterator[pl.DataFrame], path: Path) -> None:
    writer: pq.ParquetWriter | None = None
    try:
        for frame in frames:
            table = frame.with_columns(ts=_utc(pl.col("ts"))).to_arrow(
                compat_level=pl.CompatLevel.oldest())
            if writer is None:
                writer = pq.ParquetWriter(path, table.schema, compression="zstd")
            writer.write_table(table)
    finally:
        if writer is not None:
            writer.close()
