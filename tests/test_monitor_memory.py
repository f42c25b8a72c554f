"""MarketMonitor memory: footprint per instrument, checkpoint (pickle) size, restore equivalence.

The engine keeps one monitor per (venue, instrument) under a memory budget and checkpoints them
(pickle) every few seconds, so a monitor must be small in memory and on the wire, must not grow
with hours of trading, and a restored monitor must continue exactly as the original would have.
Making it small must not change a single output: :data:`GOLDEN` holds digests of what the
previous (uncompressed, deque-based) implementation emitted for a set of tapes.

Footprints are measured two ways: :func:`deep_size`, a ``sys.getsizeof`` walk over everything the
monitor references (each object once, so a string shared by several fields counts once; its
configuration, shared by every monitor of a partition, and the interpreter's singletons are left
out), and :func:`traced_size`, what ``tracemalloc`` sees still allocated once a monitor has been
built from fresh trade objects (as decoded from Kafka). :func:`pickle_size` is the checkpoint of
the monitor alone, its configuration included.
"""

from __future__ import annotations

import array
import dataclasses
import gc
import hashlib
import math
import pickle
import random
import sys
import tracemalloc
import types
from collections import deque
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import pytest

from detectors.base import TradeColumns
from detectors.breaker import PAUSED, BreakerConfig
from detectors.market import MarketConfig, MarketMonitor, MonitorOutput, _Bars, _Trades
from replay.synthetic import DEFAULT_INSTRUMENTS, Episode, FeedSpec, generate

__all__: list[str] = []

T0 = 1_700_000_000.0
KB = 1024
#: One configuration for every monitor, as a partition of the engine shares its own.
CONFIG = MarketConfig()
Row = tuple[float, str, float, float, str, str]
_SKIP = (type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType,
         types.MethodType, type(None), bool)


# ------------------------------------------------------------------------------ measuring
def _shared(o: object) -> bool:
    """Objects every Python process holds once (no monitor adds them): ``None``, booleans, the
    cached small ints and the empty str, bytes and tuple."""
    return (isinstance(o, _SKIP) or (isinstance(o, int) and -5 <= o <= 256)
            or (type(o) in (str, bytes, tuple) and not o))


def deep_size(obj: object, exclude: tuple[object, ...] = ()) -> int:
    """Bytes of ``obj`` and everything it references, each object counted once.

    Walks containers, ``__dict__`` and ``__slots__`` (of every class in the MRO); classes,
    modules, functions and the process-wide singletons (:func:`_shared`) are not counted, nor
    anything reachable from ``exclude``.
    """
    seen: set[int] = set()
    if exclude:
        _walk(exclude, seen)
    return _walk(obj, seen)


def _walk(obj: object, seen: set[int]) -> int:
    total = 0
    stack = [obj]
    while stack:
        o = stack.pop()
        if id(o) in seen or _shared(o):
            continue
        seen.add(id(o))
        total += sys.getsizeof(o)
        if isinstance(o, (str, bytes, bytearray, int, float, array.array)):
            continue
        if isinstance(o, dict):
            stack += o.keys()
            stack += o.values()
        elif isinstance(o, (list, tuple, set, frozenset, deque)):
            stack += o
        else:
            d = getattr(o, "__dict__", None)
            if d is not None:
                stack.append(d)
            for cls in type(o).__mro__:
                for name in cls.__dict__.get("__slots__", ()):
                    if name not in ("__dict__", "__weakref__") and hasattr(o, name):
                        stack.append(getattr(o, name))
    return total


def monitor_size(m: MarketMonitor) -> int:
    """Deep size of one monitor without its configuration (shared by the partition's monitors)."""
    return deep_size(m, exclude=(m.config,))


def pickle_size(obj: object) -> int:
    return len(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))


