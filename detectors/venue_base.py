"""The stage-2 detector contract: venue-wide detectors fed closed windows, not raw trades.

Stage 1 summarises each (venue, instrument, event-time window) into pair flows and per-agent
activity (:mod:`detectors.flows`). Stage 2 (:mod:`streams.venue`, and the backtest through the
same :class:`streams.venue.VenueStage`) merges the summaries of every partition and, when the
venue watermark passes a window's end, hands each detector the merged :class:`WindowView` of
every instrument that traded in that window, then calls ``end_window`` once for the window.

Order and determinism
---------------------
For each window start, in increasing order: ``observe(view, ctx)`` for every instrument that
traded in it (sorted by instrument), then ``end_window(start, end, ctx)``. The calls depend
only on the trades (never on partitions, batching, lag or worker restarts), so a detector whose
findings are a function of these calls gives the same alerts live and in the backtest.

A detector must
---------------
- be a plain picklable object (stage 2 checkpoints it with ``pickle``), Kafka-free;
- keep bounded state whatever arrives (a million distinct agent ids must not grow it without
  limit): caps on tracked agents/pairs/edges, decay, eviction of the least useful;
- return :class:`detectors.base.Finding` objects whose ``key`` is deterministic
  (:func:`detectors.base.stable_id` of the evidence), ``ts`` the event time at which the evidence
  was complete (normally the window end), ``score`` 0–100, ``summary`` one plain sentence and
  ``evidence`` holding the agents, the edges behind it (counts, quantities, notional), a bounded
  sample of trade ids, the registry facts used and the thresholds crossed;
- work with no registry at all (``ctx.facts`` returns ``None``) and use it when present.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol

import msgspec

from detectors.base import Finding
from detectors.flows import AgentActivity, PairFlow

__all__ = ["AgentFacts", "CrossMarketDetector", "HaltDecision", "PriceBucket", "Tick",
           "VenueContext", "VenueDetector", "WindowView", "round_evidence"]


class WindowView(msgspec.Struct, kw_only=True, gc=False):
    """Every trade of one (venue, instrument) in one event-time window, merged over partitions.

    ``pairs`` holds one :class:`PairFlow` per ordered (buyer, seller), self-trades included,
    sorted by quantity (largest first); ``agents`` one :class:`AgentActivity` per agent.
    ``truncated`` is set when stage 1 or stage 2 had to cut pairs or agents (the lists are then
    a prefix of the truth, the totals are still exact).
    """

    venue: str
    instrument: str
    window_start: float
    window_end: float
    trades: int
    volume: float
    notional: float
    first_price: float
    last_price: float
    vwap: float
    pairs: list[PairFlow]
    agents: list[AgentActivity]
    truncated: bool = False


class AgentFacts(NamedTuple):
    """What the optional registry says of an agent (any field may be ``None``)."""

    owner: str | None
    funded_by: str | None
    created_ts: float | None
    kind: str | None


class VenueContext(Protocol):
    """What stage 2 knows of the venue's agents beyond the window at hand."""

    venue: str

    def facts(self, agent: str) -> AgentFacts | None:
        """Registry facts of ``agent``, or ``None`` when the registry does not know it."""
        ...

    def first_seen(self, agent: str) -> float | None:
        """Event time the agent was first seen trading on the venue (``None``: never, or
        forgotten; ``-inf``: seen before, time forgotten). Updated after each window closes."""
        ...


class VenueDetector(Protocol):
    """A stage-2 detector (see the module notes for the calling order)."""

    name: str
    version: str

    def observe(self, view: WindowView, ctx: VenueContext) -> list[Finding]:
        """One instrument's closed window."""
        ...

    def end_window(self, start: float, end: float, ctx: VenueContext) -> list[Finding]:
        """Every instrument of window ``[start, end)`` has been observed."""
        ...


class Tick(NamedTuple):
    """One instrument's trades in one price bucket (``tick_s``, 5 s by default)."""

    first: float
    last: float
    high: float
    low: float
    volume: float
    notional: float
    trades: int


class PriceBucket(NamedTuple):
    """Every instrument of a venue that traded in ``[start, end)``, closed on the venue
    watermark. Instruments that did not trade are absent (their last price still holds)."""

    venue: str
    start: float
    end: float
    ticks: dict[str, Tick]


class HaltDecision(NamedTuple):
    """A halt or resumption decided by a stage-2 detector (stage 2 makes the ``halt/1``
    message: seq, venue, wall time). ``instrument`` ``"*"`` is the whole venue; ``state`` and
    ``reason`` come from the FIXED lists of DESIGN §3.6; ``resume_at`` ``None`` means until a
    regulator resumes."""

    ts: float
    instrument: str
    state: str
    reason: str
    resume_at: float | None
    reference_price: float | None = None
    band_low: float | None = None
    band_high: float | None = None
    alert_ids: tuple[str, ...] = ()


class CrossMarketDetector(Protocol):
    """A stage-2 detector of the venue as a whole (contagion, market-wide breaker).

    Stage 2 calls, for each closed :class:`PriceBucket` in order of ``start`` (buckets where
    nothing traded are skipped: use ``start`` for time), ``advance(bucket.start, ctx)`` then
    ``observe_prices(bucket, ctx)``; after the last bucket it can close, ``advance(watermark,
    ctx)``. Both return findings and halt decisions. Timed resumptions are returned from
    ``advance`` once its argument reaches ``resume_at``, stamped ``ts = resume_at`` (not the
    argument), so live and backtest, which call ``advance`` at different watermarks, decide
    the same. A decision from ``observe_prices`` has ``ts`` in ``[start, end]``.
    """

    name: str
    version: str

    def observe_prices(self, bucket: PriceBucket,
                       ctx: VenueContext) -> tuple[list[Finding], list[HaltDecision]]: ...

    def advance(self, watermark: float,
                ctx: VenueContext) -> tuple[list[Finding], list[HaltDecision]]: ...


def round_evidence(x: float, digits: int = 6) -> float:
    """Numbers in evidence are rounded once, here (significant digits), so they read the same
    everywhere they are shown.

    >>> round_evidence(9.200000000000001), round_evidence(1234567.891), round_evidence(0.0)
    (9.2, 1234570.0, 0.0)
    """
    if x == 0 or x != x or x in (float("inf"), float("-inf")):
        return float(x)
    return float(f"{x:.{digits}g}")
