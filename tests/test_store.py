"""The Parquet store: idempotent writes, compaction, and readers in other processes."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from dashboard.queries import StoreReader
from streams.store import StoreWriter
from streams.store_layout import KINDS, part_files

__all__: list[str] = []

T0 = datetime(2024, 5, 6, 14, 30, tzinfo=UTC)


def _iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def bar(second: int, instrument: str = "GPU-H100-1H", venue: str = "x") -> dict[str, Any]:
    price = 2.0 + second / 1000
    return {"schema": "bar/1", "venue": venue, "instrument": instrument,
            "ts": _iso(T0 + timedelta(seconds=second)), "open": price, "high": price + 0.01,
            "low": price - 0.01, "close": price, "volume": 10.0, "notional": 10 * price,
            "trades": 3}


def halt(second: int, state: str = "HALTED", instrument: str = "GPU-H100-1H",
         venue: str = "x", reason: str = "LUDP") -> dict[str, Any]:
    t = T0 + timedelta(seconds=second)
    return {"schema": "halt/1", "seq": second * 1_000_000, "ts": _iso(t), "emitted_at": _iso(t),
            "venue": venue, "instrument": instrument, "state": state, "reason": reason,
            "resume_at": None if state == "TRADING" else _iso(t + timedelta(minutes=5)),
            "reference_price": 2.0, "band_low": 1.9, "band_high": 2.1, "alert_ids": ["a0"]}


def alert(n: int, kind: str = "flash_crash", score: float = 80.0) -> dict[str, Any]:
    return {"schema": "alert/1", "alert_id": f"a{n}", "ts": _iso(T0 + timedelta(seconds=n)),
            "kind": kind, "score": score, "instrument": "GPU-H100-1H", "agents": ["b1", "b2"],
            "venue": "x", "detector": "test/1", "summary": f"alert {n}",
            "evidence": {"n": n, "trades": [f"t{n}"], "nested": {"depth": [1, 2]}}}


def test_duplicates_within_one_run_are_stored_once(tmp_path: Path) -> None:
    with StoreWriter(tmp_path) as writer:
        assert writer.add("alerts", [alert(1), alert(2), alert(1)]) == 2
        assert writer.add("halts", [halt(1), halt(1), halt(2, "TRADING", reason="RESUME")]) == 2
        assert writer.add("bars", [bar(s) for s in range(10)]) == 10
        writer.flush()
        # after the flush the keys still count: re-delivery after a crash, before the commit
        assert writer.add("alerts", [alert(2)]) == 0
        assert writer.add("bars", [bar(s) for s in range(5, 15)]) == 5
        assert writer.stats["duplicate"] == 8
    counts = StoreReader(tmp_path).counts()
    assert (counts.alerts, counts.halts, counts.bars) == (2, 2, 15)


def test_duplicates_across_writers_are_stored_once(tmp_path: Path) -> None:
    with StoreWriter(tmp_path) as first:
        first.add("alerts", [alert(n) for n in range(5)])
        first.add("halts", [halt(1), halt(2, "TRADING", reason="RESUME")])
        first.add("bars", [bar(s) for s in range(30)])
    with StoreWriter(tmp_path) as second:  # a restart: keys come back from the parts on disk
        assert second.add("alerts", [alert(n) for n in range(8)]) == 3
        assert second.add("halts", [halt(1), halt(2, "TRADING", reason="RESUME")]) == 0
        assert second.add("bars", [bar(s) for s in range(25, 40)]) == 10
    counts = StoreReader(tmp_path).counts()
    assert (counts.alerts, counts.halts, counts.bars) == (8, 2, 40)


def test_one_writer_per_store(tmp_path: Path) -> None:
    with StoreWriter(tmp_path), pytest.raises(RuntimeError, match="another store writer"):
        StoreWriter(tmp_path)
    StoreWriter(tmp_path).close()  # released on close


def test_records_older_than_the_key_horizon_are_checked_on_disk(tmp_path: Path) -> None:
    """Memory holds only recent keys, yet a late duplicate is still caught."""
    with StoreWriter(tmp_path, horizon_s={"bars": 10}) as writer:
        for start in range(0, 20_000, 1_000):
            writer.add("bars", [bar(s) for s in range(start, start + 1_000)])
            writer.flush()
        assert len(writer._keys["bars"]) < 12_000  # bounded: not all 20,000 keys
        assert writer.add("bars", [bar(s) for s in (5, 6, 15_000)]) == 0  # old duplicates
        assert writer.add("bars", [bar(5, instrument="OTHER"), bar(-1)]) == 2  # old but new
    with StoreWriter(tmp_path, horizon_s={"bars": 10}) as again:
        assert len(again._keys["bars"]) <= 11  # only the horizon is loaded at start
        assert again.add("bars", [bar(s) for s in (0, 19_999, -1)]) == 0
    assert StoreReader(tmp_path).counts().bars == 20_002


def test_malformed_records_are_skipped_and_counted(tmp_path: Path) -> None:
    bad_ts = {**bar(1), "ts": "2024-05-06T14:30:00"}  # no zone
    with StoreWriter(tmp_path) as writer:
        new = writer.add("bars", [bar(0), {"venue": "x"}, bad_ts, {**bar(2), "open": "high"}])
        assert new == 1
        assert writer.add("alerts", [{**alert(1), "evidence": "not an object"}]) == 0
        assert writer.stats["malformed"] == 4
        with pytest.raises(ValueError, match="unknown kind"):
            writer.add("ticks", [bar(0)])  # type: ignore[arg-type]
    assert StoreReader(tmp_path).counts().bars == 1


def test_stored_columns_round_trip(tmp_path: Path) -> None:
    with StoreWriter(tmp_path) as writer:
        writer.add("alerts", [alert(7)])
        writer.add("halts", [halt(3)])
    reader = StoreReader(tmp_path)
    stored = reader.alert("a7")
    assert stored is not None
    assert stored["evidence"] == alert(7)["evidence"]
    assert stored["agents"] == ["b1", "b2"]
    assert stored["ts"] == T0 + timedelta(seconds=7)
    halts = reader.halts()
    assert halts["alert_ids"].to_list() == [["a0"]]
    assert halts["resume_at"][0] == T0 + timedelta(seconds=3, minutes=5)


def test_compaction_keeps_every_record_once(tmp_path: Path) -> None:
    with StoreWriter(tmp_path, max_parts=4, delete_grace_s=0) as writer:
        for batch in range(25):
            writer.add("bars", [bar(batch * 10 + s) for s in range(10)])
            writer.add("alerts", [alert(batch)])
            writer.flush()
            assert len(part_files(tmp_path / "bars")) <= 5
        assert writer.stats["parts_compacted"] > 0
    assert StoreReader(tmp_path).counts().bars == 250

    # A crash between publishing a merged part and deleting its inputs leaves duplicates:
    # readers still see one copy, and the next compaction removes them from disk.
    parts = part_files(tmp_path / "bars")
    shutil.copy(parts[0], parts[0].with_name("part-99999999999999999999-copy.parquet"))
    reader = StoreReader(tmp_path)
    assert reader.counts().bars == 250
    with StoreWriter(tmp_path, max_parts=4) as writer:
        assert writer.compact("bars", force=True) >= 2
    assert len(part_files(tmp_path / "bars")) == 1
    assert reader.counts().bars == 250
    assert reader.rows("SELECT count(*) FROM _bars_raw") == [(250,)]


def test_empty_store(tmp_path: Path) -> None:
    reader = StoreReader(tmp_path / "missing")
    counts = reader.counts()
    assert counts.is_empty
    assert (counts.alerts, counts.halts, counts.halts_active, counts.instruments) == (0, 0, 0, 0)
    assert reader.instruments() == []
    assert reader.bars("GPU-H100-1H").is_empty()
    assert reader.halts().is_empty()
    assert reader.halt_board().is_empty()
    assert reader.latest_alerts().is_empty()
    assert reader.alert("nope") is None
    with StoreWriter(tmp_path / "store") as writer:  # an empty writer leaves empty folders
        writer.flush()
    assert sorted(p.name for p in (tmp_path / "store").iterdir() if p.is_dir()) == sorted(KINDS)
    assert StoreReader(tmp_path / "store").counts().is_empty


_READER = textwrap.dedent("""
    import json, sys, time
    from pathlib import Path
    from dashboard.queries import StoreReader

    store, out, stop = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    reader = StoreReader(store)
    with out.open("w") as fh:
        while not stop.exists():
            try:
                c = reader.counts()
                board = reader.halt_board()
                line = {"bars": c.bars, "alerts": c.alerts, "halts": c.halts,
                        "board": board.height}
            except Exception as exc:  # the test fails on any of these
                line = {"error": repr(exc)}
            fh.write(json.dumps(line) + "\\n")
            fh.flush()
            time.sleep(0.005)