def traced_size(build: Callable[[], MarketMonitor]) -> tuple[MarketMonitor, int]:
    """The monitor ``build()`` returns and the bytes it keeps allocated (``tracemalloc``, after
    a full collection, which also empties the interpreter's free lists)."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        monitor = build()
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    return monitor, after - before


# ------------------------------------------------------------------------------ tapes
def market(rate: float, seconds: float, *, seed: int = 0, batch_s: float = 1.0,
           moves: tuple[tuple[float, float, float], ...] = (), agents: int = 60,
           start: float = T0) -> Iterator[TradeColumns]:
    """A synthetic instrument in batches of ``batch_s`` seconds, built from fresh objects (as
    decoded from Kafka): Poisson arrivals at ``rate``/s, a random walk on a 0.001 tick, ids like
    ``default-0-0000012345``, ``agents`` agents. ``moves`` are ``(at_s, over_s, move)`` ramps
    (−0.3 = −30%); during one, ``dumper`` sells (``pumper`` buys) every trade."""
    rng = random.Random(seed)
    t, level, k = start, 2.45, 0
    step = 0.0006 / math.sqrt(rate)
    while t < start + seconds:
        stop = min(t + batch_s, start + seconds)
        rows: list[Row] = []
        while True:
            t += rng.expovariate(rate)
            if t >= stop:
                break
            level *= math.exp(rng.gauss(0.0, step))
            factor, mover = 1.0, ""
            for at, over, move in moves:
                x = (t - start - at) / over
                factor *= 1.0 + move * min(max(x, 0.0), 1.0)
                if 0.0 <= x < 1.0:
                    mover = "dumper" if move < 0 else "pumper"
            buyer, seller = rng.randrange(agents), rng.randrange(agents)
            rows.append((round(t, 6), f"default-{seed}-{k:010d}",
                         round(max(round(level * factor / 0.001) * 0.001, 0.001), 6),
                         round(rng.lognormvariate(1.0, 0.8), 2) + 0.01,
                         "pumper" if mover == "pumper" else f"agent-{buyer:04d}",
                         "dumper" if mover == "dumper" else f"agent-{seller:04d}"))
            k += 1
        t = stop
        yield TradeColumns.from_rows("default", "GPU-H100-1H", rows)


def fed(rate: float, seconds: float, *, config: MarketConfig = CONFIG,
        **kw: Any) -> MarketMonitor:
    m = MarketMonitor("default", "GPU-H100-1H", config)
    for cols in market(rate, seconds, **kw):
        m.update(cols)
    return m


def newcomer() -> MarketMonitor:
    """An instrument that has traded three times (in three seconds)."""
    m = MarketMonitor("default", "GPU-H100-1H", CONFIG)
    m.update(TradeColumns.from_rows("default", "GPU-H100-1H", [
        (T0 + i, f"default-0-{i:010d}", 2.45 + 0.001 * i, 1.5, f"agent-{i:04d}",
         f"agent-{i + 7:04d}") for i in range(3)]))
    return m


def paused() -> MarketMonitor:
    """Warm for 10 minutes at 20 trades/s, then −15% in 20 s: paused (VELOCITY)."""
    return fed(20.0, 640.0, seed=3, moves=((600.0, 20.0, -0.15),))


def concat(parts: Iterator[TradeColumns] | list[TradeColumns]) -> TradeColumns:
    rows = [r for c in parts for r in zip(c.ts, c.trade_id, c.price, c.qty, c.buyer, c.seller,
                                          strict=True)]
    return TradeColumns.from_rows("default", "GPU-H100-1H", rows)


def odd_tape(seed: int, n: int = 3000) -> TradeColumns:
    """Everything unusual at once: gaps long enough to restart the instrument, late trades,
    repeated timestamps, stray prints, steep ramps, unrounded prices and quantities, and ids and
    agents with NUL, \\x01, non-ASCII, lone surrogates and hundreds of characters."""
    rng = random.Random(seed)
    agents = [f"a{i}" for i in range(7)] + ["ünï", "nul\x00agent", "\x01x\x01\x02", "\ud800x",
                                              "x" * 300]
    rows: list[Row] = []
    t, p = T0, 2.0
    while len(rows) < n:
        r = rng.random()
        if r < 0.002:
            t += rng.choice([400.0, 5000.0, 100.0])
        elif r < 0.01:
            t -= rng.uniform(0.0, 3.0)
        elif r >= 0.05:
            t += rng.expovariate(5.0)
        if rng.random() < 0.005:
            steps, move = rng.randint(5, 150), rng.choice([-0.4, -0.15, -0.08, 0.1, 0.3, 2.0])
            for j in range(steps):
                t += rng.expovariate(5.0)
                rows.append((t, f"r{len(rows)}-{j}", p * (1 + move * (j + 1) / steps),
                             float(rng.randint(1, 9)), rng.choice(agents), rng.choice(agents)))
            p *= 1 + move
            continue
        p *= math.exp(rng.gauss(0.0, 0.002))
        price = p * rng.choice([0.5, 3.0]) if rng.random() < 0.003 else p
        tid = f"id{len(rows)}" if rng.random() < 0.9 else rng.choice(["\x00", "é\x01", "\ud801"])
        rows.append((round(t, 6) if rng.random() < 0.9 else t, tid + str(len(rows)), price,
                     rng.choice([1.0, 2.5, round(rng.uniform(0.01, 50.0), 2) + 0.01]),
                     rng.choice(agents), rng.choice(agents)))
    return TradeColumns.from_rows("v", "ODD", rows)


#: Small windows, so that pruning, blocks and the limit state all happen within a short tape.
SMALL = MarketConfig(warmup_s=10, warmup_returns=5, recent_trades=37, evidence_trades=2,
                     velocity_window_s=5, idle_reset_s=1800.0,
                     breaker=BreakerConfig(limit_state_s=3, ludp_pause_s=20, velocity_pause_s=10,
                                           spike_halt_s=30))


def synthetic(seed: int, instrument: str) -> TradeColumns:
    """One instrument of the spine's generator, with a pause, a halt, a spike and a LUDP."""
    gpu, kwh, _, bw = (i.name for i in DEFAULT_INSTRUMENTS)
    spec = FeedSpec(seed=seed, rate=4.0, episodes=(
        Episode(instrument=gpu, start_s=200.0, depth=-0.30),
        Episode(instrument=gpu, start_s=950.0, depth=-0.15),
        Episode(instrument=bw, start_s=400.0, depth=2.0, ramp_s=10.0),
        Episode(instrument=kwh, start_s=300.0, depth=-0.12, ramp_s=180.0, hold_s=60.0)))
    rows = [(t.ts, t.trade_id, t.price, t.qty, t.buyer, t.seller)
            for t in generate(spec, start=T0, duration_s=1300) if t.instrument == instrument]
    return TradeColumns.from_rows("default", instrument, rows)  # type: ignore[arg-type]


