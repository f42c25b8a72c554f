"""The detector contract, stated once.

Detectors follow river's online contract (``learn_one`` / ``score_one``, higher = more anomalous)
and add a batch entry point, because throughput comes from handing a detector many trades at once:

- ``update(cols: TradeColumns) -> list[Finding]`` consumes the trades of one instrument in arrival
  order and returns what it found. Feeding the same trades in one call or in many calls must give
  the same findings (this is property-tested for every detector).
- State is bounded by construction: windows keep a fixed number of buckets, idle keys are evicted.
- Event time only: ``TradeColumns.ts`` drives every window and timer.
- Findings explain themselves: a score (see :func:`score_ratio`), a one-line summary, the agents
  involved and an ``evidence`` mapping (numbers, thresholds crossed, trade ids).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = ["Detector", "Finding", "TradeColumns", "score_ratio", "stable_id"]


@dataclass(frozen=True, slots=True)
class TradeColumns:
    """Trades of one (venue, instrument) in arrival order, as parallel columns.

    >>> cols = TradeColumns.from_rows("v", "I", [(1.0, "t1", 10.0, 1.0, "a", "b")])
    >>> cols.price, len(cols)
    ([10.0], 1)
    """

    venue: str
    instrument: str
    ts: list[float]
    trade_id: list[str]
    price: list[float]
    qty: list[float]
    buyer: list[str]
    seller: list[str]

    def __len__(self) -> int:
        return len(self.ts)

    def slice(self, start: int, stop: int) -> TradeColumns:
        return TradeColumns(
            self.venue, self.instrument, self.ts[start:stop], self.trade_id[start:stop],
            self.price[start:stop], self.qty[start:stop], self.buyer[start:stop],
            self.seller[start:stop],
        )

    @classmethod
    def from_rows(
        cls, venue: str, instrument: str, rows: list[tuple[float, str, float, float, str, str]]
    ) -> TradeColumns:
        """Columns from ``(ts, trade_id, price, qty, buyer, seller)`` rows."""
        ts, ids, px, qty, buyers, sellers = (list(c) for c in zip(*rows, strict=True)) if rows \
            else ([], [], [], [], [], [])
        return cls(venue, instrument, ts, ids, px, qty, buyers, sellers)


@dataclass(frozen=True, slots=True)
class Finding:
    """What a detector found; the pipeline turns it into an ``alert/1`` message."""

    kind: str
    ts: float
    score: float
    venue: str
    instrument: str | None
    agents: list[str]
    summary: str
    evidence: dict[str, Any] = field(default_factory=dict)
    #: Stable identity of the finding within its detector (used for the deterministic alert id).
    key: str = ""


class Detector(Protocol):
    """A batch-capable online detector for one instrument."""

    name: str
    version: str

    def update(self, cols: TradeColumns) -> list[Any]:
        """Consume trades (arrival order) and return what was found."""
        ...


def score_ratio(ratio: float) -> float:
    """Score 0–100 from measurement / threshold: 50 at the threshold, 75 at twice it.

    >>> score_ratio(1.0), score_ratio(2.0), score_ratio(0.0)
    (50.0, 75.0, 0.0)
    """
    if not ratio > 0:
        return 0.0
    return float(round(min(100.0, 100.0 * (1.0 - 0.5**ratio)), 1))


def stable_id(prefix: str, *parts: object) -> str:
    """Deterministic id: the same evidence gives the same id in every run.

    >>> stable_id("fc", "VELOCITY", "GPU", 1700000000123456)
    'fc-...'
    """
    digest = hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=10).hexdigest()
    return f"{prefix}-{digest}"
