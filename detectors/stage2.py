"""The stage-2 detectors that run by default, in the order they are called.

Each entry is ``(module, class)``; :func:`make_detectors` builds a fresh set for one venue.
Every detector follows :mod:`detectors.venue_base`.

>>> [d.name for d in make_detectors()] == [name for name, _ in DETECTORS]
True
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Final

from detectors.venue_base import CrossMarketDetector, VenueDetector

__all__ = ["DETECTORS", "make_detectors"]

#: (detector name, "module:Class"), in calling order.
DETECTORS: Final[tuple[tuple[str, str], ...]] = (
    ("wash", "detectors.wash:WashTradeDetector"),
    ("circular", "detectors.circular:CircularTradingDetector"),
    ("sybil", "detectors.sybil:SybilClusterDetector"),
    ("price_collusion", "detectors.collusion:PriceCollusionDetector"),
    ("anomaly", "detectors.anomaly:AgentAnomalyDetector"),
    ("marketwide", "detectors.marketwide:MarketWideBreaker"),
    ("contagion", "detectors.contagion:ContagionDetector"),
)


def make_detectors(names: Sequence[str] | None = None
                   ) -> list[VenueDetector | CrossMarketDetector]:
    """Fresh detectors for one venue: all of :data:`DETECTORS`, or those named."""
    chosen = [(n, target) for n, target in DETECTORS if names is None or n in names]
    unknown = set(names or ()) - {n for n, _ in DETECTORS}
    if unknown:
        raise ValueError(f"unknown stage-2 detectors: {', '.join(sorted(unknown))}")
    out: list[VenueDetector | CrossMarketDetector] = []
    for _, target in chosen:
        module, cls = target.split(":")
        out.append(getattr(importlib.import_module(module), cls)())
    return out
