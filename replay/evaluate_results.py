"""The results of :func:`replay.evaluate.evaluate`: metric records, constants, the error type.

Import these names from :mod:`replay.evaluate`; the matching rules are described there.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

__all__ = [
    "MARKET_ALIASES",
    "MARKET_EVENT_KINDS",
    "Evaluation",
    "EvaluationError",
    "HaltStats",
    "KindStats",
    "LabelResult",
]

#: Label kinds that are market events: halts are scored against these.
MARKET_EVENT_KINDS: Final = ("flash_crash", "price_spike", "contagion")
#: Opt-in equivalence: per-instrument crash/spike alerts also detect a contagion episode.
MARKET_ALIASES: Final[Mapping[str, tuple[str, ...]]] = {
    "contagion": ("flash_crash", "price_spike"),
}
#: Reasons kept per input for malformed lines; examples of false alerts kept.
MAX_EXAMPLES: Final = 5
MAX_FALSE_ALERT_EXAMPLES: Final = 20
SOURCES: Final = ("alerts", "halts", "labels")


class EvaluationError(ValueError):
    """The evaluation cannot run: a missing file or directory, or a bad parameter."""


# Its public home (and the name tracebacks show) stays ``replay.evaluate.EvaluationError``.
EvaluationError.__module__ = "replay.evaluate"


@dataclass(frozen=True, slots=True)
class KindStats:
    """Detection metrics of one alert kind (or ``"overall"``); ratios are None when undefined."""

    kind: str
    labels: int
    detected: int
    alerts: int
    true_alerts: int
    false_alerts: int
    recall: float | None
    precision: float | None
    median_delay_s: float | None

    def to_dict(self) -> dict[str, Any]:
        return {"labels": self.labels, "detected": self.detected, "recall": self.recall,
                "alerts": self.alerts, "true_alerts": self.true_alerts,
                "false_alerts": self.false_alerts, "precision": self.precision,
                "median_delay_s": self.median_delay_s}


@dataclass(frozen=True, slots=True)
class HaltStats:
    """Halts scored against market-event labels; ratios are None when undefined."""

    halts: int
    on_market_events: int
    false_halts: int
    precision: float | None
    market_event_labels: int
    market_event_labels_halted: int
    recall: float | None
    median_delay_s: float | None
    resumptions: int

    def to_dict(self) -> dict[str, Any]:
        return {"halts": self.halts, "on_market_events": self.on_market_events,
                "false_halts": self.false_halts, "precision": self.precision,
                "market_event_labels": self.market_event_labels,
                "market_event_labels_halted": self.market_event_labels_halted,
                "recall": self.recall, "median_delay_s": self.median_delay_s,
                "resumptions": self.resumptions}


@dataclass(frozen=True, slots=True)
class LabelResult:
    """How one label fared. ``source`` is ``labels.jsonl:LINE`` or ``labels[INDEX]``."""

    source: str
    kind: str
    t_start: str
    t_end: str
    instruments: tuple[str, ...]
    agents: tuple[str, ...]
    matching_alerts: int
    first_alert_id: str | None
    delay_s: float | None
    market_event: bool
    matching_halts: int
    halt_delay_s: float | None

    @property
    def detected(self) -> bool:
        return self.matching_alerts > 0

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "kind": self.kind, "t_start": self.t_start,
                "t_end": self.t_end, "instruments": list(self.instruments),
                "agents": list(self.agents), "detected": self.detected,
                "matching_alerts": self.matching_alerts, "first_alert_id": self.first_alert_id,
                "delay_s": self.delay_s, "market_event": self.market_event,
                "matching_halts": self.matching_halts if self.market_event else None,
                "halt_delay_s": self.halt_delay_s}


@dataclass(frozen=True, slots=True)
class Evaluation:
    """The result of :func:`evaluate`: per-kind and overall metrics, halts, per-label detail."""

    grace_s: float
    aliases: dict[str, tuple[str, ...]]
    kinds: tuple[KindStats, ...]
    overall: KindStats
    halts: HaltStats
    labels: tuple[LabelResult, ...]
    #: The first false alerts (alert_id, kind, ts, instrument), for a look at what misfired.
    false_alert_examples: tuple[dict[str, Any], ...] = ()
    malformed: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SOURCES, 0))
    malformed_examples: dict[str, tuple[str, ...]] = field(
        default_factory=lambda: {s: () for s in SOURCES})
    duplicates: dict[str, int] = field(default_factory=lambda: {"alerts": 0, "halts": 0})

    def kind(self, name: str) -> KindStats | None:
        """The metrics of one kind, or None when it had neither labels nor alerts."""
        return next((k for k in self.kinds if k.kind == name), None)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able mapping (schema ``evaluation/1``); undefined metrics are None."""
        return {
            "schema": "evaluation/1",
            "grace_s": self.grace_s,
            "aliases": {k: list(v) for k, v in self.aliases.items()},
            "kinds": {k.kind: k.to_dict() for k in self.kinds},
            "overall": self.overall.to_dict(),
            "halts": self.halts.to_dict(),
            "labels": [lab.to_dict() for lab in self.labels],
            "false_alert_examples": [dict(a) for a in self.false_alert_examples],
            "malformed": {s: {"count": self.malformed.get(s, 0),
                              "examples": list(self.malformed_examples.get(s, ()))}
                          for s in SOURCES},
            "duplicates": dict(self.duplicates),
        }
