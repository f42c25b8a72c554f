"""FlowWindows: hand-made windows, a brute-force reference, batching invariance, late trades,
bounds and checkpoints.

Quantities are whole numbers and prices binary fractions, so every sum is exact and summaries can
be compared with ``==``, against the reference as well.
"""

from __future__ import annotations

import math
import pickle
from collections import defaultdict

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from detectors.base import TradeColumns
from detectors.flows import AgentActivity, FlowWindows, PairFlow, WindowSummary

__all__: list[str] = []

T0 = 1_700_000_040.0  # a window boundary for window_s=60
Row = tuple[float, str, float, float, str, str]


def cols(rows: list[Row]) -> TradeColumns:
    return TradeColumns.from_rows("v", "GPU", rows)


def examples(n: int) -> settings:
    return settings(max_examples=n, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow])


def reference(rows: list[Row], *, window_s: float, max_pairs: int, max_agents: int,
              k: int) -> list[WindowSummary]:
    """The summaries by the book, one trade at a time (no late, forced or dropped trades)."""
    windows: dict[float, list[Row]] = defaultdict(list)
    for r in rows:
        windows[math.floor(r[0] / window_s) * window_s].append(r)
    out = []
    for start in sorted(windows):
        w = windows[start]
        pairs: dict[tuple[str, str], list[Row]] = {}
        sides: dict[str, list[tuple[str, Row]]] = {}
        for r in w:
            pairs.setdefault((r[4], r[5]), []).append(r)
            sides.setdefault(r[4], []).append(("buy", r))
            sides.setdefault(r[5], []).append(("sell", r))
        kept = list(pairs)[:max_pairs]
        cps: dict[str, set[str]] = defaultdict(set)
        for b, s in kept:
            cps[b].add(s)
            cps[s].add(b)
        pf = [PairFlow(b, s, len(t), sum(r[3] for r in t), sum(r[2] * r[3] for r in t),
                       min(r[0] for r in t), max(r[0] for r in t),
                       [r[1] for r in (t if len(t) <= 2 * k else t[:k] + t[len(t) - k:])])
              for (b, s), t in pairs.items() if (b, s) in kept]
        aa = []
        for a in list(sides)[:max_agents]:
            buys = [r for side, r in sides[a] if side == "buy"]
            sells = [r for side, r in sides[a] if side == "sell"]
            trades = {r[1] for _, r in sides[a]}
            aa.append(AgentActivity(a, sum(r[3] for r in buys), sum(r[3] for r in sells),
                                    sum(r[2] * r[3] for r in buys),
                                    sum(r[2] * r[3] for r in sells), len(trades),
                                    min(r[0] for _, r in sides[a]),
                                    max(r[0] for _, r in sides[a]), len(cps[a])))
        first = min(w, key=lambda r: r[0])
        last = max(reversed(w), key=lambda r: r[0])
        volume, notional = sum(r[3] for r in w), sum(r[2] * r[3] for r in w)
        out.append(WindowSummary(
            venue="v", instrument="GPU", window_start=start, window_end=start + window_s,
            partition=0, seq=0, trades=len(w), volume=volume, notional=notional,
            first_price=first[2], last_price=last[2], vwap=notional / volume,
            pairs=sorted(pf, key=lambda p: (-p.qty, p.buyer, p.seller)),
            agents=sorted(aa, key=lambda a: (-(a.buy_qty + a.sell_qty), a.agent)),
            truncated_pairs=sum(len(t) for p, t in pairs.items() if p not in kept),
            truncated_agents=sum(len(v) for a, v in list(sides.items())[max_agents:])))
    return out


row_st = st.tuples(st.integers(0, 400), st.sampled_from("abcde"), st.sampled_from("abcde"),
                   st.integers(1, 5), st.sampled_from([1.0, 1.5, 2.25, 3.0]))


