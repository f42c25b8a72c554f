"""Property tests: streaming results do not depend on how the tape is cut into batches.

DESIGN §1 promises that offline (backtest) and live runs give identical alerts and halts. Live
batches are cut by timing (``stream.take(n, within=…)``), so the engine's output must be a
function of the tape alone: one batch, many random batches, a monitor pickled and restored
mid-stream — all the same. The tapes are synthetic markets with planted crashes, spikes and slow
declines, so that halts really happen in every example.
"""

from __future__ import annotations

import pickle
import random
from functools import cache

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from detectors.base import TradeColumns
from detectors.market import MarketMonitor, MonitorOutput
from replay.synthetic import DEFAULT_INSTRUMENTS, Episode, FeedSpec, generate
from streams.contracts import Trade
from streams.pipeline import EngineOutput, Surveillance

__all__: list[str] = []

T0 = 1_700_000_000.0
SEEDS = (0, 1, 2)


def examples(n: int) -> settings:
    """Modest, reproducible example counts (the whole file runs in well under a minute)."""
    return settings(max_examples=n, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow])


def wall_clock() -> float:  # module-level so an engine pickles; later than every tape
    return 1_800_000_000.0


def spec(seed: int) -> FeedSpec:
    gpu, kwh, _, bw = (i.name for i in DEFAULT_INSTRUMENTS)
    return FeedSpec(seed=seed, rate=4.0, episodes=(
        Episode(instrument=gpu, start_s=200.0 + 40 * seed, depth=-0.30),  # pause, then halt
        Episode(instrument=gpu, start_s=950.0, depth=-0.15),  # again, after the resumption
        Episode(instrument=bw, start_s=400.0 + 20 * seed, depth=2.0, ramp_s=10.0),  # spike
        Episode(instrument=kwh, start_s=300.0, depth=-0.12, ramp_s=180.0, hold_s=60.0),  # LUDP
    ))


@cache
def tape(seed: int) -> tuple[Trade, ...]:
    return tuple(generate(spec(seed), start=T0, duration_s=1300))


def run(trades: tuple[Trade, ...] | list[Trade], cuts: list[int] | None = None,
        engine: Surveillance | None = None) -> EngineOutput:
    engine = engine or Surveillance(wall_clock=wall_clock)
    out = EngineOutput()
    bounds = [0, *sorted(set(cuts or [])), len(trades)]
    for lo, hi in zip(bounds, bounds[1:], strict=False):
        out.extend(engine.process(trades[lo:hi]))  # type: ignore[arg-type]
    out.extend(engine.flush())
    return out


def decisions(out: EngineOutput) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
    """What halts and pauses a market: alert identity and score, halt timing and state."""
    alerts = sorted((a.alert_id, a.kind, a.ts, a.score, a.instrument) for a in out.alerts)
    halts = sorted((h.venue, h.instrument, h.seq, h.ts, h.state, h.reason, str(h.resume_at))
                   for h in out.halts)
    return alerts, halts


def everything(out: EngineOutput) -> tuple[list[object], ...]:
    """Every field of every message except ``emitted_at`` (the wall clock)."""
    alerts = sorted(repr(a) for a in out.alerts)
    halts = sorted((h.venue, h.instrument, h.seq, h.ts, h.state, h.reason, str(h.resume_at),
                    h.reference_price, h.band_low, h.band_high, tuple(h.alert_ids))
                   for h in out.halts)
    bars = sorted((b.venue, b.instrument, b.ts, b.open, b.high, b.low, b.close, b.volume,
                   b.notional, b.trades) for b in out.bars)
    return alerts, halts, bars  # type: ignore[return-value]


@cache
def baseline(seed: int) -> EngineOutput:
    return run(tape(seed))


def test_planted_tapes_halt_for_every_reason() -> None:
    for seed in SEEDS:
        out = baseline(seed)
        reasons = {(h.instrument, h.reason) for h in out.halts}
        assert ("GPU-H100-1H", "SPIKE") in reasons, seed
        assert ("BW-10G-1H", "SPIKE") in reasons, seed
        assert ("KWH-SA-GRID", "LUDP") in reasons, seed
        assert {a.kind for a in out.alerts} == {"flash_crash", "price_spike"}


@st.composite
def cut_points(draw: st.DrawFn, n: int) -> list[int]:
    if draw(st.booleans()):  # random split points
        return draw(st.lists(st.integers(1, n - 1), max_size=40))
    size = draw(st.integers(1, 4_000))  # fixed batch size, as a live consumer's take(n)
    return list(range(size, n, size))


@examples(25)
@given(st.sampled_from(SEEDS), st.data())
def test_batching_does_not_change_alerts_or_halts(seed: int, data: st.DataObject) -> None:
    trades = tape(seed)
    base = baseline(seed)
    assert base.halts, "planted episodes must halt something, or the property is vacuous"
    cuts = data.draw(cut_points(len(trades)), label="cuts")
    assert decisions(run(trades, cuts)) == decisions(base)


