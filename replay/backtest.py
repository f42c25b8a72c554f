"""Backtest: run a tape file through the same engine the live worker uses, without Kafka.

Trades are judged in event-time order: the tape is read in chunks and put in order by the
bounded reorder buffer of :mod:`replay.reorder` (equal times keep their file order; a row more
than ``horizon_s`` behind the tape is judged late, where it comes, and counted). ``surveil
replay`` publishes a tape in the same order, so a replay through the broker and a backtest of the
same tape give the same alerts and halts.

The backtest streams: each batch is judged as it is released and its alerts and halts are
appended to ``alerts.jsonl`` and ``halts.jsonl`` at once, so memory does not grow with the tape
(about 0.4 GB RSS for 2M or 10M trades with the default buffer, the interpreter and its
libraries included; see :mod:`replay.reorder`).
``summary.json`` is written at the end.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from pathlib import Path
from typing import Any, Final

import msgspec

from detectors.market import MarketConfig
from replay.reorder import DEFAULT_BATCH, DEFAULT_HORIZON_S, DEFAULT_MAX_ROWS, OrderedTape
from replay.tape import RowReject
from streams.contracts import Trade, iso
from streams.pipeline import EngineOutput, Surveillance
from streams.venue import VenueOutput, VenueStage

__all__ = ["MAX_INSTRUMENTS_COUNTED", "BacktestResult", "event_order", "run_backtest",
           "read_timeline", "run_trades"]

log = logging.getLogger(__name__)

#: Distinct (venue, instrument) pairs counted exactly; beyond, the summary says "at least".
MAX_INSTRUMENTS_COUNTED: Final = 1_000_000
#: Rejected rows quoted in the summary.
MAX_EXAMPLES: Final = 20
_TS: Final = attrgetter("ts")
_INSTRUMENT: Final = attrgetter("venue", "instrument")


@dataclass(slots=True)
class BacktestResult:
    """What a backtest produced.

    ``out`` holds the alerts, halts, engine rejections and the duplicate count when
    ``run_backtest`` was asked to keep them, else it is empty; ``summary`` is what
    ``summary.json`` holds.
    """

    out: EngineOutput = field(default_factory=EngineOutput)
    summary: dict[str, Any] = field(default_factory=dict)


def event_order(trades: Sequence[Trade]) -> list[Trade]:
    """Trades in event-time order; equal times keep their input order (in memory).

    :class:`replay.reorder.OrderedTape` gives the same order in bounded memory whenever no row is
    more than its horizon behind the tape.

    >>> ts = [t.ts for t in event_order([Trade(ts=t, trade_id=str(t), instrument="I", price=1.0,
    ...      qty=1.0, buyer="a", seller="b") for t in (3.0, 1.0, 2.0)])]
    >>> ts
    [1.0, 2.0, 3.0]
    """
    return sorted(trades, key=lambda t: t.ts)  # sorted() is stable


def run_trades(trades: Sequence[Trade], *, config: MarketConfig | None = None,
               batch_size: int = DEFAULT_BATCH, emit_bars: bool = False) -> tuple[EngineOutput,
                                                                                    Surveillance]:
    """Judge trades (already in the wanted order) in batches, in memory; flush at the end.

    >>> out, engine = run_trades([Trade(ts=1.0, trade_id="t", instrument="I", price=1.0,
    ...                                 qty=1.0, buyer="a", seller="b")])
    >>> engine.stats.processed, out.alerts
    (1, [])
    """
    engine = Surveillance(config, emit_bars=emit_bars)
    out = EngineOutput()
    for i in range(0, len(trades), batch_size):
        out.extend(engine.process(trades[i:i + batch_size]))
    out.extend(engine.flush())
    return out, engine


def read_timeline(path: Path, base: MarketConfig) -> list[Any]:
    """Validated runtime setting changes from a JSON-lines file; the first bad line raises
    :class:`streams.runtime_config.ConfigError` naming it."""
    from streams.runtime_config import ConfigError, validate

    out = []
    for n, line in enumerate(path.read_bytes().splitlines(), 1):
        if not line.strip():
            continue
        try:
            out.append(validate(msgspec.json.decode(line), base))
        except (msgspec.DecodeError, ConfigError) as exc:
            raise ConfigError(f"{path}:{n}: {exc}") from None
    return out


class _Tally:
    """The summary's counters, in bounded memory, and the output files, appended as we go."""

    def __init__(self, out_dir: Path, *, keep: bool) -> None:
        out_dir.mkdir(parents=True, exist_ok=True)
        self.enc = msgspec.json.Encoder()
        self.alerts_file = (out_dir / "alerts.jsonl").open("wb")
        self.halts_file = (out_dir / "halts.jsonl").open("wb")
        self.keep = keep
        self.kept = EngineOutput()
        self.alerts: Counter[str] = Counter()
        self.halts: Counter[str] = Counter()
        self.engine_rejected: Counter[str] = Counter()
        self.rejected_by_reason: Counter[str] = Counter()
        self.examples: list[RowReject] = []
        self.instruments: set[int] = set()
        self.instruments_capped = False
        self.ts_min = float("inf")
        self.ts_max = float("-inf")
        self.judging = 0.0

    def read(self, trades: Sequence[Trade], rejects: Sequence[RowReject]) -> None:
        for r in rejects:
            self.rejected_by_reason[r.reason.split(" - at ")[0]] += 1
        if len(self.examples) < MAX_EXAMPLES:
            self.examples += rejects[:MAX_EXAMPLES - len(self.examples)]
        if not trades:
            return
        ts = list(map(_TS, trades))  # floats: tapes give epoch seconds
        self.ts_min, self.ts_max = min(self.ts_min, min(ts)), max(self.ts_max, max(ts))
        if not self.instruments_capped:  # 64-bit hashes: exact but for a ~1e-7 collision chance
            self.instruments.update(map(hash, set(map(_INSTRUMENT, trades))))
            if len(self.instruments) > MAX_INSTRUMENTS_COUNTED:
                self.instruments_capped = True

    def judged(self, out: EngineOutput | VenueOutput) -> None:
        if isinstance(out, VenueOutput):  # stage 2: alerts and halts (metrics go to the store)
            out = EngineOutput(alerts=out.alerts, halts=out.halts)
        if out.alerts:
            self.alerts_file.write(b"".join(self.enc.encode(a) + b"\n" for a in out.alerts))
            self.alerts.update(a.kind for a in out.alerts)
        if out.halts:
            self.halts_file.write(b"".join(self.enc.encode(h) + b"\n" for h in out.halts))
            self.halts.update(f"{h.state}/{h.reason}" for h in out.halts)
        rejected: Iterable[Any] = getattr(out, "rejected", None) or []
        self.engine_rejected.update(str(r.reason).split(":")[0] for r in rejected)
        if self.keep:  # what callers read; not the bars, summaries or watermarks
            self.kept.alerts += out.alerts
            self.kept.halts += out.halts
            if hasattr(self.kept, "rejected"):
                self.kept.rejected += getattr(out, "rejected", None) or []
            self.kept.duplicates += getattr(out, "duplicates", 0)

    def close(self) -> None:
        self.alerts_file.close()
        self.halts_file.close()


