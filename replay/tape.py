"""Tape files in and out (DESIGN §3.3): trades, the agent registry and labels.

A tape holds one trade per row with the columns of DESIGN §3.1, as ``.csv``, ``.parquet`` or
``.jsonl`` (``.csv.gz`` and ``.jsonl.gz`` too); the suffix names the format. Reading never fails
on a bad row: the row becomes a :class:`RowReject` (its number, the reason the contract gives and
its text) and the good rows are kept in file order. A file that cannot be read as a tape at all
(missing, unknown suffix, no header, required columns absent, corrupt Parquet or gzip) raises
:class:`TapeError`.

One contract, three doors. JSONL lines go through :func:`streams.contracts.decode_message`, the
function that judges Kafka messages. CSV cells (strings, numbers written as text) and Parquet
columns (typed) are judged by polars expressions that accept only rows
:func:`streams.contracts.validate_row` accepts, with the same values; every other row is handed to
``validate_row`` itself, so reasons are the contract's word for word. Row numbers: CSV and Parquet
count data rows (1 = the first row after the header, blank lines not counted); JSONL counts lines
(blank ones included), so a number is what an editor shows.

Decisions:

- A JSONL line holding a JSON array is rejected: a tape row is one trade (arrays are the Kafka
  batch format), and one line, one verdict keeps row numbers meaningful.
- A Parquet ``ts`` timestamp with a zone (any zone, or UTC-normalised) is fine; a naive one breaks
  the contract (no zone), and each row is rejected saying so, as a naive ISO string is in CSV.
- Parquet is typed, so it is judged strictly (``validate_row(strict=True)``): integers and
  decimals are fine for float columns, a number held as text is not. CSV is all text
  (``strict=False``). In both, a null or empty cell means "absent" (so an empty ``venue`` is
  ``"default"``), as ``validate_row`` has it.
- ``ts`` is written with microsecond precision, exact for instants before 2255.

Speed (2 cores, 1M rows, 10 columns): :func:`iter_tape` frames ~1M rows/s from CSV and ~3M
rows/s from Parquet; :func:`read_tape`, which also builds a :class:`Trade` per row, ~0.4-0.5M
rows/s. Columnar consumers should use :attr:`TapeChunk.frame`.

>>> import tempfile, pathlib
>>> t = Trade(ts=1767225600.5, trade_id="t1", instrument="GPU-H100-1H", price=2.5, qty=1.0,
...           buyer="a", seller="b")
>>> path = pathlib.Path(tempfile.mkdtemp()) / "tape.csv"
>>> write_tape([t], path)
>>> path.read_text().splitlines()[1]
'2026-01-01T00:00:00.500000Z,t1,default,GPU-H100-1H,,2.5,1.0,a,b,'
>>> read = read_tape(path)
>>> read.trades == [t], read.rejects, read.rows, read.format
(True, [], 1, 'csv')
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import zlib
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from itertools import islice
from pathlib import Path
from typing import IO, Any, Final, cast

import msgspec
import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from streams.contracts import MAX_EPOCH_S, Agent, Trade, decode_message, parse_ts, validate_row

__all__ = [
    "FRAME_SCHEMA",
    "TRADE_COLUMNS",
    "AgentsRead",
    "RowReject",
    "TapeChunk",
    "TapeError",
    "TapeRead",
    "dedupe",
    "iter_tape",
    "read_agents",
    "read_labels",
    "read_tape",
    "tape_format",
    "write_labels",
    "write_tape",
]

#: Trade columns in the order tapes are written (every field of :class:`Trade`).
TRADE_COLUMNS: Final = ("ts", "trade_id", "venue", "instrument", "asset_class", "price", "qty",
                        "buyer", "seller", "aggressor")
#: Schema of :attr:`TapeChunk.frame`: valid trades, ``ts`` in epoch seconds.
FRAME_SCHEMA: Final = pl.Schema({c: pl.Float64 if c in ("ts", "price", "qty") else pl.String
                                 for c in TRADE_COLUMNS})
_FIELDS: Final = {f.name: f for f in cast(msgspec.inspect.StructType,
                                           msgspec.inspect.type_info(Trade)).fields}
_REQUIRED: Final = tuple(c for c in TRADE_COLUMNS if _FIELDS[c].required)
_SUFFIXES: Final = (("csv.gz", ".csv.gz"), ("jsonl.gz", ".jsonl.gz"), ("csv", ".csv"),
                    ("jsonl", ".jsonl"), ("parquet", ".parquet"))
# Numbers as text that msgspec's lax mode reads as floats (the JSON number grammar, unsigned) and
# that Python's float() reads for ts; other spellings take the per-row path.
_NUMBER: Final = r"^(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?$"
_EPOCH: Final = r"^[0-9]+(\.[0-9]+)?([eE][+-]?[0-9]+)?$"
# The ISO-8601 spelling judged in bulk (RFC 3339 with 'T', up to microseconds); other spellings,
# and dates polars rejects (Feb 30), take the per-row path through datetime.fromisoformat.
_ISO: Final = (r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]"
               r"(\.[0-9]{1,6})?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$")
_ARRAY_REASON: Final = "invalid_trade: a tape line holds one trade object, not a JSON array"


class TapeError(ValueError):
    """The file cannot be read (or written) as a tape at all; bad rows never raise this."""


@dataclass(frozen=True, slots=True)
class RowReject:
    """A row that broke the contract: its 1-based number, the reason and the row's text."""

    row: int
    reason: str
    raw: str


