"""Event time you can trust: future and late trades, watermarks, timers, admission under a flood.

Pure engine tests (no Kafka): the same :class:`Surveillance` runs in the worker and the backtest.
"""

from __future__ import annotations

import msgspec
import pytest
from test_pipeline import T0, crash_market, halt_rows, prints, run, walk, wall_clock

from streams.contracts import Trade
from streams.partition import EngineConfig
from streams.pipeline import EngineOutput, Surveillance

__all__: list[str] = []


def engine(**kw: object) -> Surveillance:
    return Surveillance(engine=EngineConfig(**kw), wall_clock=wall_clock)  # type: ignore[arg-type]


def rows(out: EngineOutput) -> list[tuple[object, ...]]:
    return halt_rows(out)


def test_a_trade_from_the_year_2100_is_dead_lettered_and_blinds_nothing() -> None:
    tape = crash_market()
    base = run(tape)
    assert [(h.state, h.reason) for h in base.halts][:2] == [("PAUSED", "VELOCITY"),
                                                             ("HALTED", "SPIKE")]
    rogue = msgspec.structs.replace(tape[40], ts=4_102_444_800.0, trade_id="from-2100")
    hostile = tape[:100] + [rogue] + tape[100:]
    out = run(hostile, batch=500)
    assert rows(out) == rows(base)
    assert [h.ts for h in out.halts] == [h.ts for h in base.halts]
    assert [r.reason.split(":")[0] for r in out.rejected] == ["future_ts"]
    assert b"from-2100" in out.rejected[0].raw


def test_a_trade_a_day_ahead_of_the_venue_clock_is_future_even_on_a_new_instrument() -> None:
    tape = crash_market()
    ahead = Trade(ts=float(tape[3000].ts) + 86_400, trade_id="ahead", instrument="NEW",  # type: ignore[arg-type]
                  price=1.0, qty=1.0, buyer="a", seller="b")
    spiked = msgspec.structs.replace(tape[3000], ts=float(tape[3000].ts) + 86_400,  # type: ignore[arg-type]
                                     trade_id="ahead-2")
    out = run(tape[:3000] + [ahead, spiked] + tape[3000:], batch=700)
    assert rows(out) == rows(run(tape))
    assert sorted(r.reason.split(":")[0] for r in out.rejected) == ["future_ts", "future_ts"]


def test_the_wall_clock_check_can_be_switched_off_for_synthetic_futures() -> None:
    future = [msgspec.structs.replace(t, ts=float(t.ts) + 200 * 365 * 86400)  # type: ignore[arg-type]
              for t in walk("A", start=T0, seconds=30)]
    assert len(run(future, engine(wall_future_s=300.0)).rejected) == len(future)
    assert run(future, engine(wall_future_s=None)).rejected == []


def test_a_trade_behind_its_instrument_by_more_than_the_lateness_is_dead_lettered() -> None:
    tape = walk("A", start=T0, seconds=200)
    old = msgspec.structs.replace(tape[10], trade_id="old")
    slightly = msgspec.structs.replace(tape[1500], trade_id="slightly")
    out = run(tape + [old, slightly], engine(allowed_lateness_s=60.0))
    assert [r.reason.split(":")[0] for r in out.rejected] == ["late"]
    assert b'"old"' in out.rejected[0].raw


def test_junk_instruments_cannot_move_the_venue_clock() -> None:
    """A flood of one-trade instruments, each a few minutes ahead of the last, would walk a naive
    max-clock forward by hours and fire every timer; newcomers do not count."""
    tape = crash_market()
    cut = 3000
    t = float(tape[cut].ts)  # type: ignore[arg-type]
    junk = [Trade(ts=t + 250.0 * (k + 1), trade_id=f"j{k}", instrument=f"JUNK{k}", price=1.0,
                  qty=1.0, buyer="x", seller="y") for k in range(40)]
    out = run(tape[:cut] + junk + tape[cut:], batch=400)
    assert rows(out) == rows(run(tape))


