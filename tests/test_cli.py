"""The ``surveil`` command line: offline commands in-process, ``up`` and ``bench`` for real."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from jsonschema import Draft202012Validator

from dashboard.queries import StoreReader
from streams.broker import free_port
from streams.schema_files import load_schema
from surveil.cli import cli

COMMANDS = {"up", "broker", "worker", "store", "dashboard", "simulate", "replay", "backtest",
            "evaluate", "evaluate-suite", "bench", "feed", "exchange", "keys", "halt", "resume",
            "config"}


def invoke(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_help_lists_every_command() -> None:
    out = invoke("--help")
    listed = {line.split()[0] for line in out.split("Commands:")[1].splitlines() if line.strip()}
    assert listed == COMMANDS


@pytest.mark.parametrize(("scenario", "kind"), [("flash_crash", "flash_crash"),
                                                ("spike", "price_spike")])
def test_simulate_backtest_evaluate(tmp_path: Path, scenario: str, kind: str) -> None:
    invoke("simulate", "--scenario", scenario, "--duration", "1800", "--out", str(tmp_path))
    out = invoke("backtest", str(tmp_path / "tape.parquet"), "--out", str(tmp_path / "bt"))
    assert "0 rejected" in out
    summary = json.loads((tmp_path / "bt" / "summary.json").read_text())
    assert summary["trades_read"] == summary["trades_processed"] > 5_000
    assert summary["alerts_by_kind"].get(kind, 0) >= 1
    alert_schema = Draft202012Validator(load_schema("alert"))
    halt_schema = Draft202012Validator(load_schema("halt"))
    for line in (tmp_path / "bt" / "alerts.jsonl").read_text().splitlines():
        alert_schema.validate(json.loads(line))
    for line in (tmp_path / "bt" / "halts.jsonl").read_text().splitlines():
        halt_schema.validate(json.loads(line))
    report = invoke("evaluate", str(tmp_path / "bt"), "--labels", str(tmp_path / "labels.jsonl"),
                    "--json")
    figures = json.loads(report.strip().splitlines()[-1])
    assert figures["kinds"][kind]["recall"] == 1.0
    assert figures["halts"]["false_halts"] == 0


def test_competitive_report_is_one_json_line_near_nash() -> None:
    out = invoke("simulate", "--scenario", "competitive", "--report", "--sessions", "4", "--json")
    figures = json.loads(out.strip().splitlines()[-1])
    assert {"p_nash", "p_monopoly", "prices", "delta_mean", "delta_sd", "sessions"} <= set(figures)
    assert figures["p_nash"] == pytest.approx(1.4729, abs=1e-4)
    assert figures["p_monopoly"] == pytest.approx(1.9250, abs=1e-4)
    assert abs(figures["delta_mean"]) < 0.1


def test_calm_market_backtest_has_no_alerts(tmp_path: Path) -> None:
    invoke("simulate", "--scenario", "calm", "--duration", "3600", "--out", str(tmp_path))
    invoke("backtest", str(tmp_path / "tape.parquet"), "--out", str(tmp_path / "bt"))
    summary = json.loads((tmp_path / "bt" / "summary.json").read_text())
    assert (summary["alerts"], summary["halts"]) == (0, 0)


def test_backtest_counts_bad_rows_and_carries_on(tmp_path: Path) -> None:
    tape = tmp_path / "tape.csv"
    rows = ["ts,trade_id,instrument,price,qty,buyer,seller",
            "2026-01-01T00:00:00Z,a,X,1.5,1,b,s",
            "2026-01-01T00:00:01Z,b,X,-1,1,b,s",
            "2026-01-01T00:00:02,c,X,1.5,1,b,s",
            "2026-01-01T00:00:03Z,d,X,abc,1,b,s",
            "2026-01-01T00:00:04Z,a,X,1.5,1,b,s",
            "2026-01-01T00:00:05Z,e,X,1.6,2,b,s"]
    tape.write_text("\n".join(rows) + "\n")
    invoke("backtest", str(tape), "--out", str(tmp_path / "bt"))
    summary = json.loads((tmp_path / "bt" / "summary.json").read_text())
    assert summary["trades_read"] == 6
    assert summary["rejected"] == 3
    assert summary["duplicates"] == 1
    assert summary["trades_processed"] == 2
    assert [e["row"] for e in summary["rejected_examples"]] == [2, 3, 4]
    assert all(e["reason"].startswith("invalid_trade") for e in summary["rejected_examples"])


def test_backtest_of_a_missing_tape_fails_clearly(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["backtest", str(tmp_path / "nope.csv"), "--out",
                                      str(tmp_path / "bt")])
    assert result.exit_code != 0
    assert "nope.csv" in result.output


@pytest.mark.integration
@pytest.mark.slow
def test_bench_prints_its_figures_as_one_json_line() -> None:
    done = subprocess.run([sys.executable, "-m", "surveil.cli", "bench", "--trades", "40000",
                           "--instruments", "4", "--latency-seconds", "12", "--json"],
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert figures["ceiling_trades_per_s"] > 0
    assert figures["pipeline_trades_per_s"] > 0
    assert figures["ratio"] == pytest.approx(
        figures["pipeline_trades_per_s"] / figures["ceiling_trades_per_s"], abs=0.002)
    assert figures["halts_measured"] > 0
    assert 0 < figures["p50_ms"] <= figures["p99_ms"]


@pytest.mark.integration
@pytest.mark.slow
def test_up_runs_the_whole_system_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    port, dash = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SURVEIL_")}
    env["SURVEIL_DATA_DIR"] = str(tmp_path)
    proc = subprocess.Popen([sys.executable, "-m", "surveil.cli", "up", "--port", str(port),
                             "--dashboard-port", str(dash), "--crash-every", "30",
                             "--warmup", "30"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if "dashboard: http://" in line:
                break
        assert any(f"http://127.0.0.1:{dash}" in x for x in lines), lines
        reader = StoreReader(tmp_path / "store")
        deadline = time.monotonic() + 200
        while time.monotonic() < deadline:  # the live market plants an event every 40 s
            counts = reader.counts()
            if counts.halts and counts.alerts and counts.bars:
                break
            time.sleep(2)
        assert counts.halts > 0, (counts, lines)
        assert counts.instruments == 4
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        rest, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, "".join(lines) + rest
    assert "stopped" in rest
    # the loop closed: the reference exchange stopped matching on the detectors' halts
    exchange_log = (tmp_path / "logs" / "exchange.log").read_text()
    obeyed = re.search(r"(\d+) halts obeyed", exchange_log)
    assert obeyed is not None, exchange_log[-2000:]
    assert int(obeyed.group(1)) > 0


def test_the_cli_knows_every_scenario_of_the_simulator() -> None:
    from replay.market.sim import SCENARIOS as SIM
    from surveil.cli import SCENARIOS as CLI

    assert CLI == SIM
