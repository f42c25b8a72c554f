"""The Surveillance engine: dedup, eviction, the global clock and contract-shaped output."""

from __future__ import annotations

import math
from datetime import datetime

import msgspec
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from replay.synthetic import Episode, FeedSpec, generate
from streams.contracts import ALERT_KINDS, HALT_REASONS, HALT_STATES, Alert, Halt, Trade, iso
from streams.dedup import RecentIds
from streams.pipeline import EngineOutput, Surveillance

__all__: list[str] = []

T0 = 1_700_000_000.0
WALL = 1_800_000_000.5


def wall_clock() -> float:
    return WALL


def walk(instrument: str, *, start: float, seconds: float, rate: float = 10.0, p0: float = 2.0,
         seed: int = 0, venue: str = "v", prefix: str | None = None, sigma: float = 0.0005,
         seller: str | None = None) -> list[Trade]:
    """Evenly spaced trades of a seeded random walk (``sigma`` per √second)."""
    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    prices = p0 * np.exp(np.cumsum(rng.normal(0.0, sigma / math.sqrt(rate), n)))
    who = rng.integers(0, 20, (n, 2))
    tag = prefix or f"{instrument}-{seed}-{start:.1f}"
    return [Trade(ts=round(start + k / rate, 6), trade_id=f"{tag}-{k}", instrument=instrument,
                  price=float(prices[k]), qty=1.0, buyer=f"a{who[k, 0]}",
                  seller=seller or f"a{who[k, 1]}", venue=venue) for k in range(n)]


def prints(instrument: str, times: list[float], price: float, tag: str,
           venue: str = "v") -> list[Trade]:
    return [Trade(ts=t, trade_id=f"{tag}-{k}", instrument=instrument, price=price, qty=1.0,
                  buyer="b", seller="dumper", venue=venue) for k, t in enumerate(times)]


def by_time(*parts: list[Trade]) -> list[Trade]:
    return sorted((t for p in parts for t in p), key=lambda t: t.ts)  # type: ignore[arg-type, return-value]


def run(trades: list[Trade], engine: Surveillance | None = None, *,
        batch: int | None = None) -> EngineOutput:
    engine = engine or Surveillance(wall_clock=wall_clock)
    out = EngineOutput()
    step = batch or max(1, len(trades))
    for start in range(0, len(trades), step):
        out.extend(engine.process(trades[start:start + step]))
    out.extend(engine.flush())
    return out


def halt_rows(out: EngineOutput) -> list[tuple[object, ...]]:
    """Every halt field except ``emitted_at`` (wall clock), in output order."""
    return [(h.venue, h.instrument, h.seq, h.ts, h.state, h.reason, h.resume_at,
             h.reference_price, h.band_low, h.band_high, tuple(h.alert_ids)) for h in out.halts]


def crash_market(seed: int = 0) -> list[Trade]:
    """Two calm instruments; ``A`` crashes −30% at +600 s (halted), ``B`` keeps trading."""
    spec = FeedSpec(seed=seed, rate=5.0, episodes=(Episode(instrument="GPU-H100-1H", start_s=600,
                                                           depth=-0.30),))
    return generate(spec, start=T0, duration_s=1500)


# ------------------------------------------------------------------------------ dedup
def test_duplicates_are_processed_once_within_and_across_batches() -> None:
    tape = walk("A", start=T0, seconds=30)
    engine = Surveillance(wall_clock=wall_clock)
    first = engine.process(tape + tape[:10])
    assert first.duplicates == 10
    second = engine.process(tape[50:] + tape[:5])
    assert second.duplicates == len(tape) - 50 + 5
    assert engine.stats.processed == len(tape)
    assert engine.stats.duplicates == 10 + len(tape) - 50 + 5
    assert engine.monitors[("v", "A")].recent[-1][1] == tape[-1].trade_id


def test_duplicated_tape_gives_the_same_alerts_and_halts() -> None:
    tape = crash_market()
    noisy = [t for k, t in enumerate(tape) for _ in range(1 + (k % 3 == 0))]  # every 3rd twice
    clean, dup = run(tape), run(noisy)
    assert clean.halts, "the planted crash should halt something"
    assert dup.duplicates == len(noisy) - len(tape)
    assert halt_rows(dup) == halt_rows(clean)
    assert dup.alerts == clean.alerts


def test_dedup_key_is_venue_and_trade_id() -> None:
    engine = Surveillance(wall_clock=wall_clock)
    a = Trade(ts=T0, trade_id="t1", instrument="X", price=1.0, qty=1.0, buyer="b", seller="s",
              venue="v1")
    b = Trade(ts=T0, trade_id="t1", instrument="X", price=1.0, qty=1.0, buyer="b", seller="s",
              venue="v2")
    out = engine.process([a, b, a])
    assert out.duplicates == 1
    assert engine.stats.processed == 2
    assert set(engine.monitors) == {("v1", "X"), ("v2", "X")}


