"""The trade contract in bulk: polars expressions that judge CSV cells and Parquet columns as
:func:`streams.contracts.validate_row` does, and :class:`TapeChunk`, a chunk of judged rows.

Internal to :mod:`replay.tape` (see its docstring for the rules); import :class:`TapeChunk` from
there.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Final

import msgspec
import numpy as np
import polars as pl
import pyarrow as pa

from replay.tape_common import _FIELDS, FRAME_SCHEMA, TRADE_COLUMNS, RowReject
from streams.contracts import MAX_EPOCH_S, Trade, parse_ts, validate_row

__all__ = ["TapeChunk"]

# Numbers as text that msgspec's lax mode reads as floats (the JSON number grammar, unsigned) and
# that Python's float() reads for ts; other spellings take the per-row path.
_NUMBER: Final = r"^(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?$"
_EPOCH: Final = r"^[0-9]+(\.[0-9]+)?([eE][+-]?[0-9]+)?$"
# The ISO-8601 spelling judged in bulk (RFC 3339 with 'T', up to microseconds); other spellings,
# and dates polars rejects (Feb 30), take the per-row path through datetime.fromisoformat.
_ISO: Final = (r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]"
               r"(\.[0-9]{1,6})?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$")


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


def _from_arrow(data: pa.Table | pa.RecordBatch) -> pl.DataFrame:
    df = pl.from_arrow(data)
    assert isinstance(df, pl.DataFrame)
    return df