def make_rows(raw: list[tuple[int, str, str, int, float]]) -> list[Row]:
    return [(T0 + t / 2, f"t{i:04d}", p, float(q), b, s) for i, (t, b, s, q, p) in enumerate(raw)]


def split(rows: list[Row], cuts: list[int]) -> list[list[Row]]:
    bounds = sorted({0, len(rows), *(c % (len(rows) + 1) for c in cuts)})
    return [rows[i:j] for i, j in zip(bounds, bounds[1:], strict=False)]


# ---------------------------------------------------------------- hand-made windows
def test_hand_computed_window() -> None:
    fw = FlowWindows("v", "GPU", window_s=60.0, partition=3, sample_ids=1)
    fw.update(cols([(T0 + 5, "t1", 2.0, 3.0, "a", "b"),
                    (T0 + 1, "t2", 4.0, 1.0, "b", "a"),  # earliest trade, arrives second
                    (T0 + 7, "t3", 2.0, 2.0, "a", "a"),  # a self-trade
                    (T0 + 9, "t4", 3.0, 1.0, "a", "b"),
                    (T0 + 9, "t5", 1.0, 1.0, "a", "b")]))  # ties on ts: the last arrival is last
    assert fw.close_until(T0 + 59.9) == []
    [s] = fw.close_until(T0 + 60)
    assert (s.key, s.trades, s.volume, s.notional) == (f"3|v|GPU|{T0!r}|0", 5, 8.0, 18.0)
    assert (s.first_price, s.last_price, s.vwap) == (4.0, 1.0, 18.0 / 8.0)
    assert s.pairs == [PairFlow("a", "b", 3, 5.0, 10.0, T0 + 5, T0 + 9, ["t1", "t5"]),
                       PairFlow("a", "a", 1, 2.0, 4.0, T0 + 7, T0 + 7, ["t3"]),
                       PairFlow("b", "a", 1, 1.0, 4.0, T0 + 1, T0 + 1, ["t2"])]
    assert s.agents == [AgentActivity("a", 7.0, 3.0, 14.0, 8.0, 5, T0 + 1, T0 + 9, 2),
                        AgentActivity("b", 1.0, 5.0, 4.0, 10.0, 4, T0 + 1, T0 + 9, 1)]
    assert (s.truncated_pairs, s.truncated_agents) == (0, 0)
    assert msgspec.json.decode(msgspec.json.encode(s), type=WindowSummary) == s


def test_sample_keeps_first_and_last_ids() -> None:
    fw = FlowWindows("v", "GPU", sample_ids=2, block=3)
    fw.update(cols([(T0 + i, f"t{i}", 1.0, 1.0, "a", "b") for i in range(7)]))
    [s] = fw.flush()
    assert s.pairs[0].trade_ids == ["t0", "t1", "t5", "t6"]
    assert s.pairs[0].count == 7


def test_truncation_counts_the_rest() -> None:
    fw = FlowWindows("v", "GPU", max_pairs=1, max_agents=2)
    fw.update(cols([(T0, "t1", 1.0, 1.0, "a", "b"), (T0, "t2", 1.0, 2.0, "c", "d"),
                    (T0, "t3", 1.0, 4.0, "a", "b"), (T0, "t4", 1.0, 8.0, "c", "a")]))
    [s] = fw.flush()
    assert [(p.buyer, p.seller, p.qty) for p in s.pairs] == [("a", "b", 5.0)]
    assert [a.agent for a in s.agents] == ["a", "b"]
    assert (s.trades, s.volume, s.truncated_pairs, s.truncated_agents) == (4, 15.0, 2, 3)


# ---------------------------------------------------------------- reference and batching
@examples(60)
@given(raw=st.lists(row_st, max_size=60), cuts=st.lists(st.integers(0, 60), max_size=6),
       block=st.sampled_from([2, 5, 1000]), caps=st.sampled_from([(2, 3), (3, 2), (100, 100)]),
       k=st.sampled_from([0, 1, 2, 3]))