def run_backtest(tape: Path, *, out_dir: Path, agents: Path | None = None,
                 config: MarketConfig | None = None, batch_size: int = DEFAULT_BATCH,
                 horizon_s: float = DEFAULT_HORIZON_S, max_rows: int = DEFAULT_MAX_ROWS,
                 keep_output: bool = True,
                 settings_timeline: Path | None = None) -> BacktestResult:
    """Backtest ``tape``; write ``alerts.jsonl``, ``halts.jsonl`` and ``summary.json``.

    Parameters
    ----------
    tape
        The tape file (``.csv``, ``.parquet``, ``.jsonl``, optionally ``.gz``).
    out_dir
        Created if needed; the three files are replaced.
    agents
        An agent registry file, read and counted (``agents_loaded``, ``agents_rejected``).
    config
        Detector settings (default :class:`detectors.market.MarketConfig`).
    batch_size
        Trades per engine call.
    horizon_s, max_rows
        The reorder buffer's parameters (:class:`replay.reorder.ReorderBuffer`).
    keep_output
        Also keep the alerts and halts in ``result.out`` (the files always have them). Pass
        ``False`` for tapes with huge outputs: then memory does not grow with the output either.
    settings_timeline
        Runtime setting changes (``config/1`` JSON lines, :mod:`streams.runtime_config`),
        applied from their effective times as the live workers apply them.

    Returns
    -------
    BacktestResult
        ``summary`` as written to ``summary.json``; ``out`` as ``keep_output`` says.

    Raises
    ------
    replay.tape.TapeError
        The tape (or the agent file) cannot be read at all; bad rows are counted instead.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from replay.synthetic import FeedSpec, generate
    >>> from replay.tape import write_tape
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> write_tape(generate(FeedSpec(seed=1, rate=2), start=1.767e9, duration_s=60), d / "t.csv")
    >>> s = run_backtest(d / "t.csv", out_dir=d / "bt", keep_output=False).summary
    >>> s["trades_read"] == s["trades_processed"], s["instruments"], s["reordered_late"]
    (True, 4, 0)
    """
    from replay.tape import read_agents

    started = time.perf_counter()
    ordered = OrderedTape(tape, horizon_s=horizon_s, max_rows=max_rows, batch_size=batch_size)
    agents_read = read_agents(agents) if agents is not None else None
    engine = Surveillance(config, emit_bars=False)
    if settings_timeline is not None:
        for change in read_timeline(settings_timeline, engine.config):
            engine.configure(change)
    stage2 = VenueStage()
    for a in agents_read.agents if agents_read is not None else ():
        stage2.registry(msgspec.json.encode(a))
    tally = _Tally(out_dir, keep=keep_output)
    try:
        for chunk in ordered:
            tally.read(chunk.trades, chunk.rejects)
            if chunk.trades:
                t0 = time.perf_counter()
                out = engine.process(chunk.trades)
                venue_out = stage2.feed(out.summaries, out.watermarks)
                tally.judging += time.perf_counter() - t0
                tally.judged(out)
                tally.judged(venue_out)
        t0 = time.perf_counter()
        out = engine.flush()
        venue_out = stage2.feed(out.summaries, out.watermarks)
        venue_out.extend(stage2.flush())
        tally.judging += time.perf_counter() - t0
        tally.judged(out)
        tally.judged(venue_out)
    finally:
        tally.close()
    stats, elapsed, valid = engine.stats, tally.judging, ordered.valid
    if ordered.late:
        log.warning("%s: %d rows more than %.0f s out of order were judged late, where they came",
                    tape, ordered.late, horizon_s)
    summary: dict[str, Any] = {
        "tape": str(tape),
        "format": ordered.format,
        "trades_read": ordered.rows,
        "trades_valid": valid,
        "rejected": ordered.rejected,
        "rejected_by_reason": dict(tally.rejected_by_reason.most_common()),
        "rejected_examples": [{"row": r.row, "reason": r.reason, "raw": r.raw[:300]}
                              for r in tally.examples],
        "duplicates": stats.duplicates,
        "trades_processed": stats.processed,
        "instruments": len(tally.instruments),
        "instruments_capped": tally.instruments_capped,
        "event_time_start": iso(tally.ts_min) if valid else None,
        "event_time_end": iso(tally.ts_max) if valid else None,
        "reordered_late": ordered.late,
        "reorder_horizon_s": horizon_s,
        "reorder_max_rows": max_rows,
        "reorder_peak_rows": ordered.buffer.peak,
        "engine_rejected": sum(tally.engine_rejected.values()),
        "engine_rejected_by_reason": dict(tally.engine_rejected.most_common()),
        "alerts": sum(tally.alerts.values()),
        "alerts_by_kind": dict(tally.alerts.most_common()),
        "halts": sum(tally.halts.values()),
        "halts_by_state_reason": dict(tally.halts.most_common()),
        "agents_file": str(agents) if agents is not None else None,
        "agents_loaded": len(agents_read.agents) if agents_read is not None else None,
        "agents_rejected": len(agents_read.rejects) if agents_read is not None else None,
        "detectors": ["market/1", *(f"{d.name}/{d.version}" for d in
                                    next(iter(stage2.detectors.values()), []))],
        "stage2": dict(sorted(stage2.counts.items())),
        "seconds_total": round(time.perf_counter() - started, 3),
        "seconds_judging": round(elapsed, 3),
        "trades_per_s": round(valid / elapsed) if elapsed > 0 else None,
    }
    enc = msgspec.json.Encoder()
    (out_dir / "summary.json").write_bytes(msgspec.json.format(enc.encode(summary)) + b"\n")
    return BacktestResult(tally.kept, summary)