def test_recent_ids_is_bounded_by_count_and_by_event_time() -> None:
    seen = RecentIds(horizon_s=1e9, capacity=100)
    for k in range(10_000):
        assert seen.add("v", str(k), float(k))
        assert len(seen) <= 100
    assert not any(seen.add("v", str(k), float(k)) for k in range(9_900, 10_000))
    assert seen.add("v", "0", 0.0), "a key older than the capacity is forgotten"
    timed = RecentIds(horizon_s=60.0, capacity=1_000)
    for k in range(200):
        timed.add("v", str(k), float(k))
    assert len(timed) <= 62
    assert not timed.add("v", "199", 199.0)


@settings(max_examples=150, deadline=None, derandomize=True, database=None)
@given(st.integers(1, 8), st.lists(st.integers(0, 30), max_size=200))
def test_recent_ids_against_a_model(capacity: int, keys: list[int]) -> None:
    seen = RecentIds(horizon_s=1e9, capacity=capacity)
    fresh: list[int] = []  # keys whose add returned True, in order
    for k in keys:
        added = seen.add("v", str(k), 0.0)
        if k in fresh[-capacity:]:
            assert not added, "forgot one of the last `capacity` keys"
        if k not in fresh:
            assert added, "a never-seen key was reported as a duplicate"
        if added:
            fresh.append(k)
        assert len(seen) <= capacity


def test_engine_dedup_memory_is_bounded() -> None:
    engine = Surveillance(dedup_capacity=1_000, wall_clock=wall_clock)
    tape = walk("A", start=T0, seconds=1_000)  # 10,000 trades
    for start in range(0, len(tape), 500):
        engine.process(tape[start:start + 500])
        assert len(engine.seen) <= 1_000
    again = engine.process(tape[-1_000:])
    # none is judged twice: within the allowed lateness they are duplicates, older ones late
    assert again.duplicates + len(again.rejected) == 1_000
    assert {r.reason.split(":")[0] for r in again.rejected} == {"late"}
    assert engine.stats.processed == len(tape)


# ------------------------------------------------------------------------------ eviction
def test_idle_instruments_are_evicted_after_idle_evict_s_of_event_time() -> None:
    engine = Surveillance(idle_evict_s=100.0, wall_clock=wall_clock)
    a = walk("A", start=T0, seconds=10)
    b = walk("B", start=T0, seconds=300, rate=1.0)
    out = run(by_time(a, b), engine, batch=7)
    assert ("v", "A") not in engine.monitors
    assert ("v", "B") in engine.monitors
    assert engine.stats.evicted == 1
    assert {bar.instrument for bar in out.bars} == {"A", "B"}
    assert sum(bar.trades for bar in out.bars if bar.instrument == "A") == len(a), \
        "the evicted monitor's open bar is flushed, not lost"
    # not evicted too early: A was last seen at T0+9.9; nothing evicted before T0+109.9
    early = Surveillance(idle_evict_s=100.0, wall_clock=wall_clock)
    run(by_time(a, [t for t in b if t.ts < T0 + 105]), early, batch=7)
    assert ("v", "A") in early.monitors


def test_instrument_cap_bounds_memory() -> None:
    cap = 50
    engine = Surveillance(max_instruments=cap, wall_clock=wall_clock)
    tape = by_time(*(walk(f"I{i:04d}", start=T0 + i, seconds=2, rate=2.0) for i in range(1_000)))
    for start in range(0, len(tape), 100):
        engine.process(tape[start:start + 100])
        assert len(engine.monitors) <= cap
    assert engine.stats.evicted >= 1_000 - cap
    one = Surveillance(max_instruments=cap, wall_clock=wall_clock)
    one.process(tape)  # one batch with 1,000 distinct instruments
    assert len(one.monitors) <= cap


def test_halted_instrument_is_never_evicted_and_resumes_by_the_global_clock() -> None:
    engine = Surveillance(max_instruments=3, idle_evict_s=60.0, wall_clock=wall_clock)
    a = walk("A", start=T0, seconds=600) + prints("A", [T0 + 600.0, T0 + 600.1], 1.0, "crash")
    out = engine.process(a)
    assert [(h.state, h.reason) for h in out.halts] == [("HALTED", "SPIKE")]
    resume_at = out.halts[0].resume_at
    assert resume_at == iso(T0 + 600.1 + 600.0)
    # A never trades again; 20 other instruments come and go while A is halted
    others = by_time(*(walk(f"O{i:02d}", start=T0 + 601 + 40 * i, seconds=40, rate=1.0)
                       for i in range(20)))
    halts = []
    for start in range(0, len(others), 10):
        batch = others[start:start + 10]
        res = engine.process(batch)
        halts += res.halts
        if batch[-1].ts < T0 + 1200.1:  # type: ignore[operator]
            assert ("v", "A") in engine.monitors, "a halted instrument was evicted"
            assert not res.halts
        assert len(engine.monitors) <= 3
    assert [(h.instrument, h.state, h.reason, h.ts) for h in halts] == \
        [("A", "TRADING", "RESUME", resume_at)]
    assert halts[0].alert_ids == out.halts[0].alert_ids
    assert ("v", "A") not in engine.halted
    assert ("v", "A") not in engine.monitors, "once trading again, an idle instrument can go"