class TapeChunk:
    """Consecutive rows of a tape: the valid trades (as a frame and as structs) and the rejects.

    ``frame`` (schema :data:`FRAME_SCHEMA`) and ``trades`` hold the same trades in file order;
    each is built on first use from the other, so a columnar consumer never pays for structs.
    """

    __slots__ = ("_frame", "_trades", "rejects", "rows")

    def __init__(self, *, rejects: list[RowReject], rows: int, frame: pl.DataFrame | None = None,
                 trades: list[Trade] | None = None) -> None:
        self._frame, self._trades = frame, trades
        self.rejects = rejects
        self.rows = rows  #: data rows (CSV/Parquet) or non-blank lines (JSONL) in the chunk

    @property
    def frame(self) -> pl.DataFrame:
        if self._frame is None:
            self._frame = _frame_of(self._trades or [])
        return self._frame

    @property
    def trades(self) -> list[Trade]:
        if self._trades is None:
            self._trades = _trades_of(self.frame)
        return self._trades

    def __repr__(self) -> str:
        valid = self.frame.height if self._trades is None else len(self._trades)
        return f"TapeChunk(rows={self.rows}, valid={valid}, rejects={len(self.rejects)})"


@dataclass(slots=True)
class TapeRead:
    """A whole tape: valid trades in file order, rejects, data rows seen and the format."""

    trades: list[Trade]
    rejects: list[RowReject]
    rows: int
    format: str


@dataclass(slots=True)
class AgentsRead:
    """An agent registry file (DESIGN §3.2): valid agents in file order and rejects."""

    agents: list[Agent]
    rejects: list[RowReject]
    rows: int
    format: str


def tape_format(path: Path | str) -> str:
    """The format named by the suffix: ``csv``, ``csv.gz``, ``parquet``, ``jsonl``, ``jsonl.gz``.

    >>> tape_format("day1.CSV.gz"), tape_format("x.parquet")
    ('csv.gz', 'parquet')
    """
    name = Path(path).name.lower()
    for fmt, suffix in _SUFFIXES:
        if name.endswith(suffix):
            return fmt
    raise TapeError(f"{path}: unknown tape format; the name must end in "
                    f"{', '.join(s for _, s in _SUFFIXES)}")


def read_tape(path: Path | str) -> TapeRead:
    """Read a whole tape (see :func:`iter_tape` for big ones)."""
    trades: list[Trade] = []
    rejects: list[RowReject] = []
    rows = 0
    for chunk in iter_tape(path, chunk_rows=250_000):
        trades.extend(chunk.trades)
        rejects.extend(chunk.rejects)
        rows += chunk.rows
    return TapeRead(trades, rejects, rows, tape_format(path))


