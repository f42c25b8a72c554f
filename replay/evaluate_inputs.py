"""Reading the inputs of :mod:`replay.evaluate`: JSON-lines files, parsed and checked records.

Records that lack what matching needs raise :class:`ValueError` from the ``_parse_*`` functions
and are counted in an :class:`_Issues`; unreadable files raise
:class:`~replay.evaluate.EvaluationError`. Internal to :mod:`replay.evaluate`.
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import msgspec

from replay.evaluate_results import MAX_EXAMPLES, SOURCES, EvaluationError
from streams.contracts import parse_ts

__all__: list[str] = []

# --- parsed records ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Alert:
    idx: int
    alert_id: str | None
    ts: float
    ts_text: str
    kind: str
    instrument: str | None
    agents: frozenset[str]


@dataclass(frozen=True, slots=True)
class _Halt:
    ts: float
    instrument: str


@dataclass(frozen=True, slots=True)
class _Label:
    source: str
    kind: str
    start: float
    end: float
    t_start: str
    t_end: str
    instruments: tuple[str, ...]
    agents: tuple[str, ...]


class _Issues:
    """Malformed-input bookkeeping: a count and the first reasons per source."""

    def __init__(self) -> None:
        self.count = dict.fromkeys(SOURCES, 0)
        self.examples: dict[str, list[str]] = {s: [] for s in SOURCES}

    def add(self, source: str, where: str, reason: str) -> None:
        self.count[source] += 1
        if len(self.examples[source]) < MAX_EXAMPLES:
            self.examples[source].append(f"{where}: {reason}")


def _str_list(doc: Mapping[str, Any], key: str, *, required: bool) -> tuple[str, ...]:
    value = doc.get(key)
    if value is None and not required:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ValueError(f"{key} must be a list of non-empty strings, got {value!r:.60}")
    return tuple(value)


def _kind(doc: Mapping[str, Any]) -> str:
    kind = doc.get("kind")
    if not isinstance(kind, str) or not kind:
        raise ValueError(f"kind must be a non-empty string, got {kind!r:.60}")
    return kind


def _ts(doc: Mapping[str, Any], key: str) -> float:
    if key not in doc:
        raise ValueError(f"{key} is missing")
    try:
        return parse_ts(doc[key])
    except ValueError as exc:
        raise ValueError(f"{key}: {exc}") from None


def _parse_alert(doc: Mapping[str, Any], idx: int) -> _Alert:
    kind = _kind(doc)
    ts = _ts(doc, "ts")
    instrument = doc.get("instrument")
    if instrument is not None and not isinstance(instrument, str):
        raise ValueError(f"instrument must be a string or null, got {instrument!r:.60}")
    alert_id = doc.get("alert_id")
    return _Alert(idx, alert_id if isinstance(alert_id, str) and alert_id else None, ts,
                  str(doc["ts"]), kind, instrument or None,
                  frozenset(_str_list(doc, "agents", required=False)))


def _parse_halt(doc: Mapping[str, Any]) -> tuple[_Halt, bool, tuple[Any, ...] | None]:
    """The halt, whether it is a resumption, and its de-duplication key (or None)."""
    ts = _ts(doc, "ts")
    instrument, state = doc.get("instrument"), doc.get("state")
    if not isinstance(instrument, str) or not instrument:
        raise ValueError(f"instrument must be a non-empty string, got {instrument!r:.60}")
    if not isinstance(state, str) or not state:
        raise ValueError(f"state must be a non-empty string, got {state!r:.60}")
    seq = doc.get("seq")
    key = ((doc.get("venue"), instrument, seq)
           if isinstance(seq, int) and not isinstance(seq, bool) else None)
    return _Halt(ts, instrument), state == "TRADING", key


def _parse_label(doc: Mapping[str, Any], source: str) -> _Label:
    kind = _kind(doc)
    start, end = _ts(doc, "t_start"), _ts(doc, "t_end")
    if start > end:
        raise ValueError(f"t_start {doc['t_start']!r} is after t_end {doc['t_end']!r}")
    return _Label(source, kind, start, end, str(doc["t_start"]), str(doc["t_end"]),
                  _str_list(doc, "instruments", required=True),
                  _str_list(doc, "agents", required=True))


Record = tuple[str, Any]  # (where it came from, the decoded value)


def _as_mapping(value: Any) -> Mapping[str, Any]:
    if isinstance(value, msgspec.Struct):
        return msgspec.structs.asdict(value)
    if not isinstance(value, Mapping):
        raise ValueError(f"not a JSON object: {type(value).__name__}")
    return value


# --- files -------------------------------------------------------------------------------------


def _open(path: Path) -> IO[bytes] | gzip.GzipFile:
    if path.name.endswith(".gz"):
        return gzip.open(path, "rb")
    return path.open("rb")


def _read_jsonl(path: Path, source: str, issues: _Issues) -> list[Record]:
    """Decoded lines of a JSON-lines file; undecodable lines go to ``issues``."""
    records: list[Record] = []
    try:
        with _open(path) as f:
            for lineno, line in enumerate(f, 1):
                line = line.strip(b" \t\r\n")
                if not line:
                    continue
                where = f"{path.name}:{lineno}"
                try:
                    records.append((where, msgspec.json.decode(line)))
                except (msgspec.DecodeError, UnicodeDecodeError) as exc:
                    issues.add(source, where, f"bad JSON: {exc}")
    except (OSError, EOFError, zlib.error) as exc:  # unreadable, or a broken .gz
        raise EvaluationError(f"{path}: cannot read: {exc}") from None
    return records


def _find(out_dir: Path, stem: str) -> Path:
    for name in (f"{stem}.jsonl", f"{stem}.jsonl.gz"):
        if (out_dir / name).is_file():
            return out_dir / name
    raise EvaluationError(f"{out_dir}: no {stem}.jsonl (is it the --out directory of "
                          "`surveil backtest`?)")

