"""Analysts' replays: a tape through :func:`replay.backtest.run_backtest` into a store of its
own (``<data dir>/replays/<name>/store``), so every page of the desk can browse it.

The backtest reports no progress while it runs, so :meth:`Job.fraction` estimates it from the
tape's size and the elapsed time (and says so); it reaches 1 only when the run is done.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any, Final

import polars as pl

__all__ = ["Job", "done", "root", "save_upload", "tapes"]

SUFFIXES: Final = (".csv", ".parquet", ".jsonl", ".csv.gz", ".jsonl.gz")
_BYTES_PER_S: Final = 6e6  # rough backtest speed on this machine, for the progress estimate


def root(live_store: Path) -> Path:
    return live_store.parent / "replays"


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)[:80] or "tape"


def save_upload(folder: Path, name: str, data: bytes) -> Path:
    target = folder / "uploads" / _safe(name)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    return target


def tapes(folder: Path, *more: Path, limit: int = 200) -> list[Path]:
    """Tape files under the replay folder's uploads and, one level down, the other folders."""
    found: list[Path] = []
    for base in (folder / "uploads", *more):
        if not base.is_dir():
            continue
        for pattern in ("*", "*/*"):
            found += [p for p in base.glob(pattern) if p.is_file()
                      and p.name.endswith(SUFFIXES) and not p.name.startswith(".")
                      and p.name not in ("alerts.jsonl", "halts.jsonl", "labels.jsonl")]
    return sorted(set(found))[:limit]


def done(folder: Path) -> list[tuple[str, Path]]:
    """Finished replays, newest first: ``(name, store dir)``."""
    if not folder.is_dir():
        return []
    out = [(p.name, p / "store") for p in folder.iterdir() if (p / "store" / "DONE").exists()]
    return sorted(out, key=lambda x: x[1].stat().st_mtime, reverse=True)


class Job:
    """One backtest run (call :meth:`run` in a thread; poll :meth:`fraction`)."""

    def __init__(self, tape: Path, folder: Path) -> None:
        self.tape = Path(tape)
        self.name = f"{time.strftime('%Y%m%d-%H%M%S')}-{_safe(self.tape.stem)}"
        self.out = folder / self.name / "backtest"
        self.store = folder / self.name / "store"
        self.started = time.monotonic()
        self.finished = False
        self.stage = "starting"
        self.error: str | None = None
        self.summary: dict[str, Any] = {}

    def fraction(self) -> float:
        if self.finished:
            return 1.0
        try:
            expected = max(1.0, self.tape.stat().st_size / _BYTES_PER_S)
        except OSError:
            expected = 10.0
        return min(0.95, (time.monotonic() - self.started) / expected)

    def status(self) -> str:
        return f"{self.stage}, {time.monotonic() - self.started:.0f} s (progress estimated)"

    def run(self) -> None:
        from replay.backtest import run_backtest
        from streams.store import StoreWriter

        try:
            self.stage = "judging"
            result = run_backtest(self.tape, out_dir=self.out, keep_output=False)
            self.summary = dict(result.summary)
            self.stage = "storing"
            with StoreWriter(self.store) as writer:
                for kind in ("alerts", "halts"):
                    path = self.out / f"{kind}.jsonl"
                    if path.exists():
                        with path.open() as fh:
                            writer.add(kind, (json.loads(line) for line in fh if line.strip()))
                writer.add("bars", _bars(self.tape))
            (self.store / "DONE").write_text(json.dumps(self.summary, default=str))
        except Exception as exc:  # noqa: BLE001 - shown to the analyst
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            self.finished = True


def _bars(tape: Path) -> list[dict[str, Any]]:
    """One-second bars of the tape (best effort: a tape polars cannot read gets none)."""
    try:
        name = tape.name
        if name.endswith((".parquet",)):
            df = pl.read_parquet(tape)
        elif name.endswith((".jsonl", ".jsonl.gz")):
            df = pl.read_ndjson(tape)
        else:
            df = pl.read_csv(tape)
        ts = pl.col("ts")
        if df.schema["ts"] == pl.String:
            ts = ts.str.to_datetime(time_zone="UTC")
        elif df.schema["ts"].is_numeric():
            ts = pl.from_epoch(ts.cast(pl.Float64) * 1e6, time_unit="us").dt.replace_time_zone(
                "UTC")
        df = df.with_columns(ts=ts.dt.convert_time_zone("UTC").dt.truncate("1s"),
                             venue=pl.col("venue").fill_null("default") if "venue" in df.columns
                             else pl.lit("default"))
        bars = df.sort("ts").group_by("venue", "instrument", "ts").agg(
            open=pl.col("price").first(), high=pl.col("price").max(),
            low=pl.col("price").min(), close=pl.col("price").last(), volume=pl.col("qty").sum(),
            notional=(pl.col("price") * pl.col("qty")).sum(), trades=pl.len())
        return bars.with_columns(ts=pl.col("ts").dt.strftime("%Y-%m-%dT%H:%M:%SZ")).to_dicts()
    except Exception:  # noqa: BLE001 - bars are a convenience for the charts
        return []