def iter_tape(path: Path | str, *, chunk_rows: int = 50_000) -> Iterator[TapeChunk]:
    """Read a tape in chunks of at most ``chunk_rows`` rows, in file order, in bounded memory.

    The file is opened and its header checked now (raising :class:`TapeError`); rows are read
    as the chunks are consumed.
    """
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be at least 1, got {chunk_rows}")
    path = Path(path)
    fmt = tape_format(path)
    _check_file(path, gz=fmt.endswith(".gz"), text=fmt != "parquet")
    if fmt == "parquet":
        return _parquet_chunks(path, chunk_rows)
    if fmt.startswith("csv"):
        return _csv_chunks(path, fmt == "csv.gz", chunk_rows)
    return _jsonl_chunks(path, fmt == "jsonl.gz", chunk_rows)


def dedupe(trades: Iterable[Trade]) -> tuple[list[Trade], int]:
    """Keep the first trade of each ``(venue, trade_id)``; return them and how many were dropped.

    >>> a = Trade(ts=1.0, trade_id="t", instrument="I", price=1.0, qty=1.0, buyer="a", seller="b")
    >>> kept, dropped = dedupe([a, a, msgspec.structs.replace(a, venue="v2")])
    >>> len(kept), dropped
    (2, 1)
    """
    seen: set[tuple[str, str]] = set()
    kept: list[Trade] = []
    dropped = 0
    for t in trades:
        key = (t.venue, t.trade_id)
        if key in seen:
            dropped += 1
        else:
            seen.add(key)
            kept.append(t)
    return kept, dropped


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


def read_agents(path: Path | str) -> AgentsRead:
    """Read an agent registry file (``.csv``, ``.parquet``, ``.jsonl``, optionally ``.gz``).

    Empty cells and empty strings count as absent; ``created_ts`` is normalised to epoch seconds
    (a time without a zone is rejected, as for trades). Repeated ``agent_id`` rows are all kept.
    """
    path = Path(path)
    fmt = tape_format(path)
    gz = fmt.endswith(".gz")
    _check_file(path, gz=gz, text=fmt != "parquet")
    agents: list[Agent] = []
    rejects: list[RowReject] = []
    rows = 0
    for row, record, raw, problem in _agent_records(path, fmt):
        rows += 1
        try:
            if problem:
                raise ValueError(problem)
            agents.append(_agent(record, strict=not fmt.startswith("csv")))
        except ValueError as exc:
            rejects.append(RowReject(row, str(exc), raw))
    return AgentsRead(agents, rejects, rows, fmt)


def read_labels(path: Path | str) -> list[dict[str, Any]]:
    """Read ``labels.jsonl`` (DESIGN §3.4), each line validated against ``label.schema.json``.

    Labels are ground truth, so an invalid one is not skipped: :class:`TapeError` names every bad
    line. Also checked: ``t_start`` is not after ``t_end``.
    """
    path = Path(path)
    gz = _label_format(path)
    _check_file(path, gz=gz, text=True)
    labels: list[dict[str, Any]] = []
    problems: list[str] = []
    with _open_bytes(path, gz) as f:
        for lineno, line in enumerate(_lines(f, path), 1):
            if line.strip():
                try:
                    labels.append(_label(msgspec.json.decode(line)))
                except (msgspec.DecodeError, ValueError) as exc:
                    problems.append(f"line {lineno}: {exc}")
    if problems:
        raise TapeError(f"{path}: {len(problems)} invalid label(s): " + "; ".join(problems[:10]))
    return labels


def write_labels(labels: Iterable[Mapping[str, Any]], path: Path | str) -> None:
    """Write labels as JSON lines (``.jsonl`` or ``.jsonl.gz``), after validating every one."""
    path = Path(path)
    gz = _label_format(path)
    lines: list[bytes] = []
    for i, label in enumerate(labels, 1):
        try:
            lines.append(msgspec.json.encode(_label(dict(label))) + b"\n")
        except (TypeError, ValueError) as exc:
            raise TapeError(f"label {i}: {exc}") from None
    tmp = path.with_name(f".{path.name}.part")
    try:
        with _open_out(tmp, gz) as out:
            out.writelines(lines)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# --- files -----------------------------------------------------------------------------------


