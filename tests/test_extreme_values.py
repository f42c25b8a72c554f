"""Valid input at the edges of the contract cannot stop either stage: random tapes whose prices
and quantities jump across the whole admitted range (``MIN_VALUE`` to ``MAX_VALUE``), with
repeated ids, equal and disordered timestamps, gaps and random batching, through stage 1 and
stage 2. A stage-1 exception would stop the worker on every restart (a poison pill); a stage-2
detector exception is counted as ``detector_error`` and must not happen either."""

from __future__ import annotations

import random

import pytest

from streams.contracts import MAX_VALUE, MIN_VALUE, Trade
from streams.pipeline import Surveillance
from streams.venue import VenueStage

T0 = 1_767_225_600.0
EDGES = [MIN_VALUE, 1e-20, 1e-9, 0.5, 1.0, 3.0, 1e6, 1e15, 1e29, MAX_VALUE]


def tape(seed: int) -> tuple[list[Trade], int]:
    r = random.Random(seed)
    n = r.choice([50, 300, 2000])
    ts, trades = T0, []
    for _ in range(n):
        ts += r.choice([0.0, 0.0, 0.001, 0.5, 3.0, 65.0, 400.0])
        if r.random() < 0.05:
            ts -= r.choice([1.0, 30.0, 100.0])
        price = r.choice(EDGES) if r.random() < 0.3 else 1.0 + r.random() * 10
        trades.append(Trade(venue=r.choice(["v", "w"]), instrument=r.choice(["A", "B", "C"]),
                            trade_id=f"t{r.randrange(2 * n)}", ts=max(0.0, ts), price=price,
                            qty=r.choice(EDGES), buyer=r.choice("abcd"), seller=r.choice("abce"),
                            aggressor=r.choice([None, "buy", "sell"])))
    return trades, r.choice([1, 7, 100, 5000])


@pytest.mark.parametrize("seed", range(24))
def test_extreme_but_valid_values_stop_neither_stage(seed: int) -> None:
    trades, batch = tape(seed)
    engine, stage2 = Surveillance(None), VenueStage()
    for i in range(0, len(trades), batch):
        out = engine.process(trades[i:i + batch])
        stage2.feed(out.summaries, out.watermarks)
    out = engine.flush()
    stage2.feed(out.summaries, out.watermarks)
    stage2.flush()
    assert engine.stats.processed > 0
    assert not [k for k in stage2.report() if k.startswith("detector_error")]
