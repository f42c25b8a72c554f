"""MarketStructure: hand-computed metrics, partition and order invariance, duplicates, late and
amended summaries, first-seen eviction, the Bloom filter, bounds and checkpoints."""

from __future__ import annotations

import math
import os
import pickle
import subprocess
import sys
import time

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from detectors.base import TradeColumns
from detectors.flows import AgentActivity, FlowWindows, PairFlow, WindowSummary
from detectors.structure import MarketStructure, StructureMetrics, structure_summary

__all__: list[str] = []

T0 = 1_700_000_040.0  # a window boundary for window_s=60
Row = tuple[float, str, float, float, str, str]


def summaries(rows: list[Row], *, instrument: str = "GPU", partition: int = 0,
              close_at: int | None = None) -> list[WindowSummary]:
    """Stage 1 for one partition; ``close_at`` closes the windows after that many rows, so the
    later trades of a closed window come as amendments."""
    fw = FlowWindows("v", instrument, partition=partition)
    out = []
    if close_at is not None:
        fw.update(TradeColumns.from_rows("v", instrument, rows[:close_at]))
        out += fw.close_until(math.inf)
        rows = rows[close_at:]
    fw.update(TradeColumns.from_rows("v", instrument, rows))
    return out + fw.flush()


def run(ms: MarketStructure, sums: list[WindowSummary], watermark: float
        ) -> list[StructureMetrics]:
    for s in sums:
        ms.add(s)
    return ms.advance(watermark)


def examples(n: int) -> settings:
    return settings(max_examples=n, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow])


# ---------------------------------------------------------------- hand-computed metrics
def test_hand_computed_metrics() -> None:
    ms = MarketStructure("v", new_entrant_s=1800.0)
    [old] = run(ms, summaries([(T0 - 3600, "p1", 1.0, 1.0, "a", "b")]), T0 - 3540)
    assert (old.new_entrants, old.new_entrant_share) == (2, 1.0)
    ms.observe_agent("a", created_ts=T0 - 60)  # the registry says a is new after all
    ms.observe_agent("c", owner="o", created_ts=T0 - 10 * 86_400)  # and c is not
    ms.observe_agent("c", funded_by="f")  # later facts fill in, never erase
    rows = [(T0 + 1, "t1", 2.0, 4.0, "a", "b"), (T0 + 2, "t2", 2.0, 2.0, "b", "a"),
            (T0 + 3, "t3", 2.0, 1.0, "a", "c"), (T0 + 4, "t4", 2.0, 2.0, "c", "d"),
            (T0 + 5, "t5", 2.0, 1.0, "d", "d"), (T0 + 6, "t6", 2.0, 1.0, "e", "a"),
            (T0 + 7, "t7", 2.0, 1.0, "f", "g")]
    [m] = run(ms, summaries(rows), T0 + 60)
    # volumes (bought + sold): a 8, b 6, d 4, c 3, e 1, f 1, g 1 -- of 2 x 12 = 24
    assert (m.trades, m.volume, m.notional, m.agents) == (7, 12.0, 24.0, 7)
    assert m.hhi == pytest.approx(10_000 * (64 + 36 + 16 + 9 + 1 + 1 + 1) / 24**2)
    assert m.top5_share == pytest.approx(22 / 24)
    # new: a (registry), d, e, f, g (first seen now); old: b (seen an hour ago), c (registry)
    assert m.new_entrants == 5
    assert m.new_entrant_share == pytest.approx(15 / 24)
    # counterparties: a {b 6, c 1, e 1}, b {a 6}, c {a 1, d 2}, d {c 2, d 2}, e, f, g one each
    cp = (38 / 8 + 36 / 6 + 5 / 3 + 8 / 4 + 1 + 1 + 1) / 24
    assert m.counterparty_hhi == pytest.approx(10_000 * cp)
    assert m.top_pair_share == 0.5
    assert m.self_trade_share == pytest.approx(1 / 12)
    assert (m.partitions, m.truncated, m.key) == (1, False, f"v|GPU|{T0}")
    assert ms.facts("c") == ("o", "f", T0 - 10 * 86_400, None)


