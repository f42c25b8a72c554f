"""Stage 1 and stage 2 in process, on trades in memory: what the live pipeline would alert.

:func:`venue_alerts` judges the trades with :class:`streams.pipeline.Surveillance` (stage 1) in
event-time order and feeds its window summaries and watermarks, encoded as the ``flows`` records
the live stage 1 publishes, to :class:`streams.venue.VenueStage` (stage 2). The backtest does the
same while it streams a tape. For detector research, :func:`venue_findings` runs given detector
objects and returns their findings.

>>> from streams.contracts import Trade
>>> trades = [Trade(ts=float(i), trade_id=str(i), instrument="I", price=1.0, qty=1.0,
...                 buyer="a", seller="a") for i in range(3)]
>>> venue_alerts(trades, detectors=[])
[]
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from detectors.base import Finding
from detectors.venue_base import CrossMarketDetector, VenueDetector
from replay.backtest import event_order
from streams.contracts import Agent, Alert, Trade, encode, parse_ts
from streams.pipeline import Surveillance
from streams.venue import VenueOutput, VenueStage

__all__ = ["venue_alerts", "venue_findings", "venue_run"]


def venue_alerts(trades: Sequence[Trade], *, agents: Iterable[Agent] | None = None,
                 detectors: Sequence[VenueDetector | CrossMarketDetector] | None = None,
                 batch_size: int = 5_000, window_s: float = 60.0) -> list[Alert]:
    """Stage-2 alerts on ``trades`` (any order; judged in event-time order).

    ``detectors``: the objects to run on the (single) venue; ``None`` runs the default set
    (:mod:`detectors.stage2`), one per venue."""
    return venue_run(trades, agents=agents, detectors=detectors, batch_size=batch_size,
                     window_s=window_s).alerts


def venue_run(trades: Sequence[Trade], *, agents: Iterable[Agent] | None = None,
              detectors: Sequence[VenueDetector | CrossMarketDetector] | None = None,
              batch_size: int = 5_000, window_s: float = 60.0) -> VenueOutput:
    """Like :func:`venue_alerts`, with stage 2's halts and structure metrics too."""
    given = list(detectors) if detectors is not None else None
    stage = VenueStage(window_s=window_s,
                       factory=(lambda _names: given) if given is not None else None)
    for a in agents or ():
        stage.registry(encode(a))
    engine = Surveillance(None, emit_bars=False)
    ordered = event_order(trades)
    result = VenueOutput()
    for i in range(0, len(ordered), batch_size):
        out = engine.process(ordered[i:i + batch_size])
        result.extend(stage.feed(out.summaries, out.watermarks))
    out = engine.flush()
    result.extend(stage.feed(out.summaries, out.watermarks))
    result.extend(stage.flush())
    return result


def venue_findings(trades: Sequence[Trade], *, agents: Iterable[Agent] | None = None,
                   detectors: Sequence[VenueDetector | CrossMarketDetector],
                   batch_size: int = 5_000, window_s: float = 60.0) -> list[Finding]:
    """Like :func:`venue_alerts` for the given detector objects, as findings."""
    return [Finding(kind=a.kind, ts=parse_ts(a.ts), score=a.score, venue=a.venue,
                    instrument=a.instrument, agents=list(a.agents), summary=a.summary,
                    evidence=dict(a.evidence), key=a.alert_id)
            for a in venue_alerts(trades, agents=agents, detectors=detectors,
                                  batch_size=batch_size, window_s=window_s)]