def test_advance_fires_a_due_resumption_without_trades() -> None:
    engine = Surveillance(wall_clock=wall_clock)
    engine.process(walk("A", start=T0, seconds=600) + prints("A", [T0 + 600.0, T0 + 600.1], 1.7,
                                                              "drop"))
    assert ("v", "A") in engine.halted
    assert engine.advance(T0 + 650.0).halts == []
    out = engine.advance(T0 + 700.0)
    assert [(h.state, h.reason, h.ts) for h in out.halts] == \
        [("TRADING", "RESUME", iso(T0 + 660.1))]
    assert engine.halted == set()
    assert engine.advance(T0 + 800.0).halts == []


def test_resumption_by_the_global_clock_equals_resumption_by_own_trades() -> None:
    """Whether A's resumption is fired by another instrument's trade (batch boundary after it) or
    by A's own reopening trade must not matter. A is paused at 1.75 (−12.5%) and reopens at 2.0:
    the reopening trades are the new reference, so nothing else may happen."""
    a = walk("A", start=T0, seconds=600, sigma=0.0)
    a += prints("A", [round(T0 + 600.0 + k / 10, 6) for k in range(596)], 1.75, "paused")
    # velocity pause at T0+600.1 => resume at T0+660.1; A's last paused trade is at T0+659.5
    a += prints("A", [round(T0 + 660.5 + k / 10, 6) for k in range(200)], 2.0, "reopen")
    b = walk("B", start=T0 + 0.3, seconds=900, rate=1.0)
    tape = by_time(a, b)
    cut = next(k for k, t in enumerate(tape) if t.ts > T0 + 660.1)  # B's trade at T0+660.3
    assert tape[cut].instrument == "B"
    whole = run(tape)
    engine = Surveillance(wall_clock=wall_clock)
    split = EngineOutput()
    split.extend(engine.process(tape[:cut + 1]))
    split.extend(engine.process(tape[cut + 1:]))
    split.extend(engine.flush())
    expected = [("A", "PAUSED", "VELOCITY"), ("A", "TRADING", "RESUME")]
    assert [(h.instrument, h.state, h.reason) for h in whole.halts] == expected
    assert [(h.instrument, h.state, h.reason) for h in split.halts] == expected, (
        "resumption via Surveillance.advance kept the pre-resume bar in the new reference")
    assert halt_rows(split) == halt_rows(whole)


# ------------------------------------------------------------------------------ outputs
def test_halt_seq_strictly_increases_per_venue_and_instrument() -> None:
    spec = FeedSpec(seed=1, rate=5.0, episodes=(
        Episode(instrument="GPU-H100-1H", start_s=300, depth=-0.3),
        Episode(instrument="GPU-H100-1H", start_s=1000, depth=-0.15),
        Episode(instrument="BW-10G-1H", start_s=400, depth=2.0, ramp_s=10)))
    tape = generate(spec, start=T0, duration_s=1500)
    tape += generate(FeedSpec(seed=1, rate=5.0, venue="other", episodes=spec.episodes), start=T0,
                     duration_s=1500)
    tape.sort(key=lambda t: t.ts)  # type: ignore[arg-type, return-value]
    out = run(tape, batch=1_000)
    per_key: dict[tuple[str, str], list[int]] = {}
    for h in out.halts:
        per_key.setdefault((h.venue, h.instrument), []).append(h.seq)
    assert len(per_key) == 4
    for key, seqs in per_key.items():
        assert all(a < b for a, b in zip(seqs, seqs[1:], strict=False)), key
        assert len(seqs) >= 2


def test_alert_ids_are_deterministic_across_runs() -> None:
    tape = crash_market()
    first, second = run(tape), run(list(tape), batch=257)
    assert first.alerts
    assert [a.alert_id for a in first.alerts] == [a.alert_id for a in second.alerts]
    assert len({a.alert_id for a in first.alerts}) == len(first.alerts)
    other = run([msgspec.structs.replace(t, venue="elsewhere") for t in tape])
    assert {a.alert_id for a in other.alerts}.isdisjoint(a.alert_id for a in first.alerts)


