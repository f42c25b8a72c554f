"""Backtest: run a tape file through the same engine the live worker uses, without Kafka.

Trades are judged in event-time order (a stable sort by ``ts``: rows with equal times keep their
file order), which is also the order in which ``surveil replay`` publishes a tape, so a replay
through the broker and a backtest of the same tape give the same alerts and halts.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from detectors.market import MarketConfig
from streams.contracts import Trade, iso
from streams.pipeline import EngineOutput, Surveillance

__all__ = ["BacktestResult", "event_order", "run_backtest", "run_trades"]


@dataclass(slots=True)
class BacktestResult:
    out: EngineOutput = field(default_factory=EngineOutput)
    summary: dict[str, Any] = field(default_factory=dict)


def event_order(trades: Sequence[Trade]) -> list[Trade]:
    """Trades in event-time order; equal times keep their input order.

    >>> ts = [t.ts for t in event_order([Trade(ts=t, trade_id=str(t), instrument="I", price=1.0,
    ...      qty=1.0, buyer="a", seller="b") for t in (3.0, 1.0, 2.0)])]
    >>> ts
    [1.0, 2.0, 3.0]
    """
    return sorted(trades, key=lambda t: t.ts)  # sorted() is stable


def run_trades(trades: Sequence[Trade], *, config: MarketConfig | None = None,
               batch_size: int = 5000, emit_bars: bool = False) -> tuple[EngineOutput,
                                                                           Surveillance]:
    """Judge trades (already in the wanted order) in batches; flush at the end."""
    engine = Surveillance(config, emit_bars=emit_bars)
    out = EngineOutput()
    for i in range(0, len(trades), batch_size):
        out.extend(engine.process(trades[i:i + batch_size]))
    out.extend(engine.flush())
    return out, engine


def run_backtest(tape: Path, *, out_dir: Path, agents: Path | None = None,
                 config: MarketConfig | None = None, batch_size: int = 5000) -> BacktestResult:
    """Backtest ``tape``; write ``alerts.jsonl``, ``halts.jsonl`` and ``summary.json``."""
    from replay.tape import read_agents, read_tape

    started = time.perf_counter()
    read = read_tape(tape)
    agents_read = read_agents(agents) if agents is not None else None
    ordered = event_order(read.trades)
    judged = time.perf_counter()
    out, engine = run_trades(ordered, config=config, batch_size=batch_size)
    elapsed = time.perf_counter() - judged
    out_dir.mkdir(parents=True, exist_ok=True)
    enc = msgspec.json.Encoder()
    (out_dir / "alerts.jsonl").write_bytes(b"".join(enc.encode(a) + b"\n" for a in out.alerts))
    (out_dir / "halts.jsonl").write_bytes(b"".join(enc.encode(h) + b"\n" for h in out.halts))
    reasons = Counter(r.reason.split(" - at ")[0] for r in read.rejects)
    summary: dict[str, Any] = {
        "tape": str(tape),
        "format": read.format,
        "trades_read": read.rows,
        "trades_valid": len(read.trades),
        "rejected": len(read.rejects),
        "rejected_by_reason": dict(reasons.most_common()),
        "rejected_examples": [{"row": r.row, "reason": r.reason, "raw": r.raw[:300]}
                              for r in read.rejects[:20]],
        "duplicates": engine.stats.duplicates,
        "trades_processed": engine.stats.processed,
        "instruments": len({(t.venue, t.instrument) for t in ordered}),
        "event_time_start": iso(ordered[0].ts) if ordered else None,  # type: ignore[arg-type]
        "event_time_end": iso(ordered[-1].ts) if ordered else None,  # type: ignore[arg-type]
        "alerts": len(out.alerts),
        "alerts_by_kind": dict(Counter(a.kind for a in out.alerts).most_common()),
        "halts": len(out.halts),
        "halts_by_state_reason": dict(Counter(f"{h.state}/{h.reason}"
                                              for h in out.halts).most_common()),
        "agents_file": str(agents) if agents is not None else None,
        "agents_loaded": len(agents_read.agents) if agents_read is not None else None,
        "agents_rejected": len(agents_read.rejects) if agents_read is not None else None,
        "detectors": ["market/1"],
        "seconds_total": round(time.perf_counter() - started, 3),
        "seconds_judging": round(elapsed, 3),
        "trades_per_s": round(len(ordered) / elapsed) if elapsed > 0 else None,
    }
    (out_dir / "summary.json").write_bytes(msgspec.json.format(enc.encode(summary)) + b"\n")
    return BacktestResult(out, summary)