def test_sentence() -> None:
    m = StructureMetrics(venue="v", instrument="GPU-H100-1H", window_start=43_200.0,
                         window_end=43_260.0, trades=90, volume=100.0, notional=250.0, agents=41,
                         hhi=820.4, top5_share=0.381, new_entrant_share=0.04, new_entrants=2,
                         counterparty_hhi=3000.0, top_pair_share=0.1, self_trade_share=0.0,
                         partitions=2, truncated=False)
    assert structure_summary(m) == ("GPU-H100-1H 12:00–12:01: 41 traders, HHI 820, top 5 hold "
                                    "38% of volume, new entrants 4%")


# ---------------------------------------------------------------- partitions, order, amendments
row_st = st.tuples(st.integers(0, 119), st.sampled_from("abcdefg"), st.sampled_from("abcdefg"),
                   st.integers(1, 9), st.floats(1.0, 3.0, allow_nan=False), st.integers(0, 3))


@examples(40)
@given(raw=st.lists(row_st, min_size=1, max_size=50), parts=st.integers(2, 4),
       order=st.randoms(use_true_random=False), close_at=st.integers(0, 50))
def test_split_across_partitions_in_any_order(raw: list[tuple[int, str, str, int, float, int]],
                                              parts: int, order: object, close_at: int) -> None:
    rows = [(T0 + t / 2, f"t{i}", p, float(q), b, s) for i, (t, b, s, q, p, _) in enumerate(raw)]
    split: list[WindowSummary] = []
    for part in range(parts):  # each partition's trades; some arrive late, as amendments
        mine = [r for r, x in zip(rows, raw, strict=True) if x[5] % parts == part]
        split += summaries(mine, partition=part, close_at=close_at % (len(mine) + 1))
    shuffled = list(split)
    order.shuffle(shuffled)  # type: ignore[attr-defined]
    a = run(MarketStructure("v"), split, math.inf)
    b = run(MarketStructure("v"), shuffled + split[:3], math.inf)  # and a few redeliveries
    assert a == b  # exactly: merge order cannot change a single bit
    whole = run(MarketStructure("v"), summaries(rows), math.inf)
    assert [m.window_start for m in a] == [m.window_start for m in whole]
    for x, y in zip(a, whole, strict=True):
        assert (x.trades, x.agents, x.new_entrants, x.truncated) == \
            (y.trades, y.agents, y.new_entrants, y.truncated)
        for f in ("volume", "notional", "hhi", "top5_share", "new_entrant_share",
                  "counterparty_hhi", "top_pair_share", "self_trade_share"):
            assert getattr(x, f) == pytest.approx(getattr(y, f), rel=1e-9, abs=1e-12), f


def test_duplicates_late_and_refused_summaries() -> None:
    ms = MarketStructure("v", max_open_windows=1)
    [s] = summaries([(T0, "t1", 1.0, 1.0, "a", "b")])
    [amend] = summaries([(T0, "t2", 1.0, 2.0, "a", "c")])
    amend = msgspec.structs.replace(amend, seq=1)  # late trades of the same partition
    assert [ms.add(s), ms.add(s), ms.add(amend), ms.add(amend)] == [True, False, True, False]
    [other] = summaries([(T0 + 60, "t3", 1.0, 1.0, "a", "b")])
    assert not ms.add(other)  # a second open bucket is over max_open_windows
    assert not ms.add(summaries([(T0, "t4", 1.0, 1.0, "a", "b")], instrument="X")[0])
    [m] = ms.advance(T0 + 60)
    assert (m.trades, m.volume, m.agents) == (2, 3.0, 3)  # the amendment is merged
    assert not ms.add(s)  # late: its window has closed
    assert ms.stats == {"merged": 2, "duplicates": 2, "late": 1, "refused": 2, "shed": 0,
                        "evicted": 0}
    bad = MarketStructure("v", window_s=30.0)
    assert not bad.add(s)
    assert bad.stats["refused"] == 1


def test_open_entries_budget_sheds_details_and_flags_truncation() -> None:
    ms = MarketStructure("v", max_open_entries=6)
    [a] = summaries([(T0, "t1", 1.0, 1.0, "a", "b")])  # 1 + 1 pair + 2 agents = 4 entries
    [b] = summaries([(T0, "t2", 1.0, 1.0, "c", "d")], partition=1)
    assert ms.add(a)
    assert ms.add(b)  # kept without its pairs and agents
    [m] = ms.flush()
    assert (m.trades, m.agents, m.truncated, ms.stats["shed"]) == (2, 2, True, 1)


