"""Pure, Kafka-free online detectors and the circuit-breaker state machine.

Everything here is driven by **event time** (the trades' own ``ts``), never the wall clock, so a
tape replayed at any speed — or cut into batches of any size — gives the same findings.

Score semantics
---------------
Every finding carries a ``score`` in [0, 100] computed by :func:`detectors.base.score_ratio` from
how far the evidence went past its threshold: a measurement exactly at the threshold scores 50,
twice the threshold 75, three times 87.5 (``100 * (1 - 0.5 ** ratio)``). Scores are therefore
comparable across instruments with very different volatility: the thresholds themselves adapt to
each instrument, the score says by how much they were beaten.

Modules
-------
- :mod:`detectors.base` — the detector contract, trade columns, findings, scoring.
- :mod:`detectors.market` — flash-crash / spike detection per instrument (velocity, LULD-style
  band around a rolling reference, volatility-scaled thresholds).
- :mod:`detectors.breaker` — the circuit-breaker state machine (TRADING → PAUSED/HALTED → TRADING).
"""

from __future__ import annotations

from detectors.base import Finding, TradeColumns, score_ratio
from detectors.breaker import BreakerConfig, CircuitBreaker, Transition
from detectors.market import MarketConfig, MarketMonitor

__all__ = [
    "BreakerConfig",
    "CircuitBreaker",
    "Finding",
    "MarketConfig",
    "MarketMonitor",
    "TradeColumns",
    "Transition",
    "score_ratio",
]