@examples(8)
@given(st.sampled_from(SEEDS), st.integers(0, 2**16), st.integers(1, 3_000))
def test_batching_does_not_change_decisions_on_a_slightly_disordered_tape(
        seed: int, shuffle_seed: int, batch: int) -> None:
    """Tapes may be slightly out of order (DESIGN §3.3): swap random neighbours."""
    trades = list(tape(seed))
    rnd = random.Random(shuffle_seed)
    for _ in range(2_000):
        i = rnd.randrange(len(trades) - 1)
        trades[i], trades[i + 1] = trades[i + 1], trades[i]
    whole = run(trades)
    assert whole.halts
    assert decisions(run(trades, list(range(batch, len(trades), batch)))) == decisions(whole)


def test_batch_size_one_gives_identical_messages() -> None:
    """Stronger than the decisions: every field (reference prices, bands, evidence) matches."""
    for seed in SEEDS:
        trades = tape(seed)
        split = run(trades, list(range(1, len(trades))))
        assert everything(split) == everything(baseline(seed)), seed


def test_batching_does_not_change_results_across_idle_eviction() -> None:
    """A instrument idle for longer than ``idle_evict_s`` must come back the same way whether
    or not a batch boundary fell inside its idle period (eviction happens only at batch ends)."""
    quiet = FeedSpec(seed=5, rate=4.0, instruments=DEFAULT_INSTRUMENTS[:1])
    busy = FeedSpec(seed=6, rate=1.0, instruments=DEFAULT_INSTRUMENTS[1:2])
    gpu = DEFAULT_INSTRUMENTS[0].name
    before = generate(quiet, start=T0, duration_s=600)
    back = generate(FeedSpec(seed=7, rate=4.0, instruments=DEFAULT_INSTRUMENTS[:1], episodes=(
        Episode(instrument=gpu, start_s=20.0, depth=-0.30),)), start=T0 + 4_800, duration_s=200)
    other = generate(busy, start=T0, duration_s=5_000)
    trades = sorted(before + back + other, key=lambda t: t.ts)  # type: ignore[arg-type, return-value]
    one = run(trades)
    many = run(trades, list(range(500, len(trades), 500)))
    assert decisions(many) == decisions(one), (
        f"one batch: {[(h.instrument, h.reason) for h in one.halts]}, "
        f"batches of 500: {[(h.instrument, h.reason) for h in many.halts]}")


@examples(8)
@given(st.integers(0, 2**32 - 1))
def test_same_seed_gives_identical_output(seed: int) -> None:
    feed = FeedSpec(seed=seed, rate=4.0, instruments=DEFAULT_INSTRUMENTS[:2], episodes=(
        Episode(instrument=DEFAULT_INSTRUMENTS[0].name, start_s=150.0, depth=-0.3),))
    a = generate(feed, start=T0, duration_s=400)
    b = generate(feed, start=T0, duration_s=400)
    assert [t.trade_id for t in a] == [t.trade_id for t in b]
    out_a, out_b = run(a), run(b)
    assert out_a.halts
    assert everything(out_a) == everything(out_b)
    assert [h.seq for h in out_a.halts] == [h.seq for h in out_b.halts]


@examples(10)
@given(st.sampled_from(SEEDS), st.floats(0.0, 1.0), st.integers(1, 2_000))
def test_engine_pickled_mid_stream_continues_identically(seed: int, where: float,
                                                         batch: int) -> None:
    trades = tape(seed)
    k = int(where * len(trades))
    engine = Surveillance(wall_clock=wall_clock)
    head = EngineOutput()
    for lo in range(0, k, batch):
        head.extend(engine.process(trades[lo:min(k, lo + batch)]))  # type: ignore[arg-type]
    clone = pickle.loads(pickle.dumps(engine))
    rest = list(range(k + batch, len(trades), batch))
    tail_original = run(trades[k:], [c - k for c in rest], engine)
    tail_clone = run(trades[k:], [c - k for c in rest], clone)
    assert everything(tail_clone) == everything(tail_original)
    assert clone.stats == engine.stats
    whole = EngineOutput()
    whole.extend(head)
    whole.extend(tail_clone)
    assert decisions(whole) == decisions(baseline(seed))


def _columns(trades: tuple[Trade, ...], instrument: str) -> TradeColumns:
    rows = [(t.ts, t.trade_id, t.price, t.qty, t.buyer, t.seller) for t in trades
            if t.instrument == instrument]
    return TradeColumns.from_rows("default", instrument, rows)  # type: ignore[arg-type]


@examples(15)
@given(st.sampled_from(SEEDS), st.sampled_from([i.name for i in DEFAULT_INSTRUMENTS]),
       st.lists(st.floats(0.0, 1.0), min_size=1, max_size=4))
def test_monitor_pickled_mid_stream_continues_identically(seed: int, instrument: str,
                                                          wheres: list[float]) -> None:
    cols = _columns(tape(seed), instrument)
    whole = MarketMonitor("default", instrument).update(cols)
    monitor = MarketMonitor("default", instrument)
    out = MonitorOutput()
    bounds = [0, *sorted(int(w * len(cols)) for w in wheres), len(cols)]
    for lo, hi in zip(bounds, bounds[1:], strict=False):
        out.extend(monitor.update(cols.slice(lo, hi)))
        monitor = pickle.loads(pickle.dumps(monitor))
    assert out.findings == whole.findings
    assert out.transitions == whole.transitions
    assert out.bars == whole.bars
