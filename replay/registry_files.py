"""The agent registry (DESIGN §3.2) and labels (DESIGN §3.4) as files.

Internal to :mod:`replay.tape`; import the public names from there.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Final

import msgspec
import polars as pl

from replay.tape_common import (
    RowReject,
    TapeError,
    _check_file,
    _csv_raw,
    _json_raw,
    _lines,
    _missing,
    _open_bytes,
    _open_out,
    _text,
    tape_format,
)
from replay.tape_csv import _csv_header, _csv_records
from replay.tape_frames import _normalise_typed
from streams.contracts import Agent, parse_ts

__all__ = ["AgentsRead", "read_agents", "read_labels", "write_labels"]


@dataclass(slots=True)
class AgentsRead:
    """An agent registry file (DESIGN §3.2): valid agents in file order and rejects."""

    agents: list[Agent]
    rejects: list[RowReject]
    rows: int
    format: str


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