def _check_file(path: Path, *, gz: bool, text: bool) -> None:
    """Raise TapeError unless ``path`` is a readable file whose first bytes fit its format."""
    try:
        with path.open("rb") as f:
            head = f.read(4)
    except FileNotFoundError:
        raise TapeError(f"{path}: no such file") from None
    except OSError as exc:
        raise TapeError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if gz and head[:2] != b"\x1f\x8b":
        raise TapeError(f"{path}: not gzip-compressed, though the name ends in .gz")
    if not gz and head[:2] == b"\x1f\x8b":
        raise TapeError(f"{path}: gzip-compressed; name it {path.name}.gz")
    if text and head == b"PAR1":
        raise TapeError(f"{path}: a Parquet file; name it {path.stem}.parquet")


def _open_bytes(path: Path, gz: bool) -> IO[bytes]:
    return cast(IO[bytes], gzip.open(path, "rb") if gz else path.open("rb"))


def _open_out(path: Path, gz: bool) -> IO[bytes]:
    return cast(IO[bytes], gzip.open(path, "wb", compresslevel=6) if gz else path.open("wb"))


def _lines(f: IO[bytes], path: Path) -> Iterator[bytes]:
    """Lines of a (possibly gzip) binary file; a damaged gzip stream raises TapeError."""
    try:
        first = True
        for line in f:
            if first:
                line, first = line.removeprefix(b"\xef\xbb\xbf"), False
            yield line
    except (OSError, EOFError, zlib.error) as exc:
        raise TapeError(f"{path}: cannot read: {exc}") from None


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "backslashreplace")


# --- the contract, in bulk ---------------------------------------------------------------------


def _bounds(expr: pl.Expr, spec: Any) -> pl.Expr:
    """The numeric (gt/ge/lt/le) or length (min/max_length) constraints of a msgspec type."""
    ok = pl.lit(True)
    for attr, test in (("gt", expr.__gt__), ("ge", expr.__ge__), ("lt", expr.__lt__),
                       ("le", expr.__le__)):
        if getattr(spec, attr, None) is not None:
            ok = ok & test(getattr(spec, attr))
    length = expr.str.len_chars() if hasattr(spec, "min_length") else None
    if length is not None and spec.min_length is not None:
        ok = ok & (length >= spec.min_length)
    if length is not None and spec.max_length is not None:
        ok = ok & (length <= spec.max_length)
    return ok


def _plan(schema: pl.Schema, *, strict: bool) -> tuple[list[pl.Expr], list[pl.Expr]]:
    """Two stages of polars expressions judging rows in bulk.

    Stage 1 gives each trade column's value as ``validate_row(row, strict=strict)`` reads it
    (null where absent or not judged in bulk); stage 2, on those values, whether the row surely
    passes. A row that passes is one ``validate_row`` accepts with the same values; a row that
    does not goes to ``validate_row`` itself (and may still pass).
    """
    values: list[pl.Expr] = []
    oks: list[pl.Expr] = []
    for name in TRADE_COLUMNS:
        field = _FIELDS[name]
        dtype = schema.get(name, pl.Null())
        col = pl.col(name) if name in schema else pl.lit(None)
        spec = field.type
        if isinstance(spec, msgspec.inspect.UnionType):
            spec = next(t for t in spec.types if not isinstance(t, msgspec.inspect.NoneType))
        v = pl.col(name)
        if name == "ts":
            values.append(_ts_value(col, dtype, strict=strict).alias(name))
            ok = v.is_finite() & (v >= 0) & (v < MAX_EPOCH_S)
        elif isinstance(spec, msgspec.inspect.FloatType):
            if _is_number(dtype):
                value = col.cast(pl.Float64)
            elif dtype == pl.String and not strict:
                value = pl.when(col.str.contains(_NUMBER)).then(col.cast(pl.Float64, strict=False))
            else:
                value = pl.lit(None, pl.Float64)
            values.append(value.alias(name))
            ok = v.is_finite() & _bounds(v, spec)
        else:  # text: validate_row drops null and "" values, so both mean "absent"
            text = pl.when(col != "").then(col) if dtype == pl.String else pl.lit(None, pl.String)
            values.append(text.alias(name))
            absent_ok = pl.lit(not field.required)
            if dtype not in (pl.String, pl.Null):  # another type passes only where it is null
                values.append(col.is_null().alias(f"_null_{name}"))
                absent_ok = absent_ok & pl.col(f"_null_{name}")
            if isinstance(spec, msgspec.inspect.LiteralType):
                good = v.is_in(list(spec.values))
            else:
                good = _bounds(v, spec)
            ok = pl.when(v.is_null()).then(absent_ok).otherwise(good)
        oks.append(ok.fill_null(False))
    return values, oks


