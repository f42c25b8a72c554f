"""The streaming backtest (replay.backtest.run_backtest) gives what the in-memory path gave:
read the whole tape, sort it by ``ts`` (stable), judge it in batches of 5,000, flush."""

from __future__ import annotations

import json
import random
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import msgspec
import pytest

from replay.backtest import BacktestResult, event_order, run_backtest, run_trades
from replay.synthetic import Episode, FeedSpec, generate
from replay.tape import read_tape, write_tape
from streams.contracts import Trade

T0 = 1_767_225_600.0

OLD_KEYS = {"tape", "format", "trades_read", "trades_valid", "rejected", "rejected_by_reason",
            "rejected_examples", "duplicates", "trades_processed", "instruments",
            "event_time_start", "event_time_end", "alerts", "alerts_by_kind", "halts",
            "halts_by_state_reason", "agents_file", "agents_loaded", "agents_rejected",
            "detectors", "seconds_total", "seconds_judging", "trades_per_s"}


def crash_tape(venue: str, seed: int = 11) -> FeedSpec:
    return FeedSpec(seed=seed, rate=15, venue=venue, episodes=(
        Episode(instrument="GPU-H100-1H", start_s=500, depth=-0.3),
        Episode(instrument="BW-10G-1H", start_s=900, depth=2.0, ramp_s=10),
        Episode(instrument="KWH-SA-GRID", start_s=1300, depth=-0.12, ramp_s=120, hold_s=120)))


def lines(path: Path) -> list[dict[str, Any]]:
    docs = [json.loads(line) for line in path.read_text().splitlines()]
    for d in docs:
        d.pop("emitted_at", None)  # a halt's wall-clock stamp
    return docs


def builtins(items: list[Any]) -> list[dict[str, Any]]:
    docs = [msgspec.json.decode(msgspec.json.encode(x)) for x in items]
    for d in docs:
        d.pop("emitted_at", None)
    return docs


def old_path(tape: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
    """What run_backtest did before it streamed."""
    read = read_tape(tape)
    ordered = event_order(read.trades)
    out, engine = run_trades(ordered)
    return builtins(out.alerts), builtins(out.halts), {
        "trades_read": read.rows, "trades_valid": len(read.trades),
        "rejected": len(read.rejects), "duplicates": engine.stats.duplicates,
        "trades_processed": engine.stats.processed,
        "instruments": len({(t.venue, t.instrument) for t in ordered}),
        "alerts": len(out.alerts), "halts": len(out.halts)}


@pytest.fixture(scope="module")
def crash(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Trade]]:
    trades = generate(crash_tape("v3"), start=T0, duration_s=1900)
    tape = tmp_path_factory.mktemp("crash") / "tape.parquet"
    write_tape(trades, tape)
    return tape, trades


@pytest.mark.slow
def test_streaming_backtest_equals_the_in_memory_path(crash: tuple[Path, list[Trade]],
                                                      tmp_path: Path) -> None:
    tape, trades = crash
    alerts, halts, counts = old_path(tape)
    assert {h["reason"] for h in halts} >= {"VELOCITY", "SPIKE", "LUDP", "RESUME"}
    result = run_backtest(tape, out_dir=tmp_path / "bt")
    assert lines(tmp_path / "bt" / "alerts.jsonl") == alerts
    assert lines(tmp_path / "bt" / "halts.jsonl") == halts
    assert builtins(result.out.alerts) == alerts
    assert builtins(result.out.halts) == halts
    summary = json.loads((tmp_path / "bt" / "summary.json").read_text())
    assert summary == json.loads(json.dumps(result.summary))
    assert set(summary) >= OLD_KEYS | {"reordered_late", "engine_rejected_by_reason"}
    assert {k: summary[k] for k in counts} == counts
    assert summary["event_time_start"].startswith("2026-01-01T00:00:0")
    assert summary["reordered_late"] == 0
    assert summary["instruments_capped"] is False
    assert summary["alerts_by_kind"]
    assert summary["halts_by_state_reason"]

    # a slightly disordered copy of the tape (well within the horizon) gives the same
    shuffled = list(trades)
    rng = random.Random(3)
    for i in range(0, len(shuffled) - 10, 4):
        j = i + rng.randint(1, 9)
        shuffled[i], shuffled[j] = shuffled[j], shuffled[i]
    write_tape(shuffled, tmp_path / "shuffled.csv")
    lean = run_backtest(tmp_path / "shuffled.csv", out_dir=tmp_path / "bt2", keep_output=False,
                        max_rows=5_000)
    assert (lean.out.alerts, lean.out.halts) == ([], [])
    assert lines(tmp_path / "bt2" / "alerts.jsonl") == alerts
    assert lines(tmp_path / "bt2" / "halts.jsonl") == halts
    assert lean.summary["reordered_late"] == 0
    assert lean.summary["reorder_peak_rows"] <= 5_000