def test_a_flood_of_instruments_evicts_newcomers_not_the_busy_market() -> None:
    tape = crash_market()
    cut = next(k for k, t in enumerate(tape) if t.ts > T0 + 550)  # type: ignore[operator]
    t = float(tape[cut].ts)  # type: ignore[arg-type]
    junk = [Trade(ts=t, trade_id=f"j{k}", instrument=f"J{k:06d}", price=1.0, qty=1.0,
                buyer=f"b{k}", seller=f"s{k}") for k in range(50_000)]
    eng = engine(max_instruments=1_000)
    out = EngineOutput()
    stream = tape[:cut] + junk + tape[cut:]
    for i in range(0, len(stream), 5_000):
        out.extend(eng.process(stream[i:i + 5_000]))
        assert len(eng.monitors) <= 1_000
    assert rows(out) == rows(run(tape))
    stats = eng.stats
    # newcomers went first; those of a batch bigger than the budget were refused, visibly
    assert stats.evicted + stats.capacity >= 49_000
    assert {r.reason.split(":")[0] for r in out.rejected} <= {"capacity"}
    counted = sum(int(r.reason.split()[1]) for r in out.rejected if not r.raw)
    assert len([r for r in out.rejected if r.raw]) + counted == stats.capacity


def test_when_every_slot_is_warm_and_active_a_newcomer_is_refused_not_a_market_evicted() -> None:
    warm = [walk(f"W{i}", start=T0, seconds=120, rate=2.0, seed=i) for i in range(4)]
    tape = sorted((t for w in warm for t in w), key=lambda t: t.ts)  # type: ignore[arg-type, return-value]
    newcomer = Trade(ts=float(tape[-1].ts), trade_id="late-comer", instrument="NEW", price=1.0,  # type: ignore[arg-type]
                     qty=1.0, buyer="a", seller="b", venue="v")
    eng = engine(max_instruments=4)
    out = run(tape + [newcomer], eng)
    assert [r.reason.split(":")[0] for r in out.rejected] == ["capacity"]
    assert set(eng.monitors) == {("v", f"W{i}") for i in range(4)}


def test_a_halted_instrument_resumes_on_the_watermark_with_no_trades_of_its_own() -> None:
    a = walk("A", start=T0, seconds=600) + prints("A", [T0 + 600.0, T0 + 600.1], 1.0, "crash")
    b = walk("B", start=T0, seconds=1400, rate=1.0, seed=3)
    out = run(sorted(a + b, key=lambda t: t.ts), engine(), batch=50)  # type: ignore[arg-type, return-value]
    assert [(h.instrument, h.state, h.reason) for h in out.halts] == [
        ("A", "HALTED", "SPIKE"), ("A", "TRADING", "RESUME")]


def test_a_silent_live_venue_resumes_by_the_heartbeat() -> None:
    """Every instrument halted, nothing trades: the worker's heartbeat moves a live venue on."""
    now = [T0 + 600.5]
    eng = Surveillance(engine=EngineConfig(idle_timeout_s=5.0), wall_clock=lambda: now[0])
    a = walk("A", start=T0, seconds=600) + prints("A", [T0 + 600.0, T0 + 600.1], 1.0, "crash")
    out = eng.process(a)
    assert [(h.state, h.reason) for h in out.halts] == [("HALTED", "SPIKE")]
    now[0] = T0 + 603.0
    assert eng.tick().halts == []  # not idle yet
    now[0] = T0 + 1205.0
    resumed = eng.tick()
    assert [(h.state, h.reason, h.ts) for h in resumed.halts] == [
        ("TRADING", "RESUME", out.halts[0].resume_at)]


def test_replayed_history_never_moves_by_the_wall_clock() -> None:
    eng = Surveillance(engine=EngineConfig(idle_timeout_s=5.0), wall_clock=wall_clock)
    eng.process(walk("A", start=T0, seconds=600) + prints("A", [T0 + 600.0, T0 + 600.1], 1.0,
                                                          "crash"))
    assert eng.tick(wall=wall_clock() + 10_000).halts == []


