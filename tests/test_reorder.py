"""The reorder buffer (replay.reorder): event-time order in bounded memory, deterministic.

Properties: a tape disordered by less than the horizon comes out as the stable sort by ``ts``;
every row comes out exactly once; the buffer never holds more than ``max_rows``; late rows are
exactly those below a time already released; the output does not depend on how the input is cut
into chunks.
"""

from __future__ import annotations

import random
import tracemalloc
from collections.abc import Sequence
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from replay.backtest import event_order
from replay.reorder import OrderedTape, ReorderBuffer
from replay.synthetic import FeedSpec, generate
from replay.tape import read_tape, write_tape
from streams.contracts import Trade

T0 = 1_767_225_600.0


def trade(i: int, ts: float) -> Trade:
    return Trade(ts=ts, trade_id=str(i), instrument="I", price=1.0, qty=1.0, buyer="a",
                 seller="b")


def cut(items: list[Trade], cuts: Sequence[int]) -> list[list[Trade]]:
    """``items`` split at the (sorted, clipped) positions ``cuts``."""
    bounds = sorted({0, len(items), *(min(c, len(items)) for c in cuts)})
    return [items[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


def run(buf: ReorderBuffer, chunks: list[list[Trade]]) -> list[Trade]:
    out: list[Trade] = []
    for chunk in chunks:
        out += buf.push(chunk)
        assert len(buf) <= buf.max_rows
    return out + buf.drain()


@st.composite
def disordered(draw: st.DrawFn) -> tuple[list[Trade], int]:
    """Times ``base - d`` with ``base`` non-decreasing and ``0 <= d < horizon``: no row is
    ``horizon`` or more behind an earlier one. Small integers, so equal times are common."""
    horizon = draw(st.integers(1, 20))
    steps = draw(st.lists(st.integers(0, 3), max_size=300))
    base = 0
    trades = []
    for i, step in enumerate(steps):
        base += step
        trades.append(trade(i, float(base - draw(st.integers(0, horizon - 1)))))
    return trades, horizon


@given(disordered(), st.lists(st.integers(0, 300), max_size=6))
def test_within_the_horizon_the_output_is_the_stable_sort(case: tuple[list[Trade], int],
                                                          cuts: list[int]) -> None:
    trades, horizon = case
    buf = ReorderBuffer(horizon_s=horizon, max_rows=max(len(trades), 1))
    out = run(buf, cut(trades, cuts))
    assert [t.trade_id for t in out] == [t.trade_id for t in event_order(trades)]
    assert buf.late == 0
    assert buf.peak <= buf.max_rows


@settings(max_examples=300)
@given(st.lists(st.integers(0, 40), max_size=200), st.integers(0, 15), st.integers(0, 12),
       st.lists(st.integers(0, 200), max_size=6))
def test_any_input_every_row_once_bounded_late_rule_and_chunking(
        times: list[int], horizon: int, max_rows: int, cuts: list[int]) -> None:
    trades = [trade(i, float(ts)) for i, ts in enumerate(times)]
    buf = ReorderBuffer(horizon_s=horizon, max_rows=max_rows)
    out = run(buf, cut(trades, cuts))
    # every row exactly once (by identity)
    assert sorted(map(id, out)) == sorted(map(id, trades))
    assert buf.peak <= max_rows
    assert buf.pushed == len(trades)
    # late rows are exactly those below a time already released; the rest is in (ts, arrival)
    # order, arrival order among the late ones is kept
    arrival = {id(t): i for i, t in enumerate(trades)}
    newest = float("-inf")
    in_order: list[tuple[float, int]] = []
    late: list[int] = []
    for t in out:
        if float(t.ts) < newest:
            late.append(arrival[id(t)])
        else:
            newest = float(t.ts)
            in_order.append((float(t.ts), arrival[id(t)]))
    assert len(late) == buf.late
    assert late == sorted(late)
    assert in_order == sorted(in_order)
    # the output is a function of the rows, not of the chunking
    for chunks in ([trades], [[t] for t in trades]):
        again = run(ReorderBuffer(horizon_s=horizon, max_rows=max_rows), chunks)
        assert [id(t) for t in again] == [id(t) for t in out]


def reference(trades: list[Trade], horizon: float, max_rows: int) -> tuple[list[Trade], int]:
    """The rule of the module docstring, row by row, naively."""
    held: list[tuple[float, int, Trade]] = []
    out: list[Trade] = []
    released = newest = float("-inf")
    late = 0
    for seq, t in enumerate(trades):
        ts = float(t.ts)
        if ts < released:
            out.append(t)
            late += 1
            continue
        held.append((ts, seq, t))
        newest = max(newest, ts)
        while held:
            smallest = min(held, key=lambda x: x[:2])
            if len(held) <= max_rows and smallest[0] > newest - horizon:
                break
            held.remove(smallest)
            out.append(smallest[2])
            released = smallest[0]
    return out + [x[2] for x in sorted(held, key=lambda x: x[:2])], late


@settings(max_examples=300)
@given(st.lists(st.integers(0, 30), max_size=120), st.booleans(), st.integers(0, 12),
       st.integers(0, 150), st.lists(st.integers(0, 120), max_size=5))
def test_the_buffer_is_the_rule_whatever_the_chunking(
        times: list[int], ordered: bool, horizon: int, max_rows: int, cuts: list[int]) -> None:
    """Sorted chunks take a fast path; any chunk the row-by-row one: both are the rule."""
    if ordered:
        times = sorted(times)
    trades = [trade(i, float(ts)) for i, ts in enumerate(times)]
    expected, late = reference(trades, horizon, max_rows)
    for chunks in (cut(trades, cuts), [trades], [[t] for t in trades]):
        buf = ReorderBuffer(horizon_s=horizon, max_rows=max_rows)
        assert [id(t) for t in run(buf, chunks)] == [id(t) for t in expected]
        assert buf.late == late


def test_a_full_buffer_releases_its_smallest() -> None:
    buf = ReorderBuffer(horizon_s=1e9, max_rows=2)
    assert [t.trade_id for t in buf.push([trade(0, 5.0), trade(1, 3.0), trade(2, 4.0)])] == ["1"]
    assert [t.trade_id for t in buf.push([trade(3, 1.0)])] == ["3"]  # late: 3.0 went out
    assert [t.trade_id for t in buf.drain()] == ["2", "0"]
    assert (buf.late, buf.peak, len(buf)) == (1, 2, 0)


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ValueError, match="horizon_s"):
        ReorderBuffer(horizon_s=-1)
    with pytest.raises(ValueError, match="horizon_s"):
        ReorderBuffer(horizon_s=float("nan"))
    with pytest.raises(ValueError, match="max_rows"):
        ReorderBuffer(max_rows=-1)


# --- tapes -------------------------------------------------------------------------------------


def shuffled(trades: list[Trade], seed: int = 1) -> list[Trade]:
    trades = list(trades)
    rng = random.Random(seed)
    for i in range(0, len(trades) - 3, 5):
        j = i + rng.randint(1, 3)
        trades[i], trades[j] = trades[j], trades[i]
    return trades


@pytest.mark.parametrize("fmt", ["csv", "parquet", "jsonl.gz"])
def test_ordered_tape_is_event_order_in_batches_with_rejects(tmp_path: Path, fmt: str) -> None:
    trades = shuffled(generate(FeedSpec(seed=5, rate=10), start=T0, duration_s=60))
    path = tmp_path / f"t.{fmt}"
    write_tape(trades, path)
    tape = OrderedTape(path, batch_size=100, chunk_rows=333)
    chunks = list(tape)
    assert [t.trade_id for c in chunks for t in c.trades] == [
        t.trade_id for t in event_order(trades)]
    assert all(len(c.trades) == 100 for c in chunks[:-1])
    assert sum(c.rows for c in chunks) == tape.rows == tape.valid == len(trades)
    assert (tape.rejected, tape.late) == (0, 0)
    assert tape.total_rows == (len(trades) if fmt == "parquet" else None)
    with pytest.raises(RuntimeError, match="read once"):
        iter(tape)


def test_ordered_tape_reports_bad_rows_and_late_rows(tmp_path: Path) -> None:
    trades = [trade(i, T0 + i) for i in range(1000)]
    trades[900] = trade(900, T0)  # 900 s behind the rows before it: late with a 300 s horizon
    write_tape(trades, tmp_path / "t.csv")
    lines = (tmp_path / "t.csv").read_text().splitlines()
    lines[11] = lines[11].replace(",1.0,", ",-1.0,", 1)  # data row 11: negative price
    (tmp_path / "bad.csv").write_text("\n".join(lines) + "\n")
    tape = OrderedTape(tmp_path / "bad.csv", batch_size=64, chunk_rows=100)
    chunks = list(tape)
    rejects = [r for c in chunks for r in c.rejects]
    assert [r.row for r in rejects] == [11]
    assert (tape.rows, tape.valid, tape.rejected, tape.late) == (1000, 999, 1, 1)
    ids = [t.trade_id for c in chunks for t in c.trades]
    assert len(ids) == len(set(ids)) == 999
    assert ids.index("900") == 599  # released where it came: after the 599 trades up to ts 599


def test_streaming_a_tape_uses_a_fraction_of_the_memory_of_reading_it(tmp_path: Path) -> None:
    """200k trades: iterating an ordered tape peaks far below holding the whole tape."""
    trades = generate(FeedSpec(seed=2, rate=200), start=T0, duration_s=250)
    path = tmp_path / "t.parquet"
    write_tape(trades, path)
    n = len(trades)
    del trades
    assert n > 190_000

    tracemalloc.start()
    try:
        whole = read_tape(path)
        _, peak_whole = tracemalloc.get_traced_memory()
        assert len(whole.trades) == n
        del whole
        tracemalloc.reset_peak()
        tape = OrderedTape(path, horizon_s=5, max_rows=20_000, chunk_rows=10_000)
        seen = 0
        for chunk in tape:
            seen += len(chunk.trades)
            assert len(tape.buffer) <= 20_000
        _, peak_stream = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert seen == n
    assert tape.buffer.peak <= 20_000
    assert peak_stream < peak_whole / 5, (peak_stream, peak_whole)
