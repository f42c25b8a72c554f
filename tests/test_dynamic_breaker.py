"""Containment rules of MarketMonitor: the dynamic breaker, escalation episodes, cold markets."""

from __future__ import annotations

from detectors.base import TradeColumns
from detectors.market import MarketConfig, MarketMonitor
from tests.test_market import T0, Tape, run, states

__all__: list[str] = []


def test_a_slow_bleed_of_35_percent_over_50_minutes_pauses() -> None:
    tape = Tape(1, rate=2).calm(900).ramp(3000, -0.35, seller="bleeder").calm(60)
    _, out = run(tape)
    assert out.transitions, "a −35% slide over 50 minutes must pause"
    first = out.findings[0]
    assert first.evidence["trigger"] == "DYNAMIC"
    assert states(out)[0] == ("PAUSED", "LUDP")
    assert out.transitions[0].resume_at - out.transitions[0].ts == 120.0


def test_an_honest_random_walk_is_not_halted() -> None:
    for seed in (1, 2):
        _, out = run(Tape(seed, rate=2, sigma=0.001).calm(3 * 3600))
        assert out.transitions == [], [f.summary for f in out.findings]


def test_pump_through_reopenings_is_halted_by_the_third_pause() -> None:
    """A pumper who climbs again after every reopening: the third pause halts (SPIKE)."""
    m = MarketMonitor("v", "GPU")
    tape = Tape(3).calm(600)
    out = m.update(tape.cols())
    reasons: list[tuple[str, str]] = []
    for _ in range(40):
        if m.breaker.trading:
            tape.rows = []
            tape.ramp(10, 0.15, buyer="pumper")
        else:
            tape.rows = []
            tape.t = max(tape.t, (m.breaker.resume_at or tape.t) + 0.5)
            tape.calm(2)
        out = m.update(tape.cols())
        reasons += states(out)
    halts = [r for r in reasons if r[0] == "HALTED"]
    assert halts, reasons
    pauses_before = reasons[:reasons.index(halts[0])].count(("PAUSED", "VELOCITY"))
    assert pauses_before <= 2
    assert tape.p < 2.0 * 2.0 * 1.3 or len(halts) >= 2


def test_a_thin_instrument_waking_after_hours_halts_during_a_pump() -> None:
    tape = Tape(5, rate=1).calm(900).gap(5 * 3600)
    base = tape.p
    tape.rate = 2
    tape.ramp(60, 2.8, buyer="pumper")
    m = MarketMonitor("v", "GPU")
    out = m.update(tape.cols())
    halted = [t for t in out.transitions if t.state != "TRADING"]
    assert halted, "a +280% pump in the first minute after waking must halt"
    price_at = next(r[2] for r in tape.rows if r[0] >= halted[0].ts)
    assert price_at < base * 1.6


def test_a_new_instrument_pumping_in_its_first_minute_halts() -> None:
    tape = Tape(6, rate=2).calm(5).ramp(60, 2.8, buyer="pumper")
    _, out = run(tape)
    assert any(t.state != "TRADING" for t in out.transitions)
    assert out.findings[0].agents[0] == "pumper"


def test_cold_rules_can_be_switched_off() -> None:
    tape = Tape(6, rate=2).calm(5).ramp(30, 2.8, buyer="pumper")
    m = MarketMonitor("v", "GPU", MarketConfig(cold_band=float("inf")))
    assert m.update(TradeColumns.from_rows("v", "GPU", tape.rows)).transitions == []
    assert T0