TAPES: dict[str, Callable[[], tuple[TradeColumns, MarketConfig]]] = {
    "crash-and-spike": lambda: (concat(market(20.0, 1500.0, seed=11, moves=(
        (600.0, 20.0, -0.30), (1100.0, 10.0, 1.0)))), CONFIG),
    "slow-decline": lambda: (concat(market(10.0, 1200.0, seed=12, moves=(
        (500.0, 200.0, -0.15),))), CONFIG),
    "busy-crash": lambda: (concat(market(60.0, 900.0, seed=13, moves=(
        (600.0, 20.0, -0.35),))), CONFIG),
    **{f"synthetic-{i.name}": partial(lambda name: (synthetic(1, name), CONFIG), i.name)
       for i in DEFAULT_INSTRUMENTS},
    "odd-small": lambda: (odd_tape(5), SMALL),
    "odd-default": lambda: (odd_tape(6, 6000), CONFIG),
}

#: sha256 of :func:`digest` of each tape's output, as the previous implementation (the deques of
#: ``_Bar`` objects and of trade tuples) emitted it.
GOLDEN = {
    "crash-and-spike": "2eeaa2393cc3f86d37652501304c51e293665530c09bf5fda4369dcafb82ee68",
    "slow-decline": "8001e8ea752d43d52bb40929bbea75dc438b5749a043af790b0d974bf0d4c15c",
    "busy-crash": "7db4e86d741ffa80e38222e0fac0e8e32fc50fb56f12466afa1c4d941c196ce0",
    "synthetic-GPU-H100-1H": "143ffbc238c7effdcaee8a34125401462ded3428fd793183369832c26d4b12dd",
    "synthetic-KWH-SA-GRID": "66ae6d7ca2a3f840fd595335036a74733523b579114ca7e93f6b9ab857f194af",
    "synthetic-STORAGE-TB-MO": "be9f22765c534a6fb5a94e24da32bd4d6c50c4c30c98d023c5500ce1e891e3c0",
    "synthetic-BW-10G-1H": "ece3002cf7838e6017e47d95abccff2eae0fc64a105af8b153dc28dc12e5d560",
    "odd-small": "ad0f614eff3fc2d790334978222e6b4d08950fdfecc4c9420e6ab9f9e7863ccc",
    "odd-default": "29790d2d11ffcb5b9e2b5bc30dc7a114692f3783310bace05e8f1b6fafe5eaa2",
}