#: The valid rows' final values: absent optional text takes the field's default.
_FINAL: Final = [pl.col(c).fill_null(f.default) if isinstance(f.default, str) else pl.col(c)
                 for c, f in ((c, _FIELDS[c]) for c in TRADE_COLUMNS)]


def _is_number(dtype: pl.DataType) -> bool:
    return dtype.is_numeric() and not isinstance(dtype, pl.Boolean | pl.Decimal)


def _seconds(us: pl.Expr) -> pl.Expr:
    """Epoch microseconds (Int64) to seconds, correctly rounded as Python's ``us / 10**6``.

    Polars divides by a scalar through its reciprocal (one ulp off at times), and an Int64
    beyond 2**53 (after the year 2255) does not fit a double before dividing.
    """
    return us.cast(pl.Int64).map_batches(_us_to_seconds, return_dtype=pl.Float64,
                                         is_elementwise=True)


def _us_to_seconds(s: pl.Series) -> pl.Series:
    us = s.fill_null(0).to_numpy()
    seconds = us / 1e6
    big = np.abs(us) >= 2**53
    if big.any():
        seconds[big] = [int(u) / 10**6 for u in us[big]]
    return pl.Series(s.name, seconds).set(s.is_null(), None)


def _ts_value(col: pl.Expr, dtype: pl.DataType, *, strict: bool) -> pl.Expr:
    """Epoch seconds for the ts spellings judged in bulk, else null."""
    if _is_number(dtype):
        return col.cast(pl.Float64)
    if dtype != pl.String:
        return pl.lit(None, pl.Float64)
    iso = col.str.to_datetime("%+", time_unit="us", strict=False).dt.epoch("us")
    value = _seconds(pl.when(col.str.contains(_ISO)).then(iso))
    if strict:
        return value
    # validate_row reads a CSV ts with Python's float() first
    number = col.cast(pl.Float64, strict=False)
    return pl.when(col.str.contains(_EPOCH)).then(number).otherwise(value)


def _normalise_typed(df: pl.DataFrame) -> pl.DataFrame:
    """Typed input (Parquet, frames) in the types the contract speaks: str, float, epoch ts."""
    fixes: list[pl.Expr] = []
    for name, dtype in df.schema.items():
        if isinstance(dtype, pl.Categorical | pl.Enum):
            fixes.append(pl.col(name).cast(pl.String))
        elif isinstance(dtype, pl.Decimal):
            fixes.append(pl.col(name).cast(pl.Float64))
        elif isinstance(dtype, pl.Datetime) and name == "ts":
            if dtype.time_zone is None:  # rejected per row: "ts has no time zone: '…'"
                fixes.append(pl.col(name).dt.strftime("%Y-%m-%dT%H:%M:%S%.6f"))
            else:
                fixes.append(_seconds(pl.col(name).dt.epoch("us")))
    return df.with_columns(fixes) if fixes else df


