"""Admission of a run of one warm instrument's trades at once (``PartitionState._bulk``) decides
exactly what the one-by-one rules decide: accepted trades, dead letters and their reasons,
duplicates, clocks and the duplicate memory — whatever the mix of early, late, repeated and new."""

from __future__ import annotations

import pickle
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import streams.partition as partition
from detectors.market import MarketConfig
from streams.contracts import Trade
from streams.partition import EngineConfig, PartitionState

T0 = 1_767_225_600.0

#: one run of a tape: (instrument, length, seconds between its trades, an odd trade in it
#: (none, a repeated id, one far behind, one far ahead...), where in the run)
run_of = st.tuples(st.sampled_from(["A", "A", "B", "C"]), st.integers(1, 24),
                   st.sampled_from([0.0, 0.1, 0.5, 2.0]),
                   st.sampled_from(["", "", "dup", "twin", "late", "future", "behind"]),
                   st.integers(0, 23))


def tape(runs: list[tuple[str, int, float, str, int]], venue: str) -> list[Trade]:
    out: list[Trade] = []
    t = T0
    for inst, length, dt, odd, at in runs:
        for k in range(length):
            t += dt
            ts, tid = t, f"t{len(out)}"
            if k == at % length:
                if odd == "dup" and out:  # an id from earlier in the tape
                    tid = out[len(out) // 2].trade_id
                if odd == "twin" and k:  # the id of the trade just before
                    tid = out[-1].trade_id
                ts = {"late": t - 90.0, "future": t + 400.0, "behind": t - 3.0}.get(odd, t)
            out.append(Trade(ts=ts, trade_id=tid, instrument=inst, price=10.0, qty=1.0,
                             buyer="b", seller="s", venue=venue))
    return out


def judged(trades: list[Trade], bulk: int, batch: int) -> tuple[Any, ...]:
    state = PartitionState(0, EngineConfig(clock_quorum=3, max_instruments=2,
                                           allowed_lateness_s=60.0, max_future_s=300.0,
                                           wall_future_s=None), MarketConfig())
    old, partition._BULK = partition._BULK, bulk
    try:
        accepted, reasons, dups = [], [], 0
        for i in range(0, len(trades), batch):
            rejected: list[Any] = []
            groups, d = state.accept(trades[i:i + batch], None, T0, rejected)
            dups += d
            accepted += [(k, g) for k, g in groups.items()]
            reasons += [r.reason.split(":")[0] + str(r.index) for r in rejected]
    finally:
        partition._BULK = old
    clocks = {k: (s.n, s.clock) for k, s in state.slots.items()}
    return (accepted, reasons, dups, clocks, {v: c.clock for v, c in state.clocks.items()},
            dict(state.seen.stamps), list(state.seen.order), sorted(state.newcomers))


@settings(max_examples=300, deadline=None)
@given(st.lists(run_of, min_size=1, max_size=20), st.sampled_from([1, 7, 16, 50, 500]))
def test_runs_at_once_decide_as_one_by_one(runs: list[tuple[str, int, float, str, int]],
                                           batch: int) -> None:
    trades = tape(runs, "v")
    assert judged(trades, 2, batch) == judged(trades, 10**9, batch)


@pytest.mark.parametrize("batch", [8, 64, 500])
def test_a_long_clean_run_goes_through_at_once(batch: int) -> None:
    trades = tape([("A", 600, 0.5, "", 0)], "v")
    fast, slow = judged(trades, 8, batch), judged(trades, 10**9, batch)
    assert fast == slow
    assert fast[3] == {("v", "A"): (600, T0 + 0.5 * 600)}
    pickle.dumps(fast)  # the state stays plain data