def test_bad_rows_late_rows_and_the_empty_tape(tmp_path: Path) -> None:
    trades = generate(FeedSpec(seed=4, rate=2), start=T0, duration_s=900)
    trades.append(msgspec.structs.replace(trades[0], trade_id="late-one", ts=T0 + 1))
    write_tape(trades, tmp_path / "t.csv")
    text = (tmp_path / "t.csv").read_text().splitlines()
    text[3] = text[3].replace(",", ";")  # data row 3: one field
    (tmp_path / "bad.csv").write_text("\n".join(text) + "\n")
    result = run_backtest(tmp_path / "bad.csv", out_dir=tmp_path / "bt", keep_output=False)
    s = result.summary
    assert (s["trades_read"], s["trades_valid"], s["rejected"]) == (
        len(trades), len(trades) - 1, 1)
    assert [e["row"] for e in s["rejected_examples"]] == [3]
    assert s["reordered_late"] == 1  # 899 s behind the tape: judged where it came
    assert s["trades_processed"] + s["duplicates"] + s["engine_rejected"] == len(trades) - 1
    assert isinstance(result, BacktestResult)

    write_tape([], tmp_path / "empty.parquet")
    s = run_backtest(tmp_path / "empty.parquet", out_dir=tmp_path / "bt0").summary
    assert (s["trades_read"], s["trades_processed"], s["instruments"]) == (0, 0, 0)
    assert (s["event_time_start"], s["event_time_end"], s["alerts"]) == (None, None, 0)
    assert (tmp_path / "bt0" / "alerts.jsonl").read_bytes() == b""


def test_engine_rejections_are_counted_by_reason(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Outputs that carry ``rejected`` trades (``future_ts``, ``late``, …) are counted."""

    class Engine:
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            self.stats = SimpleNamespace(processed=0, duplicates=0)

        def process(self, trades: list[Trade]) -> SimpleNamespace:
            self.stats.processed += len(trades)
            bad = [SimpleNamespace(reason=f"future_ts: ts {t.ts} ahead") for t in trades[:2]]
            return SimpleNamespace(alerts=[], halts=[], rejected=bad, summaries=[],
                                   watermarks=[])

        def flush(self) -> SimpleNamespace:
            return SimpleNamespace(alerts=[], halts=[], rejected=[SimpleNamespace(reason="late")],
                                   summaries=[], watermarks=[])

    monkeypatch.setattr("replay.backtest.Surveillance", Engine)
    write_tape(generate(FeedSpec(seed=1, rate=2), start=T0, duration_s=30), tmp_path / "t.jsonl")
    s = run_backtest(tmp_path / "t.jsonl", out_dir=tmp_path / "bt", keep_output=False,
                     batch_size=100).summary
    batches = -(-s["trades_valid"] // 100)
    assert s["engine_rejected_by_reason"] == {"future_ts": 2 * batches, "late": 1}
    assert s["engine_rejected"] == 2 * batches + 1