def _is_iso_with_zone(value: str) -> bool:
    return datetime.fromisoformat(value).tzinfo is not None


HALT_KEYS = {"schema", "seq", "ts", "emitted_at", "venue", "instrument", "state", "reason",
             "resume_at", "reference_price", "band_low", "band_high", "alert_ids"}
ALERT_KEYS = {"schema", "alert_id", "ts", "kind", "score", "instrument", "agents", "venue",
              "detector", "summary", "evidence"}


def test_halt_and_alert_fields_follow_the_contract() -> None:
    out = run(crash_market())
    assert out.halts
    assert out.alerts
    alert_ids = {a.alert_id for a in out.alerts}
    for h in out.halts:
        assert isinstance(h, Halt)
        d = msgspec.json.decode(msgspec.json.encode(h))
        assert set(d) == HALT_KEYS
        assert d["schema"] == "halt/1"
        assert isinstance(d["seq"], int)
        assert d["seq"] >= 0
        assert _is_iso_with_zone(d["ts"])
        assert _is_iso_with_zone(d["emitted_at"])
        assert d["state"] in HALT_STATES
        assert d["reason"] in HALT_REASONS
        assert d["venue"] == "default"
        assert d["instrument"] == "GPU-H100-1H"
        assert set(d["alert_ids"]) <= alert_ids
        assert d["alert_ids"]
        if d["state"] == "TRADING":
            assert d["reason"] == "RESUME"
            assert d["resume_at"] is None
        else:
            assert _is_iso_with_zone(d["resume_at"])
            assert datetime.fromisoformat(d["resume_at"]) > datetime.fromisoformat(d["ts"])
            assert d["band_low"] < d["reference_price"] < d["band_high"]
    for a in out.alerts:
        assert isinstance(a, Alert)
        d = msgspec.json.decode(msgspec.json.encode(a))
        assert set(d) == ALERT_KEYS
        assert d["schema"] == "alert/1"
        assert d["kind"] in ALERT_KINDS
        assert 0 <= d["score"] <= 100
        assert _is_iso_with_zone(d["ts"])
        assert d["detector"] == "market/1"
        assert d["instrument"] == "GPU-H100-1H"
        assert all(isinstance(x, str) for x in d["agents"])
        assert "\n" not in d["summary"]
        assert d["evidence"]
        assert d["alert_id"]


def test_emitted_at_uses_the_injected_wall_clock_and_ts_is_event_time() -> None:
    calls: list[float] = []

    def clock() -> float:
        calls.append(WALL)
        return WALL

    out = run(crash_market(), Surveillance(wall_clock=clock))
    assert out.halts
    assert {h.emitted_at for h in out.halts} == {iso(WALL)}
    assert calls
    assert all(h.ts.startswith("2023-11-14") for h in out.halts)  # the tape's clock, not ours


def test_bars_are_one_per_instrument_second() -> None:
    tape = walk("A", start=T0, seconds=20) + walk("B", start=T0, seconds=20, seed=1)
    out = run(by_time(tape), batch=13)
    keys = [(b.instrument, b.ts) for b in out.bars]
    assert len(keys) == len(set(keys)) == 40
    assert sum(b.trades for b in out.bars) == len(tape)
    assert Surveillance(emit_bars=False, wall_clock=wall_clock).process(tape).bars == []


def test_the_largest_prices_and_quantities_the_contract_admits_cannot_stop_the_engine() -> None:
    """Two trades at 1.7e308 (finite, positive: valid before ``MAX_VALUE``) made ``math.fsum``
    overflow and raise, which stopped the worker on every restart. Now such a trade is refused
    at decoding, and a flood at the limit itself is judged like any other."""
    from streams.contracts import MAX_VALUE, decode_message

    t0 = 1_767_225_600.0
    raw = msgspec.json.encode([{"ts": t0 + i, "trade_id": f"h{i}", "instrument": "X",
                                "price": 1.7e308, "qty": 1, "buyer": "a", "seller": "b"}
                               for i in range(2)])
    ok, bad = decode_message(raw)
    assert ok == []
    assert [(b.index, b.reason) for b in bad] == [
        (i, "invalid_trade: Expected `float` <= 1e+30 - at `$.price`") for i in range(2)]
    engine = Surveillance(None)
    out = engine.process([Trade(venue="v", instrument="X", trade_id=f"m{i}", ts=t0 + i * 0.01,
                                price=MAX_VALUE * (0.5 + (i % 7) / 14), qty=MAX_VALUE,
                                buyer=f"a{i % 5}", seller=f"b{i % 3}") for i in range(3000)])
    out.extend(engine.flush())
    assert not out.rejected
    assert all(math.isfinite(s.notional) for s in out.summaries if hasattr(s, "notional"))