# ---------------------------------------------------------------- first seen, eviction, Bloom
def test_one_bucket_agents_go_first_and_returning_agents_are_not_new() -> None:
    ms = MarketStructure("v", max_agents=3)
    run(ms, summaries([(T0, "t1", 1.0, 1.0, "a", "b")]), T0 + 60)
    run(ms, summaries([(T0 + 60, "t2", 1.0, 1.0, "a", "c")]), T0 + 120)
    [m] = run(ms, summaries([(T0 + 120, "t3", 1.0, 1.0, "d", "e")]), T0 + 180)
    assert m.new_entrants == 2
    assert (list(ms._once), list(ms._multi)) == (["d", "e"], ["a"])  # b, c evicted, oldest first
    [m] = run(ms, summaries([(T0 + 180, "t4", 1.0, 1.0, "b", "f")]), T0 + 240)
    assert (m.new_entrants, m.new_entrant_share) == (1, 0.5)  # f; b was seen before
    assert ms._once["b"] == -math.inf


def test_bloom_hashes_are_the_same_in_every_process() -> None:
    from detectors.structure import _Bloom
    here = [x.tolist() for x in _Bloom(1 << 16, 7)._bits(["agent-1", "agent-2"])]
    code = ("from detectors.structure import _Bloom; "
            "print([x.tolist() for x in _Bloom(1 << 16, 7)._bits(['agent-1', 'agent-2'])])")
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    there = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True, env=env, cwd=os.path.dirname(os.path.dirname(__file__)))
    assert there.stdout.strip() == str(here)


def cheap_summary(i: int, n: int = 1000) -> WindowSummary:
    """Window ``i``: ``n`` distinct one-trade agents, paired off."""
    ids = [f"x{i}-{j}" for j in range(n)]
    t = T0 + 60 * i
    return WindowSummary(
        venue="v", instrument="GPU", window_start=t, window_end=t + 60, partition=0, seq=0,
        trades=n // 2, volume=n / 2, notional=n / 2, first_price=1.0, last_price=1.0, vwap=1.0,
        pairs=[PairFlow(ids[j], ids[j + 1], 1, 1.0, 1.0, t, t, [f"t{j}"])
               for j in range(0, n, 2)],
        agents=[AgentActivity(a, float(j % 2 == 0), float(j % 2), 1.0, 1.0, 1, t, t, 1)
                for j, a in enumerate(ids)])


@pytest.mark.slow
def test_a_million_distinct_agents_stay_within_budget() -> None:
    ms = MarketStructure("v")  # max_agents=200_000, Bloom filter 2 x 1 MiB
    start, new = time.perf_counter(), 0
    for i in range(1000):
        assert ms.add(cheap_summary(i))
        [m] = ms.advance(T0 + 60 * (i + 1))
        new += m.new_entrants
    elapsed = time.perf_counter() - start
    assert new >= 999_000  # Bloom false positives: under 0.1%
    assert len(ms._once) + len(ms._multi) <= ms.max_agents
    assert ms.stats["evicted"] == 800_000
    size = len(pickle.dumps(ms))
    print(f"1M agents: {elapsed:.1f} s, table {len(ms._once) + len(ms._multi):,}, "
          f"pickle {size / 1e6:.1f} MB, taken for returning: {1_000_000 - new}")
    assert size < 12_000_000
    back = cheap_summary(0)  # evicted long ago: the Bloom filter remembers them
    back = msgspec.structs.replace(back, window_start=T0 + 60_000, window_end=T0 + 60_060)
    ms.add(back)
    [m] = ms.flush()
    assert m.new_entrants <= 5  # false positives of the filter, well under 1%


def test_pickle_mid_stream_gives_identical_outputs() -> None:
    rows = [(T0 + i * 1.7, f"t{i}", 1.0 + i % 3, 1.0 + i % 4, "abcdef"[i % 6],
             "abcdef"[i * 5 % 7 % 6]) for i in range(200)]
    sums = summaries(rows) + summaries(rows[::3], instrument="X", partition=1)
    a = MarketStructure("v", max_agents=4)
    for s in sums[:4]:
        a.add(s)
    a.advance(T0 + 120)
    b = pickle.loads(pickle.dumps(a))
    outs = []
    for ms in (a, b):
        outs.append(run(ms, sums[4:], T0 + 240) + ms.flush())
    assert outs[0] == outs[1]
    assert len(outs[0]) > 2