""")


@pytest.mark.slow
def test_a_reader_in_another_process_reads_while_the_writer_writes(tmp_path: Path) -> None:
    """The dashboard's situation: one process writes and compacts, another queries throughout.

    Each flush publishes one part per kind holding whole batches, so a consistent reader only
    ever sees multiples of the batch size — never a half-written file, never a double count
    while compaction swaps parts underneath it.
    """
    store, out, stop = tmp_path / "store", tmp_path / "reads.jsonl", tmp_path / "stop"
    batch, batches = 50, 80
    with StoreWriter(store, max_parts=3) as writer:
        proc = subprocess.Popen([sys.executable, "-c", _READER, str(store), str(out), str(stop)])
        try:
            deadline = time.monotonic() + 60
            while not (out.exists() and out.read_text()):  # the reader is up and reading
                assert proc.poll() is None, "reader process died"
                assert time.monotonic() < deadline, "reader process never started reading"
                time.sleep(0.05)
            for b in range(batches):
                writer.add("bars", [bar(b * batch + s) for s in range(batch)])
                writer.add("alerts", [alert(b)])
                writer.add("halts", [halt(b * batch, "HALTED" if b % 2 else "TRADING")])
                writer.flush()
                time.sleep(0.02)
            compacted = writer.stats["parts_compacted"]
            while f'"bars": {batch * batches},' not in out.read_text():
                assert time.monotonic() < deadline, "reader never saw the final count"
                time.sleep(0.05)
        finally:
            stop.touch()
            proc.wait(timeout=30)
    assert proc.returncode == 0
    assert compacted > batches  # compaction ran all along

    lines = [json.loads(line) for line in out.read_text().splitlines() if line]
    errors = [line["error"] for line in lines if "error" in line]
    assert errors == []
    bars = [line["bars"] for line in lines]
    assert bars == sorted(bars), "a reader saw the store shrink"
    assert all(n % batch == 0 for n in bars), "a reader saw a partial part or a duplicate"
    assert len(set(bars)) >= 5, f"the reader saw too few states while writing: {set(bars)}"
    assert bars[-1] == batch * batches
    assert all(line["board"] <= 1 for line in lines)
    assert [line["alerts"] for line in lines] == sorted(line["alerts"] for line in lines)
