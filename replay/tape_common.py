"""Shared pieces of :mod:`replay.tape`: the trade columns, errors, row rejects, formats by
suffix and file helpers (gzip detection, line reading, a row's text for a reject).

Internal to :mod:`replay.tape`, :mod:`replay.registry_files` and the format modules; import the
public names from :mod:`replay.tape`.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Final, cast

import msgspec
import polars as pl

from streams.contracts import Trade

__all__ = ["FRAME_SCHEMA", "TRADE_COLUMNS", "RowReject", "TapeError", "tape_format"]

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


class TapeError(ValueError):
    """The file cannot be read (or written) as a tape at all; bad rows never raise this."""


@dataclass(frozen=True, slots=True)
class RowReject:
    """A row that broke the contract: its 1-based number, the reason and the row's text."""

    row: int
    reason: str
    raw: str


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


def _is_utf8(values: Sequence[str]) -> bool:
    try:
        "".join(values).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
