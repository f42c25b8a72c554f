"""MarketMonitor on markets: calm days, crashes, spikes, slow declines, stray prints, noise, gaps.

Markets are built by :class:`Tape`: a seeded random walk of evenly spaced trades (``rate`` per
second, volatility ``sigma`` per √second) with planted moves in which one distinctive agent is on
the aggressive side of every trade.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest

from detectors.base import Finding, TradeColumns
from detectors.breaker import Transition
from detectors.market import MarketConfig, MarketMonitor, MonitorOutput

__all__: list[str] = []

T0 = 1_700_000_000.0
Row = tuple[float, str, float, float, str, str]


class Tape:
    """Seeded hand-made trades of one instrument, built segment by segment."""

    def __init__(self, seed: int = 0, *, rate: int = 10, sigma: float = 0.0005, p0: float = 2.0,
                 agents: int = 20) -> None:
        self.rng = np.random.default_rng(seed)
        self.t, self.p, self.rate, self.sigma, self.agents = T0, p0, rate, sigma, agents
        self.rows: list[Row] = []

    def _add(self, price: float, buyer: str | None = None, seller: str | None = None) -> str:
        rng = self.rng
        tid = f"t{len(self.rows):07d}"
        self.rows.append((round(self.t, 6), tid, price, float(rng.integers(1, 5)),
                          buyer or f"agent-{rng.integers(self.agents):02d}",
                          seller or f"agent-{rng.integers(self.agents):02d}"))
        self.t += 1.0 / self.rate
        return tid

    def calm(self, seconds: float, sigma: float | None = None) -> Tape:
        step = (self.sigma if sigma is None else sigma) / math.sqrt(self.rate)
        for _ in range(int(seconds * self.rate)):
            self.p *= math.exp(self.rng.normal(0.0, step))
            self._add(self.p)
        return self

    def ramp(self, seconds: float, move: float, *, buyer: str | None = None,
             seller: str | None = None) -> Tape:
        """Move the price linearly by ``move`` (−0.3 = −30%) over ``seconds``."""
        start, n = self.p, int(seconds * self.rate)
        for k in range(1, n + 1):
            self.p = start * (1 + move * k / n)
            self._add(self.p, buyer, seller)
        return self

    def prints(self, *prices: float) -> list[str]:
        """Single prints at given prices (the walk's level is unchanged); returns their ids."""
        return [self._add(p) for p in prices]

    def gap(self, seconds: float) -> Tape:
        self.t += seconds
        return self

    def elapsed(self) -> float:
        return self.t - T0

    def cols(self, rows: list[Row] | None = None) -> TradeColumns:
        return TradeColumns.from_rows("v", "GPU", self.rows if rows is None else rows)


def run(tape: Tape, config: MarketConfig | None = None) -> tuple[MarketMonitor, MonitorOutput]:
    monitor = MarketMonitor("v", "GPU", config)
    return monitor, monitor.update(tape.cols())


def states(out: MonitorOutput) -> list[tuple[str, str]]:
    return [(t.state, t.reason) for t in out.transitions]


def crash_tape(seed: int = 2) -> Tape:
    """Warm calm market, −30% in 20 s by ``dumper``, hold, partial recovery, long calm tail."""
    return Tape(seed).calm(600).ramp(20, -0.30, seller="dumper").calm(30).ramp(20, 0.4).calm(700)


def spike_tape(seed: int = 2) -> Tape:
    """Warm calm market, +200% in 10 s bought by ``pumper``, then a long calm tail."""
    return Tape(seed).calm(600).ramp(10, 2.0, buyer="pumper").calm(700)


def slow_decline_tape(seed: int = 0, sigma: float = 0.0005) -> Tape:
    """−12% over 3 minutes: too slow for the velocity check, too far for the LULD band."""
    return Tape(seed, sigma=sigma).calm(600).ramp(180, -0.12, seller="seller-x").calm(200)


# ------------------------------------------------------------------------------ calm markets
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_calm_market_gives_no_findings_and_no_transitions(seed: int) -> None:
    monitor, out = run(Tape(seed).calm(1200))
    assert monitor.ready, "the monitor never warmed up: the test would be vacuous"
    assert out.findings == []
    assert out.transitions == []
    assert monitor.breaker.trading
    assert len(out.bars) == 1199  # one per closed second; the last one is still open


@pytest.mark.parametrize("seed", [0, 1])
def test_very_noisy_instrument_is_not_halted_for_being_noisy(seed: int) -> None:
    noisy, out = run(Tape(seed, rate=5, sigma=0.003).calm(3600))  # 18,000 trades
    assert noisy.ready
    assert out.transitions == []
    assert out.findings == []
    calm, _ = run(Tape(seed, rate=5, sigma=0.0005).calm(3600))
    assert noisy.sigma > 3 * calm.sigma
    assert noisy.band > calm.band
    assert noisy.velocity > calm.velocity
    assert noisy.spike > calm.spike


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_same_slow_decline_is_judged_relative_to_volatility(seed: int) -> None:
    _, calm = run(slow_decline_tape(seed, sigma=0.0005))
    _, noisy = run(slow_decline_tape(seed, sigma=0.003))
    assert states(calm)[:1] == [("PAUSED", "LUDP")]
    assert noisy.transitions == [], "a −12% drift is ordinary for an instrument this noisy"


def test_noisy_instrument_still_pauses_on_a_fast_crash() -> None:
    tape = Tape(3, rate=5, sigma=0.003).calm(1800).ramp(20, -0.30, seller="dumper").calm(100)
    _, out = run(tape)
    assert ("PAUSED", "VELOCITY") in states(out)
    assert {f.kind for f in out.findings} == {"flash_crash"}


# ------------------------------------------------------------------------------ crashes
def test_fast_crash_pauses_then_halts_then_resumes() -> None:
    tape = crash_tape()
    crash_start, crash_end = T0 + 600, T0 + 620
    _, out = run(tape)
    assert states(out) == [("PAUSED", "VELOCITY"), ("HALTED", "SPIKE"), ("TRADING", "RESUME")]
    paused, halted, resumed = out.transitions
    assert crash_start < paused.ts < halted.ts <= crash_end
    assert paused.resume_at == pytest.approx(paused.ts + 60.0)
    assert halted.resume_at == pytest.approx(halted.ts + 600.0)
    assert resumed.ts == halted.resume_at
    assert resumed.resume_at is None
    assert paused.seq < halted.seq < resumed.seq
    assert [f.kind for f in out.findings] == ["flash_crash", "flash_crash"]
    first, second = out.findings
    assert (first.ts, second.ts) == (paused.ts, halted.ts)
    assert paused.alert_ids == (first.key,)
    assert halted.alert_ids == (first.key, second.key), "escalation links both alerts"
    assert resumed.alert_ids == halted.alert_ids
    assert first.evidence["trigger"] == "VELOCITY"
    assert second.evidence["trigger"] == "SPIKE"
    assert first.evidence["move_pct"] < -10.0
    assert second.evidence["move_pct"] < -25.0


def test_resumption_fires_at_the_first_trade_at_or_after_resume_at() -> None:
    tape = crash_tape()
    monitor = MarketMonitor("v", "GPU")
    out = monitor.update(tape.cols())
    resume_at = out.transitions[1].resume_at
    assert resume_at is not None
    monitor2 = MarketMonitor("v", "GPU")
    before = [r for r in tape.rows if r[0] < resume_at]
    after = [r for r in tape.rows if r[0] >= resume_at]
    out_before = monitor2.update(tape.cols(before))
    assert states(out_before) == [("PAUSED", "VELOCITY"), ("HALTED", "SPIKE")]
    assert monitor2.breaker.state == "HALTED"
    out_after = monitor2.update(tape.cols(after[:1]))
    assert states(out_after) == [("TRADING", "RESUME")]
    assert monitor2.breaker.trading


def test_reference_restarts_after_a_pause() -> None:
    """−15% in 5 s that stays down: a velocity pause, then the new level is the reference."""
    tape = Tape(4).calm(600).ramp(5, -0.15, seller="dumper").calm(900)
    _, out = run(tape)
    assert states(out) == [("PAUSED", "VELOCITY"), ("TRADING", "RESUME")], (
        "after resumption the reopening price must become the reference (no LUDP against the "
        "pre-crash level)")


def test_crash_evidence_has_the_documented_fields() -> None:
    tape = crash_tape()
    ids = {r[1]: r for r in tape.rows}
    _, out = run(tape)
    assert out.findings
    for f in out.findings:
        ev = f.evidence
        for key in ("trigger", "move_pct", "threshold_pct", "reference_price", "band_low",
                    "band_high", "trade_ids", "trigger_trade_id", "aggressive_volume"):
            assert key in ev, key
        assert ev["trigger"] in {"VELOCITY", "SPIKE", "LUDP"}
        assert ev["move_pct"] < 0
        assert abs(ev["move_pct"]) >= ev["threshold_pct"] > 0
        assert ev["band_low"] < ev["reference_price"] < ev["band_high"]
        assert ev["trade_ids"], "evidence must name the trades behind the alert"
        assert set(ev["trade_ids"]) <= ids.keys()
        assert len(ev["trade_ids"]) <= 20
        assert ev["trigger_trade_id"] in ids
        assert ids[ev["trigger_trade_id"]][0] == f.ts
        assert ev["trigger_trade_id"] == ev["trade_ids"][-1]
        assert list(ev["aggressive_volume"]) == f.agents
        assert all(v > 0 for v in ev["aggressive_volume"].values())


def test_slow_decline_pauses_by_ludp_after_the_limit_state() -> None:
    tape = slow_decline_tape()
    _, out = run(tape)
    assert states(out)[0] == ("PAUSED", "LUDP")
    assert ("PAUSED", "VELOCITY") not in states(out)
    t, f = out.transitions[0], out.findings[0]
    since = f.evidence["limit_state_since"]
    assert T0 + 600 < since < t.ts
    assert t.ts >= since + 15.0, "LUDP must wait for the 15 s limit state"
    assert t.resume_at == pytest.approx(t.ts + 300.0)
    assert f.kind == "flash_crash"
    assert f.evidence["trigger"] == "LUDP"
    assert f.evidence["move_pct"] < -f.evidence["threshold_pct"]
    assert t.band_low is not None
    assert t.reference_price is not None
    assert f.agents[0] == "seller-x"


def test_short_excursion_outside_the_band_is_forgiven() -> None:
    """Outside the band for 10 s, then back: the limit state closes without a pause."""
    tape = Tape(5).calm(600)
    level = tape.p
    tape.p = level * 0.93  # −7%: outside the 5% band, inside the 10% velocity limit
    tape.calm(10, sigma=0.0)
    tape.p = level
    tape.calm(300)
    monitor, out = run(tape)
    assert out.transitions == []
    assert out.findings == []
    assert monitor.breaker.limit_since is None


def test_long_excursion_outside_the_band_pauses_after_15_s() -> None:
    tape = Tape(5).calm(600)
    tape.p *= 0.93
    entered = T0 + tape.elapsed()
    tape.calm(30, sigma=0.0)
    _, out = run(tape)
    assert states(out) == [("PAUSED", "LUDP")]
    assert out.transitions[0].ts >= entered + 15.0
    assert out.transitions[0].ts < entered + 16.0


def test_spike_up_is_a_price_spike() -> None:
    """+200% in 10 s: paused, halted; the tape (which, unlike a venue, trades on while halted)
    reopens at 2.4 times the halt price, beyond the episode's anchor: halted again."""
    _, out = run(spike_tape())
    assert states(out) == [("PAUSED", "VELOCITY"), ("HALTED", "SPIKE"), ("TRADING", "RESUME"),
                           ("HALTED", "SPIKE")]
    assert [f.kind for f in out.findings] == ["price_spike"] * 3
    assert all(f.evidence["move_pct"] > 0 for f in out.findings)
    assert out.findings[2].evidence["trigger"] == "ANCHOR"


@pytest.mark.parametrize(("tape_of", "planted"), [(crash_tape, "dumper"), (spike_tape, "pumper")],
                         ids=["crash-sellers", "spike-buyers"])
def test_planted_agent_leads_every_alert(tape_of: Callable[[], Tape], planted: str) -> None:
    """The agent on the aggressive side of every trade of the move is named first."""
    _, out = run(tape_of())
    assert len(out.findings) >= 2
    for f in out.findings[:2]:  # (a later re-halt at the reopening cites the reopening trades)
        assert f.agents, f
        assert f.agents[0] == planted, (f.evidence["trigger"], f.agents)


# ------------------------------------------------------------------------------ stray prints
def test_one_stray_print_trips_nothing() -> None:
    tape = Tape(6).calm(600)
    for _ in range(5):  # five isolated fat fingers, each a single print at −50%
        tape.prints(tape.p * 0.5)
        tape.calm(60)
    monitor, out = run(tape)
    assert monitor.ready
    assert out.findings == []
    assert out.transitions == []


def test_one_absurd_print_trips_nothing() -> None:
    """A single print at 100x (a units error) must not move the reference into a LUDP pause."""
    tape = Tape(6, rate=5).calm(600)
    tape.prints(tape.p * 100)
    tape.calm(300)
    _, out = run(tape)
    assert out.transitions == [], [f.summary for f in out.findings]


def test_two_consecutive_stray_prints_trip() -> None:
    tape = Tape(6).calm(600)
    ids = tape.prints(tape.p * 0.5, tape.p * 0.5)
    tape.calm(60)
    _, out = run(tape)
    assert out.transitions
    assert states(out)[0] == ("HALTED", "SPIKE")
    assert out.findings[0].kind == "flash_crash"
    assert out.findings[0].evidence["trigger_trade_id"] == ids[1]


# ------------------------------------------------------------------------------ warm-up and gaps
def test_before_warm_up_static_cold_bands_judge() -> None:
    """A new instrument crashing in its first minute is judged by the static cold bands around
    its first prints (not by its own unlearnt volatility); without them nothing is judged."""
    tape = Tape(7).calm(30).ramp(10, -0.5, seller="dumper").calm(15)
    monitor, out = run(tape)
    assert not monitor.ready
    assert states(out)[0][0] in ("PAUSED", "HALTED")
    assert out.findings[0].kind == "flash_crash"
    assert out.findings[0].agents[0] == "dumper"
    _, off = run(tape, MarketConfig(cold_band=math.inf))
    assert off.findings == []
    assert off.transitions == []
    _, calm = run(Tape(7).calm(45))
    assert calm.findings == [], "a calm start trips nothing"


def test_warm_up_completes_and_then_detects() -> None:
    cfg = MarketConfig(warmup_s=60, warmup_returns=20)
    tape = Tape(7).calm(58)
    monitor, _ = run(tape, cfg)
    assert not monitor.ready
    tape.calm(10).ramp(10, -0.5, seller="dumper")
    monitor, out = run(tape, cfg)
    assert monitor.ready
    assert out.findings


def test_long_gap_then_a_new_price_level_does_not_halt() -> None:
    """One hour without trades, then trading resumes 20% lower: nothing to compare it with."""
    tape = Tape(8).calm(600).gap(3600)
    tape.p *= 0.8
    tape.calm(300)
    _, out = run(tape)
    assert out.transitions == [], [f.summary for f in out.findings]
    assert out.findings == []


# ------------------------------------------------------------------------------ scores
def _step_crash_findings(move: float) -> list[Finding]:
    tape = Tape(1).calm(600)
    level = tape.p * (1 + move)
    tape.prints(level, level, level, level)
    tape.calm(5)
    return run(tape)[1].findings


def test_scores_are_in_range_and_findings_are_one_line() -> None:
    findings = (run(crash_tape())[1].findings + run(spike_tape())[1].findings
                + run(slow_decline_tape())[1].findings + _step_crash_findings(-0.9))
    assert len(findings) >= 6
    for f in findings:
        assert math.isfinite(f.score)
        assert 0.0 <= f.score <= 100.0
        assert f.summary.strip()
        assert "\n" not in f.summary
        assert "GPU" in f.summary
        assert f.evidence["trigger"] in f.summary


def test_bigger_velocity_crash_scores_higher() -> None:
    small, big = _step_crash_findings(-0.12), _step_crash_findings(-0.20)
    assert small[0].evidence["trigger"] == big[0].evidence["trigger"] == "VELOCITY"
    assert 50.0 <= small[0].score < big[0].score <= 100.0


def test_score_never_falls_as_the_crash_gets_bigger() -> None:
    """A bigger instantaneous drop must not score lower, whichever check fires first."""
    moves = [-0.12, -0.16, -0.20, -0.24, -0.26, -0.30, -0.40, -0.50]
    scores = [_step_crash_findings(m)[0].score for m in moves]
    assert scores == sorted(scores), list(zip(moves, scores, strict=True))


# ------------------------------------------------------------------------------ memory
def test_state_is_bounded_after_200k_trades() -> None:
    rng = np.random.default_rng(9)
    n, rate = 200_000, 40
    prices = (2.0 * np.exp(np.cumsum(rng.normal(0.0, 0.0005 / math.sqrt(rate), n)))).tolist()
    ts = (T0 + np.arange(n) / rate).round(6).tolist()
    cfg = MarketConfig()
    monitor = MarketMonitor("v", "GPU", cfg)
    for start in range(0, n, 50_000):  # 5,000 s of event time
        stop = start + 50_000
        monitor.update(TradeColumns(
            "v", "GPU", ts[start:stop], [f"t{i}" for i in range(start, stop)], prices[start:stop],
            [1.0] * (stop - start), [f"b{i}" for i in range(start, stop)],
            [f"s{i}" for i in range(start, stop)]))
        assert len(monitor.bars) <= cfg.ref_window_s + 1
        assert len(monitor.recent) <= cfg.recent_trades
    assert len(monitor.recent) == cfg.recent_trades
    assert monitor.ref_n <= rate * (cfg.ref_window_s + 1)


def _transition_fields(t: Transition) -> tuple[object, ...]:
    return (t.ts, t.seq, t.state, t.reason, t.resume_at, t.alert_ids)


def test_batching_does_not_change_the_result() -> None:
    tape = crash_tape()
    _, whole = run(tape)
    monitor = MarketMonitor("v", "GPU")
    parts = MonitorOutput()
    for start in range(0, len(tape.rows), 333):
        parts.extend(monitor.update(tape.cols(tape.rows[start:start + 333])))
    assert [_transition_fields(t) for t in parts.transitions] == \
        [_transition_fields(t) for t in whole.transitions]
    assert parts.findings == whole.findings
    assert parts.bars == whole.bars
