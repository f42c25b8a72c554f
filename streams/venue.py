"""Stage 2: the venue-wide view, fed by stage 1's window summaries and watermarks.

Stage 1 publishes on ``flows`` (key = venue) each instrument's per-window summary (pair flows,
per-agent activity) and, per input partition, its watermark. Stage 2 merges the summaries of every
partition (duplicates after a redelivery are recognised by their deterministic key) and closes a
window when the **venue watermark** — the minimum over the partitions of ``trades`` that have
reported for the venue — passes its end. So its results depend neither on how the partitions of
``trades`` are assigned to workers nor on how far one of them lags.

Its first job is market structure (:mod:`detectors.structure`): trader concentration (HHI, top-5
share), new entrants' share of volume, counterparty concentration per instrument and window, on
the ``structure`` topic for the store. The registry (``agents``, keyed by agent_id) is read when
present: creation times make "new entrant" exact, owners and funders feed the agent-level
detectors. Its facts are kept in one bounded :class:`~detectors.registry.AgentBook` that every
venue reads (an entry without a venue holds for all of them, those first seen later included).

:class:`VenueStage` is pure (no Kafka); :class:`~streams.venue_worker.VenueWorker` runs it as a
consumer-group member of ``flows`` and ``agents`` with checkpoints, like stage 1
(:mod:`streams.worker`).
"""

from __future__ import annotations

import logging
import math
import pickle
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from detectors.base import Finding
from detectors.breaker import next_seq
from detectors.flows import PriceBatch, WindowSummary
from detectors.prices import PriceBoard
from detectors.registry import AgentBook
from detectors.stage2 import make_detectors
from detectors.structure import MarketStructure, StructureMetrics
from detectors.venue_base import AgentFacts, CrossMarketDetector, HaltDecision, VenueDetector
from streams.contracts import Agent, Alert, Halt, encode, iso, parse_ts

__all__ = ["VenueOutput", "VenueStage", "read_agent", "restore_stage", "snapshot_stage"]

log = logging.getLogger("surveil.venue")


@dataclass(slots=True)
class VenueOutput:
    """What stage 2 produced for one input record."""

    metrics: list[StructureMetrics] = field(default_factory=list)
    alerts: list[Alert] = field(default_factory=list)
    halts: list[Halt] = field(default_factory=list)

    def extend(self, other: VenueOutput) -> None:
        self.metrics += other.metrics
        self.alerts += other.alerts
        self.halts += other.halts


def to_alert(f: Finding, detector: str) -> Alert:
    """A stage-2 finding as an ``alert/1`` message."""
    return Alert(alert_id=f.key, ts=iso(f.ts), kind=f.kind, score=f.score,
                 instrument=f.instrument, agents=f.agents, venue=f.venue, detector=detector,
                 summary=f.summary, evidence=f.evidence)