def test_an_idle_partition_follows_the_active_ones_of_its_venue() -> None:
    now = [0.0]
    eng = Surveillance(engine=EngineConfig(idle_timeout_s=5.0),
                       wall_clock=lambda: T0 + 1e6 + now[0])
    a = walk("A", start=T0, seconds=600) + prints("A", [T0 + 600.0, T0 + 600.1], 1.0, "crash")
    first = eng.process(a, partition=0)
    assert [h.reason for h in first.halts] == ["SPIKE"]
    now[0] = 10.0  # partition 0 silent for 10 s of wall clock, partition 1 trading
    b = walk("B", start=T0 + 600, seconds=900, rate=1.0, seed=4)
    assert eng.process(b, partition=1).halts == []  # partition 0's clock has not moved
    out = eng.tick()
    assert [(h.instrument, h.reason) for h in out.halts] == [("A", "RESUME")]


def test_a_silent_partition_with_a_backlog_is_not_idle() -> None:
    """Silent only because its records are still unread (the worker is behind): its watermark
    stays, so its backlog is not made late."""
    now = [0.0]
    eng = Surveillance(engine=EngineConfig(idle_timeout_s=5.0),
                       wall_clock=lambda: T0 + 1e6 + now[0])
    a = walk("A", start=T0, seconds=600) + prints("A", [T0 + 600.0, T0 + 600.1], 1.0, "crash")
    eng.process(a, partition=0)
    now[0] = 10.0
    eng.process(walk("B", start=T0 + 600, seconds=900, rate=1.0, seed=4), partition=1)
    assert eng.tick(backlogged={0}).halts == []  # not idle: nothing moves
    assert [(h.instrument, h.reason) for h in eng.tick().halts] == [("A", "RESUME")]


def test_an_empty_partition_says_so_only_once_read_to_the_end() -> None:
    """A partition with no trades yet tells stage 2 it holds nothing ("*") only when it has
    no unread records (not fetched yet counts as unread): otherwise the venue watermark could
    pass the rows its first trades will produce, and stage 2 would drop them as late."""
    eng = Surveillance(engine=EngineConfig(idle_timeout_s=5.0), wall_clock=wall_clock)
    eng.process(walk("A", start=T0, seconds=60), partition=0)
    eng.state(1)  # assigned, nothing read yet
    assert [(w.venue, w.partition) for w in eng.tick(backlogged={1}).watermarks] == []
    assert [(w.venue, w.partition) for w in eng.tick().watermarks] == [("*", 1)]


@pytest.mark.parametrize("batch", [1, 7, 333, None])
def test_results_do_not_depend_on_batching(batch: int | None) -> None:
    tape = crash_market(seed=2)
    assert rows(run(tape, batch=batch)) == rows(run(tape))


def test_snapshot_and_restore_continue_exactly() -> None:
    tape = crash_market(seed=1)
    whole = run(tape, batch=500)
    first = Surveillance(wall_clock=wall_clock)
    out = EngineOutput()
    cut = next(k for k, t in enumerate(tape) if t.ts > T0 + 590)  # type: ignore[operator]
    for i in range(0, cut, 500):
        out.extend(first.process(tape[i:min(i + 500, cut)], next_offset=i))
    blob = first.snapshot(0)
    second = Surveillance(wall_clock=wall_clock)
    second.restore(0, blob)
    for i in range(cut, len(tape), 500):
        out.extend(second.process(tape[i:i + 500]))
    out.extend(second.flush())
    assert rows(out) == rows(whole)
    assert [a.alert_id for a in out.alerts] == [a.alert_id for a in whole.alerts]


def iso_ts(ts: float) -> str:
    from streams.contracts import iso

    return iso(ts)


def quiet_night(gap_s: float = 7200.0) -> list[Trade]:
    """The crash market with a quiet spell of ``gap_s`` after its first 300 s (a venue closed
    overnight, a thin market): nothing trades, then everything resumes, the crash included."""
    return [t if float(t.ts) < T0 + 300 else  # type: ignore[arg-type]
            msgspec.structs.replace(t, ts=float(t.ts) + gap_s)  # type: ignore[arg-type]
            for t in crash_market()]


