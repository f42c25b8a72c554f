"""An instrument the engine evicted after an idle hour still wakes up against its last known
price: a first print far from it is judged at once, not taken as a new instrument's start."""

from __future__ import annotations

import random

from streams.contracts import Trade
from streams.pipeline import Surveillance

T0 = 1_767_225_600.0


def trades() -> list[Trade]:
    rng = random.Random(4)
    out: list[Trade] = []
    for i in range(5400):  # B trades every 2 s for 3 hours; A for its first 20 minutes
        t = T0 + 2.0 * i
        out.append(Trade(ts=t, trade_id=f"b{i}", instrument="B", price=50 * (1 + rng.gauss(
            0, 0.001)), qty=1.0, buyer="x", seller="y"))
        if t < T0 + 1200:
            out.append(Trade(ts=t + 0.5, trade_id=f"a{i}", instrument="A",
                             price=10 * (1 + rng.gauss(0, 0.001)), qty=1.0, buyer="x",
                             seller="y"))
    for k in range(30):  # A wakes after ~2 h 20 min, 150 % above its last price
        t = T0 + 9600 + k
        out.append(Trade(ts=t, trade_id=f"w{k}", instrument="A", price=25.0 * (1 + 0.01 * k),
                         qty=1.0, buyer="pumper", seller="y"))
    out.sort(key=lambda t: t.ts)  # type: ignore[arg-type, return-value]
    return out


def test_an_evicted_instrument_wakes_against_its_last_known_price() -> None:
    engine = Surveillance(emit_bars=False)
    halts = []
    tape = trades()
    for i in range(0, len(tape), 500):
        halts += engine.process(tape[i:i + 500]).halts
    assert engine.stats.evicted >= 1, "A was not evicted while idle"
    woke = [h for h in halts if h.instrument == "A" and h.state != "TRADING"]
    assert woke, "a +150 % first print after hours must be judged at once"
    assert woke[0].ts <= "2026-01-01T02:40:02", woke[0]  # forgetting: a pause 27 s later