def _validate(df: pl.DataFrame, rows: pl.Series, *, strict: bool,
              raw_of: Callable[[tuple[Any, ...]], str]) -> tuple[pl.DataFrame, list[RowReject]]:
    """Valid trades of ``df`` (in order, :data:`FRAME_SCHEMA`) and rejects for the others."""
    values, oks = _plan(df.schema, strict=strict)
    checked = df.select(*values, _row=rows).with_columns(_ok=pl.all_horizontal(oks))
    if checked["_ok"].all():
        return checked.select(_FINAL), []
    bad = checked["_ok"].not_()
    rejects: list[RowReject] = []
    rescued: list[Trade] = []
    rescued_rows: list[int] = []
    bad_df = df.filter(bad)
    for rowno, record, raw in zip(rows.filter(bad), bad_df.iter_rows(named=True),
                                  bad_df.iter_rows(), strict=True):
        try:
            rescued.append(validate_row(record, strict=strict))
            rescued_rows.append(rowno)
        except ValueError as exc:
            rejects.append(RowReject(rowno, str(exc), raw_of(raw)))
    good = checked.filter("_ok").select(*_FINAL, "_row")
    if rescued:
        extra = _frame_of(rescued).with_columns(_row=pl.Series(rescued_rows, dtype=pl.Int64))
        good = pl.concat([good, extra]).sort("_row")
    return good.drop("_row"), rejects


def _trades_of(frame: pl.DataFrame) -> list[Trade]:
    """Structs from a validated frame (the constructor checks nothing; the frame was checked)."""
    rows = zip(*(frame[c].to_list() for c in TRADE_COLUMNS), strict=True)
    return [Trade(ts=ts, trade_id=tid, venue=venue, instrument=inst, asset_class=ac, price=price,
                  qty=qty, buyer=buyer, seller=seller, aggressor=aggr)
            for ts, tid, venue, inst, ac, price, qty, buyer, seller, aggr in rows]


def _frame_of(trades: Sequence[Trade]) -> pl.DataFrame:
    """Trades as a frame of :data:`FRAME_SCHEMA` (``ts`` parsed to epoch seconds if needed)."""
    cols: dict[str, list[Any]] = {c: [getattr(t, c) for t in trades] for c in TRADE_COLUMNS}
    cols["ts"] = [v if type(v) is float else parse_ts(v) for v in cols["ts"]]
    return pl.DataFrame(cols, schema=FRAME_SCHEMA, strict=False)


def _json_raw(columns: Sequence[str]) -> Callable[[tuple[Any, ...]], str]:
    return lambda values: json.dumps(dict(zip(columns, values, strict=True)), default=str,
                                     ensure_ascii=False)


def _csv_raw(values: Sequence[Any]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="").writerow(["" if v is None else v for v in values])
    return buf.getvalue().encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _missing(where: object, columns: Iterable[str], required: Sequence[str], what: str) -> None:
    have = set(columns)
    missing = [c for c in required if c not in have]
    if missing:
        raise TapeError(f"{where}: not {what}: missing column(s) {', '.join(missing)}")


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


def _is_utf8(values: Sequence[str]) -> bool:
    try:
        "".join(values).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


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


def _from_arrow(data: pa.Table | pa.RecordBatch) -> pl.DataFrame:
    df = pl.from_arrow(data)
    assert isinstance(df, pl.DataFrame)
    return df


# --- Parquet and JSONL -------------------------------------------------------------------------


def _parquet_chunks(path: Path, chunk_rows: int) -> Iterator[TapeChunk]:
    try:
        pf = pq.ParquetFile(path)
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


def _jsonl_chunks(path: Path, gz: bool, chunk_rows: int) -> Iterator[TapeChunk]:
    """Each line through decode_message, the Kafka path's own judge."""
    with _open_bytes(path, gz) as f:
        trades: list[Trade] = []
        rejects: list[RowReject] = []
        rows = 0
        for lineno, line in enumerate(_lines(f, path), 1):
            line = line.strip(b" \t\r\n")
            if not line:
                continue
            rows += 1
            if line[:1] == b"[":
                rejects.append(RowReject(lineno, _ARRAY_REASON, _text(line)))
            else:
                ok, reasons = _decode_line(line)
                trades += ok
                rejects += [RowReject(lineno, reason, _text(line)) for reason in reasons]
            if rows == chunk_rows:
                yield TapeChunk(trades=trades, rejects=rejects, rows=rows)
                trades, rejects, rows = [], [], 0
        if rows:
            yield TapeChunk(trades=trades, rejects=rejects, rows=rows)