def test_matches_reference_whatever_the_batching(raw: list[tuple[int, str, str, int, float]],
                                                 cuts: list[int], block: int,
                                                 caps: tuple[int, int], k: int) -> None:
    rows = make_rows(raw)
    opts = {"max_pairs": caps[0], "max_agents": caps[1], "sample_ids": k}
    one = FlowWindows("v", "GPU", block=block, **opts)
    one.update(cols(rows))
    many = FlowWindows("v", "GPU", block=block, **opts)
    for part in split(rows, cuts):
        many.update(cols(part))
    expected = reference(rows, window_s=60.0, max_pairs=caps[0], max_agents=caps[1], k=k)
    assert one.flush() == many.flush() == expected


@examples(40)
@given(raw=st.lists(row_st, max_size=60), cuts=st.lists(st.integers(0, 60), max_size=8),
       closes=st.lists(st.tuples(st.integers(0, 60), st.integers(0, 300)), max_size=4),
       max_open=st.sampled_from([1, 2, 8]))
def test_late_and_forced_windows_do_not_depend_on_batching(
        raw: list[tuple[int, str, str, int, float]], cuts: list[int],
        closes: list[tuple[int, int]], max_open: int) -> None:
    rows = make_rows(raw)
    marks = {i % (len(rows) + 1): T0 + t for i, t in closes}  # close_until after row i

    def run(extra_cuts: list[int]) -> list[WindowSummary]:
        fw = FlowWindows("v", "GPU", max_open=max_open, block=4)
        out: list[WindowSummary] = []
        for part in split(rows, [*marks, *extra_cuts]):
            fw.update(cols(part))
            end = rows.index(part[-1]) + 1 if part else 0
            if end in marks:
                out += fw.close_until(marks[end])
        return out + fw.flush()

    base = run([])
    assert run(cuts) == base
    assert sum(s.trades for s in base) == len(rows)  # nothing dropped in a short run
    assert sorted(s.key for s in base) == sorted({s.key for s in base})


# ---------------------------------------------------------------- late trades, bounds
def test_late_trade_amends_an_emitted_window() -> None:
    fw = FlowWindows("v", "GPU")
    fw.update(cols([(T0 + 1, "t1", 1.0, 1.0, "a", "b"), (T0 + 61, "t2", 1.0, 1.0, "a", "b")]))
    assert [(s.window_start, s.seq) for s in fw.close_until(T0 + 60)] == [(T0, 0)]
    fw.update(cols([(T0 + 2, "t3", 1.0, 2.0, "c", "b"), (T0 + 3, "t4", 1.0, 2.0, "c", "b")]))
    [amend] = fw.close_until(T0 + 60)  # the late trades, on the very next call
    assert (amend.seq, amend.trades, amend.volume, amend.key) == (1, 2, 4.0, f"0|v|GPU|{T0!r}|1")
    fw.update(cols([(T0 + 4, "t5", 1.0, 1.0, "c", "b")]))
    assert [(s.window_start, s.seq) for s in fw.flush()] == [(T0, 2), (T0 + 60, 0)]


def test_windows_forgotten_after_64_drop_late_trades() -> None:
    fw = FlowWindows("v", "GPU", window_s=1.0)
    for i in range(70):
        fw.update(cols([(T0 + i, f"t{i}", 1.0, 1.0, "a", "b")]))
        fw.close_until(T0 + i + 1)
    fw.update(cols([(T0 + 2, "late", 1.0, 1.0, "a", "b"), (T0 + 69, "ok", 1.0, 1.0, "a", "b"),
                    (math.nan, "bad", 1.0, 1.0, "a", "b")]))
    assert fw.stats == {"too_late": 1, "forced": 0, "bad_ts": 1}
    assert [(s.window_start, s.seq, s.trades) for s in fw.flush()] == [(T0 + 69, 1, 1)]


