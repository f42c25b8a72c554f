"""Reading JSON-lines tapes (plain or gzip): each line is judged by
:func:`streams.contracts.decode_message`, the Kafka path's own judge. Internal to
:mod:`replay.tape`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Final

from replay.tape_common import RowReject, _lines, _open_bytes, _text
from replay.tape_frames import TapeChunk
from streams.contracts import Trade, decode_message

__all__: list[str] = []

_ARRAY_REASON: Final = "invalid_trade: a tape line holds one trade object, not a JSON array"


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