@dataclass(slots=True)
class VenueStage:
    """Stage-2 state of the venues whose ``flows`` partition this worker owns."""

    window_s: float = 60.0
    tick_s: float = 5.0
    max_venues: int = 1_000
    venues: dict[str, MarketStructure] = field(default_factory=dict)
    #: Names of the stage-2 detectors to run (``None``: all of :data:`detectors.stage2.DETECTORS`).
    detector_names: tuple[str, ...] | None = None
    detectors: dict[str, list[VenueDetector]] = field(default_factory=dict)
    cross: dict[str, list[CrossMarketDetector]] = field(default_factory=dict)
    boards: dict[str, PriceBoard] = field(default_factory=dict)
    #: Last ``seq`` of each (venue, instrument) halt key stage 2 has published.
    halt_seq: dict[tuple[str, str], int] = field(default_factory=dict)
    #: Wall clock for ``emitted_at`` (not part of any decision).
    wall_clock: Callable[[], float] = time.time
    #: Builds one venue's detectors from ``detector_names`` (tests and research; not pickled
    #: when it is ``None``, the default).
    factory: Callable[[tuple[str, ...] | None],
                      Sequence[VenueDetector | CrossMarketDetector]] | None = None
    watermarks: dict[str, dict[int, float]] = field(default_factory=dict)
    closed_at: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    next_offset: int | None = None
    #: Partitions of ``trades`` (stage 1's inputs) and those that have reported.
    partitions_total: int = 1
    reported: set[int] = field(default_factory=set)
    #: Registry facts, shared by every venue's :class:`MarketStructure`.
    agents: AgentBook = field(default_factory=AgentBook)

    def venue(self, name: str) -> MarketStructure | None:
        ms = self.venues.get(name)
        if ms is None:
            if len(self.venues) >= self.max_venues:
                self._count("refused_venue")
                return None
            ms = self.venues[name] = MarketStructure(name, window_s=self.window_s,
                                                     registry=self.agents)
            made: list[Any] = list((self.factory or make_detectors)(self.detector_names))
            self.detectors[name] = [d for d in made if hasattr(d, "observe")]
            self.cross[name] = [d for d in made if hasattr(d, "observe_prices")]
            self.boards[name] = PriceBoard(name, tick_s=self.tick_s)
        return ms

    def handle(self, value: bytes | None) -> VenueOutput:
        """One ``flows`` record: a summary or a watermark. Returns what it closed."""
        if not value:
            self._count("malformed")
            return VenueOutput()
        try:
            if value.startswith(b'{"schema":"watermark/1"'):
                doc = msgspec.json.decode(value)
                return self.watermark(str(doc["venue"]), int(doc["partition"]),
                                      float(doc["watermark"]))
            if value.startswith(b'{"schema":"flows/1"'):  # decoded once, straight to structs
                summary = msgspec.json.decode(value, type=WindowSummary)
                ms = self.venue(summary.venue)
                if ms is not None and not ms.add(summary):
                    self._count("duplicate_or_late")
                return VenueOutput()
            if value.startswith(b'{"schema":"prices/1"'):
                batch = msgspec.json.decode(value, type=PriceBatch)
                if self.venue(batch.venue) is not None:
                    self.boards[batch.venue].add(batch)
                return VenueOutput()
        except (msgspec.DecodeError, msgspec.ValidationError, KeyError, TypeError,
                ValueError):
            pass
        self._count("malformed")
        return VenueOutput()

    def watermark(self, venue: str, partition: int, wm: float) -> VenueOutput:
        """A partition's watermark for ``venue`` (``"*"``: the partition holds no venue yet).

        Nothing closes before every partition of ``trades`` has reported once, so a partition
        whose first records are slow to arrive is not left out of the first windows."""
        first = partition not in self.reported
        self.reported.add(partition)
        if venue != "*":
            marks = self.watermarks.setdefault(venue, {})
            if wm <= marks.get(partition, float("-inf")):
                return VenueOutput()
            marks[partition] = wm
            venues = [venue]
        elif first:
            venues = sorted(self.watermarks)
        else:
            return VenueOutput()
        if len(self.reported) < self.partitions_total:
            return VenueOutput()
        out = VenueOutput()
        for name in venues:
            low = min(self.watermarks[name].values())
            if low <= self.closed_at.get(name, float("-inf")):
                continue
            self.closed_at[name] = low
            out.extend(self.close(name, low))
        return out

    def close(self, name: str, watermark: float) -> VenueOutput:
        """Close the venue's windows up to ``watermark`` and run the detectors on them: for
        each window start, ``observe`` every instrument's view, then ``end_window``."""
        ms = self.venue(name)
        out = VenueOutput()
        if ms is None:
            return out
        closed = ms.close(watermark)
        dets = self.detectors.get(name, [])
        for i, (metrics, view) in enumerate(closed):
            out.metrics.append(metrics)
            for det in dets:
                out.alerts += self._run(det, "observe", view, ms)
            last = i + 1 == len(closed) or closed[i + 1][1].window_start != view.window_start
            if last:
                for det in dets:
                    out.alerts += self._run(det, "end_window", view.window_start,
                                            view.window_end, ms)
        cross = self.cross.get(name, [])
        for bucket in self.boards[name].close(watermark):
            for xd in cross:
                self._cross(out, xd, "advance", bucket.start, ms)
                self._cross(out, xd, "observe_prices", bucket, ms)
        if math.isfinite(watermark):
            for xd in cross:
                self._cross(out, xd, "advance", watermark, ms)
        return out

    def _cross(self, out: VenueOutput, det: CrossMarketDetector, method: str, arg: Any,
               ms: MarketStructure) -> None:
        try:
            findings, decisions = getattr(det, method)(arg, ms)
        except Exception:  # a detector's bug must not stop the others, nor stage 2
            log.exception("stage-2 detector %s failed in %s", det.name, method)
            self._count(f"detector_error:{det.name}")
            return
        label = f"{det.name}/{det.version}"
        out.alerts += [to_alert(f, label) for f in findings]
        out.halts += [self._halt(ms.venue, d) for d in decisions]

    def _halt(self, venue: str, d: HaltDecision) -> Halt:
        """A decision as ``halt/1``: ``seq`` is its event time in microseconds, bumped to stay
        strictly increasing per (venue, instrument) key, as stage 1 does."""
        key = (venue, d.instrument)
        seq = next_seq(d.ts, self.halt_seq.get(key, -1))
        self.halt_seq.pop(key, None)
        self.halt_seq[key] = seq
        reason = d.reason
        if d.state == "TRADING" and d.instrument != "*":
            # the end of a contagion pause says so: subscribers keep the cross-market decisions
            # on a layer of their own (exchange.haltbook), which a RESUME of the instrument's
            # own breaker does not lift, nor this one the breaker's
            reason = "CONTAGION"
        while len(self.halt_seq) > 100_000:  # oldest keys first (insertion order)
            del self.halt_seq[next(iter(self.halt_seq))]
        return Halt(seq=seq, ts=iso(d.ts), emitted_at=iso(self.wall_clock()), venue=venue,
                    instrument=d.instrument, state=d.state, reason=reason,
                    resume_at=iso(d.resume_at) if d.resume_at is not None else None,
                    reference_price=d.reference_price, band_low=d.band_low,
                    band_high=d.band_high, alert_ids=list(d.alert_ids))

    def flush(self) -> VenueOutput:
        """End of input (backtest): close every venue's open windows and price buckets (timed
        resumptions past the last trade are not invented)."""
        out = VenueOutput()
        for name in sorted(self.venues):
            out.extend(self.close(name, math.inf))
        return out

    def feed(self, summaries: Sequence[WindowSummary | PriceBatch],
             watermarks: Sequence[Any]) -> VenueOutput:
        """Stage 1's output, in process (backtest): encoded and handled as the ``flows`` records
        the live stage 1 would publish, so both paths decode the same bytes."""
        out = VenueOutput()
        for s in summaries:
            out.extend(self.handle(encode(s)))
        for w in watermarks:
            out.extend(self.handle(encode({"schema": "watermark/1", "venue": w.venue,
                                           "partition": w.partition,
                                           "watermark": w.watermark})))
        return out

    def _run(self, det: VenueDetector, method: str, *args: Any) -> list[Alert]:
        try:
            found: list[Finding] = getattr(det, method)(*args)
        except Exception:  # a detector's bug must not stop the others, nor stage 2
            log.exception("stage-2 detector %s failed in %s", det.name, method)
            self._count(f"detector_error:{det.name}")
            return []
        label = f"{det.name}/{det.version}"
        return [to_alert(f, label) for f in found]

    def registry(self, value: bytes | None) -> None:
        """One ``agents`` record: its facts hold for its venue, or for every venue."""
        entry = read_agent(value)
        if entry is None:
            self._count("bad_agent")
            return
        self.agents.observe(*entry)

    def _count(self, name: str) -> None:
        self.counts[name] = self.counts.get(name, 0) + 1

    def report(self) -> dict[str, int]:
        """Every non-zero counter of this stage: its own (``malformed``, refused venues,
        detector errors), the window merger's and price board's (``windows.late``,
        ``prices.late``: input that came after its window or bucket had closed, ``refused``,
        ``shed``, ``duplicates``) and the detectors' (``anomaly.unscored``), over venues."""
        out = dict(self.counts)

        def add(name: str, n: int) -> None:
            if n:
                out[name] = out.get(name, 0) + int(n)

        add("registry.dropped", self.agents.dropped)

        for name in sorted(self.venues):
            for k, n in self.venues[name].stats.items():
                add(f"windows.{k}", n)
            for k, n in self.boards[name].stats.items():
                add(f"prices.{k}", n)
            dets: list[Any] = [*self.detectors.get(name, []), *self.cross.get(name, [])]
            for det in dets:
                add(f"{det.name}.unscored", getattr(det, "unscored", 0))
        return out


