"""Reading CSV tapes (plain or gzip): pyarrow parses, polars judges; rows pyarrow cannot parse
are read by the csv module, one by one. Internal to :mod:`replay.tape`.
"""

from __future__ import annotations

import csv
import io
import zlib
from collections.abc import Generator, Iterator, Sequence
from itertools import islice
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.csv as pacsv

from replay.tape_common import (
    _REQUIRED,
    RowReject,
    TapeError,
    _csv_raw,
    _is_utf8,
    _missing,
    _open_bytes,
)
from replay.tape_frames import TapeChunk, _from_arrow, _validate

__all__: list[str] = []

# --- CSV ---------------------------------------------------------------------------------------


def _csv_header(path: Path, gz: bool, required: Sequence[str], what: str) -> list[str]:
    with _open_bytes(path, gz) as fb:
        text = io.TextIOWrapper(fb, encoding="utf-8-sig", errors="surrogateescape", newline="")
        try:
            header = next(csv.reader(text), None)
        except csv.Error as exc:
            raise TapeError(f"{path}: not a CSV file: {exc}") from None
        except (OSError, EOFError, zlib.error) as exc:
            raise TapeError(f"{path}: cannot read: {exc}") from None
    if not header:
        raise TapeError(f"{path}: empty: no header row")
    if not _is_utf8(header):
        raise TapeError(f"{path}: the header is not UTF-8 text")
    names = [h.strip() for h in header]
    if len(set(names)) < len(names):
        raise TapeError(f"{path}: repeated column names in the header")
    _missing(path, names, required, what)
    return header


def _csv_chunks(path: Path, gz: bool, chunk_rows: int) -> Iterator[TapeChunk]:
    header = _csv_header(path, gz, _REQUIRED, "a trade tape")
    return _csv_gen(path, gz, header, chunk_rows)


def _csv_gen(path: Path, gz: bool, header: list[str], chunk_rows: int) -> Iterator[TapeChunk]:
    """Fast path: pyarrow parses, polars judges. On the first row pyarrow cannot parse (wrong
    number of fields, not UTF-8) the rest of the file is read by the csv module, row by row."""
    names = [h.strip() for h in header]
    done = 0
    tables = _arrow_csv(path, gz, header, chunk_rows)
    try:
        while True:
            try:
                table = next(tables)
            except StopIteration:
                return
            except (pa.ArrowException, OSError, EOFError, zlib.error):
                break
            df = _from_arrow(table.rename_columns(names))
            rows = pl.int_range(done + 1, done + 1 + df.height, eager=True)
            frame, rejects = _validate(df, rows, strict=False, raw_of=_csv_raw)
            yield TapeChunk(frame=frame, rejects=rejects, rows=df.height)
            done += df.height
    finally:
        tables.close()
    yield from _csv_python(path, gz, names, chunk_rows, skip=done)


def _arrow_csv(path: Path, gz: bool, header: list[str],
               chunk_rows: int) -> Generator[pa.Table, None, None]:
    """Tables of exactly ``chunk_rows`` string columns (the last one shorter)."""
    stream = pa.input_stream(str(path), compression="gzip" if gz else None)
    block = max(1 << 20, min(16 << 20, chunk_rows * 128))
    try:
        reader = pacsv.open_csv(
            stream,
            read_options=pacsv.ReadOptions(column_names=header, skip_rows=1, block_size=block),
            parse_options=pacsv.ParseOptions(newlines_in_values=True),
            convert_options=pacsv.ConvertOptions(column_types=dict.fromkeys(header, pa.string()),
                                                 strings_can_be_null=False),
        )
        pending: list[pa.RecordBatch] = []
        n = 0
        for batch in reader:
            pending.append(batch)
            n += batch.num_rows
            while n >= chunk_rows:
                table = pa.Table.from_batches(pending)
                yield table.slice(0, chunk_rows)
                rest = table.slice(chunk_rows)
                pending, n = rest.to_batches(), rest.num_rows
        if n:
            yield pa.Table.from_batches(pending)
    finally:
        stream.close()


def _csv_records(path: Path, gz: bool, width: int, *,
                 skip: int = 0) -> Iterator[tuple[int, list[str] | None, str | None]]:
    """``(row, fields, problem)`` for each data row after the first ``skip``, by the csv module."""
    with _open_bytes(path, gz) as fb:
        text = io.TextIOWrapper(fb, encoding="utf-8-sig", errors="surrogateescape", newline="")
        reader = csv.reader(text)
        row = 0
        try:
            next(reader)
            while True:
                problem = None
                try:
                    rec: list[str] | None = next(reader)
                except StopIteration:
                    return
                except csv.Error as exc:
                    rec, problem = None, f"bad_csv: {exc}"
                if rec == []:  # blank line
                    continue
                row += 1
                if row <= skip:
                    continue
                if rec is not None and len(rec) != width:
                    problem = f"bad_csv: {len(rec)} fields where the header has {width}"
                elif rec is not None and not _is_utf8(rec):
                    problem = "bad_encoding: not UTF-8"
                yield row, rec, problem
        except (OSError, EOFError, zlib.error) as exc:
            raise TapeError(f"{path}: cannot read: {exc}") from None


def _csv_python(path: Path, gz: bool, names: list[str], chunk_rows: int, *,
                skip: int) -> Iterator[TapeChunk]:
    records = _csv_records(path, gz, len(names), skip=skip)
    while batch := list(islice(records, chunk_rows)):
        good = [rec for _, rec, problem in batch if problem is None and rec is not None]
        rows = pl.Series([r for r, rec, problem in batch if problem is None and rec is not None],
                         dtype=pl.Int64)
        df = pl.DataFrame(good, schema=[(n, pl.String) for n in names], orient="row")
        frame, rejects = _validate(df, rows, strict=False, raw_of=_csv_raw)
        rejects += [RowReject(r, problem, _csv_raw(rec or [])) for r, rec, problem in batch
                    if problem is not None]
        rejects.sort(key=lambda r: r.row)
        yield TapeChunk(frame=frame, rejects=rejects, rows=len(batch))