@pytest.mark.parametrize("gap_s", [600.0, 7200.0, 3 * 86400.0])
def test_a_market_that_resumes_after_a_quiet_spell_is_judged_not_dead_lettered(
        gap_s: float) -> None:
    """A quiet spell longer than ``max_future_s`` is a time jump the next trades confirm: every
    trade after it is judged (they all went to the dead-letter topic as ``future_ts`` before),
    the crash halts, and the batching changes nothing."""
    tape = quiet_night(gap_s)
    outs = [run(tape, batch=b) for b in (None, 500, 7)]
    for out in outs:
        assert out.rejected == []
        assert ("PAUSED", "VELOCITY") in [(h.state, h.reason) for h in out.halts]
        assert min(h.ts for h in out.halts) > iso_ts(T0 + 300 + gap_s)
    assert rows(outs[0]) == rows(outs[1]) == rows(outs[2])
    assert [a.alert_id for a in outs[0].alerts] == [a.alert_id for a in outs[2].alerts]


def test_scattered_bad_timestamps_confirm_nothing_and_change_no_halt() -> None:
    tape = crash_market()
    base = run(tape)
    rogues = [msgspec.structs.replace(tape[40 + k], ts=4_102_444_800.0 + k * 10 * 86400.0,
                                      trade_id=f"rogue-{k}") for k in range(3)]
    hostile = tape[:100] + rogues + tape[100:]
    out = run(hostile, batch=7)
    assert rows(out) == rows(base)
    assert [r.reason.split(":")[0] for r in out.rejected] == ["future_ts"] * 3


def test_a_jump_the_input_never_confirms_is_dead_lettered_at_its_end() -> None:
    tape = walk("A", start=T0, seconds=100)
    late_pair = [msgspec.structs.replace(t, ts=float(t.ts) + 3600, trade_id=f"x{k}")  # type: ignore[arg-type]
                 for k, t in enumerate(tape[-2:])]
    out = run(tape + late_pair)
    assert [r.reason.split(":")[0] for r in out.rejected] == ["future_ts", "future_ts"]
    assert all("input ended" in r.reason for r in out.rejected)


def test_a_repeated_trade_cannot_confirm_a_jump_by_itself() -> None:
    tape = walk("A", start=T0, seconds=100)
    rogue = msgspec.structs.replace(tape[-1], ts=float(tape[-1].ts) + 3600,  # type: ignore[arg-type]
                                    trade_id="again")
    out = run(tape + [rogue] * 5 + walk("A", start=T0 + 100, seconds=10, seed=1))
    assert [r.reason.split(":")[0] for r in out.rejected] == ["future_ts"]


def test_a_one_instrument_venue_resumes_after_an_hour() -> None:
    before = walk("A", start=T0, seconds=100)
    after = walk("A", start=T0 + 3700, seconds=10, seed=1)  # 100 trades, an hour later
    outs = [run(before + after, batch=b) for b in (None, 3)]
    for out in outs:
        assert out.rejected == []
        assert sum(s.trades for s in out.summaries if hasattr(s, "trades")) == 1100


def test_a_burst_of_one_instruments_bad_timestamps_does_not_move_a_busy_venue() -> None:
    tape = crash_market()
    base = run(tape)
    one = [t for t in tape[:100] if t.instrument == tape[40].instrument][:10]
    burst = [msgspec.structs.replace(t, ts=float(tape[40].ts) + 86_400 + k,  # type: ignore[arg-type]
                                     trade_id=f"burst-{k}") for k, t in enumerate(one)]
    assert len(burst) == 10
    out = run(tape[:100] + burst + tape[100:], batch=7)
    assert rows(out) == rows(base)
    assert [r.reason.split(":")[0] for r in out.rejected] == ["future_ts"] * 10