def read_agent(value: bytes | None) -> tuple[str | None, str, AgentFacts] | None:
    """An ``agents`` record as (venue or ``None``, agent id, facts); ``None`` if malformed."""
    try:
        agent = msgspec.json.decode(value or b"", type=Agent)
        created = parse_ts(agent.created_ts) if agent.created_ts is not None else None
    except (msgspec.DecodeError, msgspec.ValidationError, ValueError):
        return None
    return agent.venue or None, agent.agent_id, AgentFacts(agent.owner, agent.funded_by,
                                                           created, agent.kind)


#: Bumped when :class:`VenueStage`'s pickled form changes (2: registry facts in one AgentBook).
SNAPSHOT_VERSION = 2


def snapshot_stage(stage: VenueStage) -> bytes:
    """The stage (with the offset it reflects), compressed, for a checkpoint."""
    body = pickle.dumps((SNAPSHOT_VERSION, stage), protocol=pickle.HIGHEST_PROTOCOL)
    return zlib.compress(body, 3)


def restore_stage(blob: bytes) -> VenueStage:
    """A stage from :func:`snapshot_stage`. Only restore snapshots this system wrote:
    :mod:`streams.checkpoint` authenticates them before they get here."""
    doc = pickle.loads(zlib.decompress(blob))  # noqa: S301 - authenticated
    version, stage = doc if isinstance(doc, tuple) and len(doc) == 2 else (None, doc)
    if version != SNAPSHOT_VERSION or not isinstance(stage, VenueStage):
        raise ValueError(f"unsupported venue-stage snapshot version {version!r}")
    return stage