def test_open_windows_are_capped_and_a_forged_future_ts_closes_nothing_current() -> None:
    fw = FlowWindows("v", "GPU", max_open=2)
    fw.update(cols([(T0, "t1", 1.0, 1.0, "a", "b"), (T0 + 60, "t2", 1.0, 1.0, "a", "b")]))
    fw.update(cols([(T0 + 1e9, "forged", 1.0, 1.0, "x", "y")]))  # closes only the oldest
    fw.update(cols([(T0 + 61, "t3", 1.0, 1.0, "a", "b")]))
    assert fw.stats["forced"] == 1
    assert len(fw._open) <= 2
    out = fw.close_until(T0 + 120)
    assert [(s.window_start, s.seq, s.trades) for s in out] == [(T0, 0, 1), (T0 + 60, 0, 2)]


def test_state_is_bounded_under_a_flood_of_distinct_agents() -> None:
    fw = FlowWindows("v", "GPU", max_pairs=100, max_agents=100, block=4096)
    for b in range(50):  # 100,000 trades, 200,000 distinct agents, one window
        fw.update(cols([(T0 + 1, f"t{b}-{i}", 1.0, 1.0, f"b{b}-{i}", f"s{b}-{i}")
                        for i in range(2000)]))
    [win] = fw._open.values()
    assert win.pairs is not None
    assert win.agents is not None
    assert (win.pairs.height, win.agents.height) == (100, 100)
    assert len(win.pending["ts"]) < 4096
    size = len(pickle.dumps(fw))
    assert size < 1_000_000, size
    [s] = fw.flush()
    assert (s.trades, s.truncated_pairs, s.truncated_agents) == (100_000, 99_900, 199_900)


def test_pickle_mid_stream_gives_identical_outputs() -> None:
    rows = make_rows([(i * 7 % 300, "abcde"[i % 5], "abcde"[i * 3 % 5], 1 + i % 4, 1.5)
                      for i in range(400)])
    a = FlowWindows("v", "GPU", block=16, max_pairs=4)
    a.update(cols(rows[:150]))
    a.close_until(T0 + 60)
    b = pickle.loads(pickle.dumps(a))
    for fw in (a, b):
        fw.update(cols(rows[150:]))
    assert a.close_until(T0 + 120) == b.close_until(T0 + 120)
    assert a.flush() == b.flush()


def test_a_newcomer_is_cheap() -> None:
    assert len(pickle.dumps(FlowWindows("v", "GPU"))) < 1_000


@pytest.mark.parametrize("n", [1, 3])
def test_empty_batches_change_nothing(n: int) -> None:
    fw = FlowWindows("v", "GPU")
    for _ in range(n):
        fw.update(cols([]))
    assert fw.flush() == []


@examples(60)
@given(raw=st.lists(st.tuples(st.integers(0, 60), st.floats(1e-30, 1e30), st.floats(1e-30, 1e30)),
                    min_size=1, max_size=80),
       cuts=st.lists(st.integers(0, 80), max_size=10))
def test_price_bucket_sums_are_the_same_to_the_last_bit_whatever_the_batching(
        raw: list[tuple[int, float, float]], cuts: list[int]) -> None:
    """Unlike the rest of this module's tests, any prices and quantities of the contract: the
    5-s buckets' volume and notional are kept exact, so they do not depend on batching (they
    used to be summed per batch, and the last bits depended on where batches were cut)."""
    rows = [(T0 + t / 4, f"t{i:04d}", p, q, "a", "b") for i, (t, p, q) in enumerate(raw)]
    one = FlowWindows("v", "GPU")
    one.update(cols(rows))
    one.flush()
    many = FlowWindows("v", "GPU")
    for part in split(rows, cuts):
        many.update(cols(part))
    many.flush()
    want = one.take_ticks()
    assert many.take_ticks() == want
    for row in want:
        mine = [r for r in rows if row[1] <= r[0] < row[1] + 5.0]
        assert row[7] == math.fsum(r[3] for r in mine)
        assert row[8] == math.fsum(r[2] * r[3] for r in mine)
