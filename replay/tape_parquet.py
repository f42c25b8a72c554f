"""Reading Parquet tapes: typed columns, judged strictly in bulk. Internal to :mod:`replay.tape`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from replay.tape_common import _REQUIRED, TRADE_COLUMNS, TapeError, _json_raw, _missing
from replay.tape_frames import TapeChunk, _from_arrow, _normalise_typed, _validate

__all__: list[str] = []


def _parquet_chunks(path: Path, chunk_rows: int) -> Iterator[TapeChunk]:
    try:
        # no pre-buffering: pages are read as they are decoded, so memory is a batch, not a
        # row group (~110 MB less for 500k-row groups, and no slower)
        pf = pq.ParquetFile(path, pre_buffer=False, buffer_size=1 << 20)
    except (pa.ArrowException, OSError) as exc:
        raise TapeError(f"{path}: not a readable Parquet file: {exc}") from None
    names = pf.schema_arrow.names
    try:
        _missing(path, names, _REQUIRED, "a trade tape")
    except TapeError:
        pf.close()
        raise
    # file order: validate_row names a row's first problem in the order it meets the fields
    return _parquet_gen(path, pf, [c for c in names if c in TRADE_COLUMNS], chunk_rows)


def _parquet_gen(path: Path, pf: pq.ParquetFile, columns: list[str],
                 chunk_rows: int) -> Iterator[TapeChunk]:
    done = 0
    try:
        batches = pf.iter_batches(batch_size=chunk_rows, columns=columns)
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                return
            except (pa.ArrowException, OSError) as exc:
                raise TapeError(f"{path}: corrupt Parquet after row {done}: {exc}") from None
            df = _normalise_typed(_from_arrow(batch))
            rows = pl.int_range(done + 1, done + 1 + df.height, eager=True)
            frame, rejects = _validate(df, rows, strict=True, raw_of=_json_raw(df.columns))
            yield TapeChunk(frame=frame, rejects=rejects, rows=df.height)
            done += df.height
    finally:
        pf.close()