def run(cols: TradeColumns, config: MarketConfig, cuts: list[int] | None = None, *,
        repickle: bool = False) -> MonitorOutput:
    """The monitor's output for ``cols`` fed in pieces (cut at ``cuts``), pickled and restored
    between pieces if ``repickle``, flushed at the end."""
    m = MarketMonitor(cols.venue, cols.instrument, config)
    out = MonitorOutput()
    bounds = [0, *sorted(set(cuts or [])), len(cols)]
    for lo, hi in zip(bounds, bounds[1:], strict=False):
        out.extend(m.update(cols.slice(lo, hi)))
        if repickle:
            m = pickle.loads(pickle.dumps(m, protocol=pickle.HIGHEST_PROTOCOL))
    out.extend(m.flush())
    return out


def digest(out: MonitorOutput) -> str:
    """Every field of every finding, transition and bar, except numbers that a different libm
    could round differently (thresholds derived from the volatility)."""
    keep = ("trigger", "move_pct", "threshold_pct", "reference_price", "window_start",
            "window_end", "price_first", "price_last", "trades_in_window", "trade_ids",
            "trigger_trade_id", "aggressive_volume", "price_impact_pct")
    findings = [(f.kind, f.ts, f.score, f.venue, f.instrument, f.agents, f.summary, f.key,
                 [(k, f.evidence[k]) for k in keep]) for f in out.findings]
    transitions = [(t.ts, t.seq, t.state, t.reason, t.resume_at, t.reference_price, t.alert_ids)
                   for t in out.transitions]
    return hashlib.sha256(repr((findings, transitions, out.bars)).encode(
        "utf-8", "surrogatepass")).hexdigest()


def everything(out: MonitorOutput) -> str:
    return repr((out.findings, out.transitions, out.bars))


def cuts_for(n: int, seed: int) -> list[int]:
    """Irregular batch boundaries: some big batches, then a stretch of one-trade batches."""
    rng = random.Random(seed)
    mid = n // 2
    return sorted({*rng.sample(range(1, n), min(n - 1, 40)), *range(mid, min(n, mid + 300))})


# ------------------------------------------------------------------------------ outputs
@pytest.mark.parametrize("name", list(TAPES))
def test_output_is_what_the_previous_implementation_emitted(name: str) -> None:
    """With the checks it had (no dynamic breaker, episodes or cold bands, which came later)."""
    cols, config = TAPES[name]()
    config = dataclasses.replace(config, dynamic_floor=math.inf, escalate_after=0,
                                 cold_band=math.inf)
    out = run(cols, config, cuts_for(len(cols), 1))
    if name != "synthetic-STORAGE-TB-MO":  # (the calm one)
        assert out.transitions, "the tape must trip the breaker"
    assert digest(out) == GOLDEN[name]