def _decode_line(line: bytes) -> tuple[list[Trade], list[str]]:
    try:
        ok, bad = decode_message(line)
    except UnicodeDecodeError:  # decode_message lets msgspec's error out for bad bytes inside a
        try:                    # string; give the reason its own UTF-8 check gives
            line.decode("utf-8")
        except UnicodeDecodeError as exc:
            return [], [f"bad_encoding: not UTF-8 ({exc.reason} at byte {exc.start})"]
        raise
    return ok, [b.reason for b in bad]


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


# --- agents and labels -------------------------------------------------------------------------

_AGENT_FIELDS: Final = frozenset(Agent.__struct_fields__)


def _agent_records(path: Path,
                   fmt: str) -> Iterator[tuple[int, Mapping[str, Any], str, str | None]]:
    """``(row, record, raw, problem)`` per row of an agent file."""
    gz = fmt.endswith(".gz")
    if fmt.startswith("csv"):
        names = [h.strip() for h in _csv_header(path, gz, ("agent_id",), "an agent registry")]
        for row, rec, problem in _csv_records(path, gz, len(names)):
            yield row, dict(zip(names, rec or [], strict=False)), _csv_raw(rec or []), problem
    elif fmt == "parquet":
        try:
            df = _normalise_typed(pl.read_parquet(path))
        except (pl.exceptions.PolarsError, OSError) as exc:
            raise TapeError(f"{path}: not a readable Parquet file: {exc}") from None
        _missing(path, df.columns, ("agent_id",), "an agent registry")
        raw = _json_raw(df.columns)
        for row, (record, values) in enumerate(zip(df.iter_rows(named=True), df.iter_rows(),
                                                   strict=True), 1):
            yield row, record, raw(values), None
    else:
        with _open_bytes(path, gz) as f:
            for lineno, line in enumerate(_lines(f, path), 1):
                line = line.strip(b" \t\r\n")
                if not line:
                    continue
                try:
                    doc = msgspec.json.decode(line)
                except msgspec.DecodeError as exc:
                    yield lineno, {}, _text(line), f"bad_json: {exc}"
                    continue
                ok = isinstance(doc, dict)
                yield (lineno, doc if ok else {}, _text(line),
                       None if ok else "invalid_agent: a line holds one agent object")


def _agent(record: Mapping[str, Any], *, strict: bool) -> Agent:
    clean = {k: v for k, v in record.items()
             if k in _AGENT_FIELDS and v is not None and not (isinstance(v, str) and v == "")}
    if "created_ts" in clean:
        created = clean["created_ts"]
        if not strict and isinstance(created, str):
            try:
                created = float(created)
            except ValueError:
                pass
        try:
            clean["created_ts"] = parse_ts(created)
        except ValueError as exc:  # parse_ts speaks of "ts ..."
            raise ValueError(f"invalid_agent: created_{exc}") from None
    try:
        return msgspec.convert(clean, Agent, strict=strict)
    except msgspec.ValidationError as exc:
        raise ValueError(f"invalid_agent: {exc}") from None


def _label_format(path: Path) -> bool:
    """True for ``.jsonl.gz``; raise TapeError unless the name ends in .jsonl(.gz)."""
    fmt = tape_format(path)
    if not fmt.startswith("jsonl"):
        raise TapeError(f"{path}: labels are JSON lines; the name must end in .jsonl or .jsonl.gz")
    return fmt == "jsonl.gz"


@cache
def _label_validator() -> Any:
    from jsonschema import Draft202012Validator

    from streams.schema_files import load_schema

    return Draft202012Validator(load_schema("label"),
                                format_checker=Draft202012Validator.FORMAT_CHECKER)


def _label(doc: Any) -> dict[str, Any]:
    """``doc`` if it is a valid label, else ValueError naming every problem."""
    errors = list(_label_validator().iter_errors(doc))
    if errors:
        raise ValueError("; ".join(sorted(
            f"{'/'.join(map(str, e.absolute_path)) or 'label'}: {e.message}" for e in errors)))
    label: dict[str, Any] = doc
    try:
        start, end = parse_ts(label["t_start"]), parse_ts(label["t_end"])
    except ValueError as exc:
        raise ValueError(f"t_start/t_end: {exc}") from None
    if start > end:
        raise ValueError(f"t_start {label['t_start']} is after t_end {label['t_end']}")
    return label