@pytest.mark.parametrize("name", list(TAPES))
def test_restored_monitor_continues_exactly_as_the_original(name: str) -> None:
    """Half a tape, pickle and unpickle, the rest: the same findings, transitions and bars as an
    uninterrupted monitor (also when checkpointed after every batch of an irregular cut)."""
    cols, config = TAPES[name]()
    whole = run(cols, config)
    assert everything(run(cols, config, [len(cols) // 2], repickle=True)) == everything(whole)
    cuts = cuts_for(len(cols), 2)[::3]
    assert everything(run(cols, config, cuts, repickle=True)) == everything(whole)


def test_a_fresh_monitor_pickles() -> None:
    m = pickle.loads(pickle.dumps(MarketMonitor("v", "GPU", CONFIG)))
    cols, _ = TAPES["crash-and-spike"]()
    assert everything(m.update(cols)) == everything(MarketMonitor("v", "GPU", CONFIG).update(cols))


# ------------------------------------------------------------------------------ footprints
def _peak(rate: float, seconds: float, batch_s: float, last_s: float = 300.0,
          **kw: Any) -> tuple[MarketMonitor, int, int]:
    """A monitor after ``seconds`` of trading and its largest deep and pickle sizes over the
    last ``last_s`` seconds (measured after every batch: the size breathes as blocks fill)."""
    m = MarketMonitor("default", "GPU-H100-1H", CONFIG)
    deep = pickled = 0
    for cols in market(rate, seconds, batch_s=batch_s, **kw):
        m.update(cols)
        if m.clock >= T0 + seconds - last_s:
            deep, pickled = max(deep, monitor_size(m)), max(pickled, pickle_size(m))
    return m, deep, pickled


@pytest.mark.parametrize("rate", [5.0, 50.0])
@pytest.mark.parametrize("batch_s", [1.0, 10.0])
def test_an_hour_at_a_normal_rate_fits_in_20_kb(rate: float, batch_s: float) -> None:
    m, deep, pickled = _peak(rate, 3600.0, batch_s, seed=int(rate))
    assert m.ready
    # busy: the whole recent_trades window is citable; quiet: only the last ~30 s are kept
    assert (len(m.recent) == 512) if rate == 50.0 else (150 <= len(m.recent) < 300)
    assert deep <= 20 * KB, deep
    assert pickled <= 20 * KB, pickled


def test_a_paused_instrument_fits_in_20_kb() -> None:
    m = paused()
    assert m.breaker.state == PAUSED
    assert monitor_size(m) <= 20 * KB
    assert pickle_size(m) <= 20 * KB


def test_a_newcomer_costs_at_most_2_kb() -> None:
    m = newcomer()
    assert monitor_size(m) <= 2 * KB
    assert pickle_size(m) <= 2 * KB


def test_what_tracemalloc_sees_agrees() -> None:
    """Built from fresh trade objects, the monitor keeps about what :func:`deep_size` counts."""
    m, traced = traced_size(lambda: fed(50.0, 900.0, seed=4))  # steady state after 5 minutes
    assert traced <= 20 * KB
    assert traced == pytest.approx(monitor_size(m), rel=0.15)


def test_memory_does_not_grow_with_hours_of_trading() -> None:
    m = MarketMonitor("default", "GPU-H100-1H", CONFIG)
    peaks: dict[int, list[int]] = {}
    for cols in market(50.0, 3 * 3600.0, seed=7, batch_s=2.0):
        m.update(cols)
        hour, into = divmod(m.clock - T0, 3600.0)
        if into >= 3300.0:  # the last 5 minutes of every hour
            peaks.setdefault(int(hour), []).append(monitor_size(m))
    highs = [max(v) for v in peaks.values()]
    assert len(highs) == 3
    assert max(highs) <= 1.05 * min(highs), highs
    assert pickle_size(m) <= 20 * KB


# ------------------------------------------------------------------------------ the parts
def test_bar_ring_behaves_as_a_deque() -> None:
    """Appends (the oldest going when full), pops, clears and velocity windows against a deque,
    with seconds and counts that outgrow the compact arrays."""
    rng = random.Random(3)
    for maxlen in (1, 3, 301):
        ring, model = _Bars(), deque[tuple[int, float, int, float, float]](maxlen=maxlen)
        sec, start = rng.randrange(-10**6, 10**9), -10**20
        for _ in range(4000):
            op = rng.random()
            if op < 0.7:
                sec += rng.choice([0, 1, 1, 1, 2, 7, 70_000, 10**10, 10**19])
                bar = (sec, rng.uniform(0.0, 1e3), rng.choice([1, 5, 300, 70_000, 2**40, 2**70]),
                       rng.uniform(0.0, 10.0), rng.uniform(0.0, 10.0))
                ring.append(*bar, maxlen)
                model.append(bar)
            elif op < 0.85 and model:
                assert ring.popleft() == model.popleft()[1:3]
            elif op < 0.86:
                ring.clear()
                model.clear()
            else:
                start = max(start, sec - rng.randrange(0, 40))
                hi, lo = -math.inf, math.inf
                for x in reversed(model):
                    if x[0] < start:
                        break
                    hi, lo = max(hi, x[3]), min(lo, x[4])
                assert ring.window(start) == (hi, lo)
            assert len(ring) == len(model)
            if model:
                assert (ring.first(), ring.psum[0], ring.n[0]) == model[0][:3]
            assert math.fsum(ring.psum) == math.fsum(x[1] for x in model)
            assert sum(ring.n) == sum(x[2] for x in model)
        assert pickle.loads(pickle.dumps(ring)).__getstate__() == ring.__getstate__()


@pytest.mark.parametrize("block", [1, 3, 48])
def test_trade_store_keeps_the_newest_trades_it_may_need(block: int,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """What the store keeps is always the newest part of the trades it was given, and never less
    than an alert could cite: the last ``keep``, those since ``need`` and the one before."""
    monkeypatch.setattr("detectors.market_store._BLOCK", block)
    rng = random.Random(block)
    names = ["a", "b", "ünï", "nul\x00x", "\x01\x02", "\ud800", "", "z" * 400]
    store, model, clock, cap, keep = _Trades(), list[Row](), T0, 97, rng.choice([1, 5, 21])
    need = -math.inf  # the earliest window start still possible: it never goes back
    for step in range(600):
        k = rng.choice([1, 1, 2, 5, 60])
        rows: list[Row] = []
        for j in range(k):
            clock += rng.choice([0.0, 0.001, 0.5, 3.0])
            rows.append((clock, f"t{step}-{j}" + rng.choice(names), rng.uniform(1.0, 3.0),
                         rng.uniform(0.01, 9.0), rng.choice(names), rng.choice(names)))
        cols = TradeColumns.from_rows("v", "I", rows)
        store.size = min(store.size + k, cap)
        store.add([r[0] for r in rows], 0, cols, 0, k)
        model += rows
        need = max(need, clock - rng.uniform(0.0, 30.0))
        if rng.random() < 0.3:
            store.prune(need, keep)
        if rng.random() < 0.2:
            store = pickle.loads(pickle.dumps(store))
        kept = store.rows()
        assert kept == model[len(model) - len(kept):]
        window = model[-store.size:]  # what the plain deque would hold
        first = next((i for i, r in enumerate(window) if r[0] >= need), len(window))
        # needed: the last `keep`, and those from `first` (a window start) on with the one before
        assert len(kept) >= min(len(window), max(keep, len(window) - first + 1))
