"""Score alerts and halts against the simulator's labels (``surveil evaluate DIR --labels FILE``).

Inputs are the contracts of DESIGN §3.4-3.6: ``alerts.jsonl`` (alert/1), ``halts.jsonl``
(halt/1) and ``labels.jsonl`` (one object per planted episode: ``kind``, ``t_start``, ``t_end``,
``instruments``, ``agents``, ``note``).

Matching an alert to a label
----------------------------
An alert *matches* a label when all three hold:

1. **Kind.** ``alert.kind == label.kind``. Strict by default: a ``flash_crash`` alert does not
   detect a ``price_spike`` or a ``contagion`` label, and an ``anomaly`` alert detects only an
   ``anomaly`` label, so each detector is credited only for what it claims to have seen.
   Equivalences are opt-in through ``aliases`` (label kind -> further alert kinds that also
   detect it); :data:`MARKET_ALIASES` lets ``flash_crash`` / ``price_spike`` alerts on the
   instruments of a ``contagion`` label detect it (contagion shows up as crashes on each of its
   instruments before, or instead of, a dedicated contagion alert).
2. **Time.** ``t_start <= alert.ts <= t_end + grace_s`` (event time, both ends inclusive). An
   alert before the episode starts is not a detection of it; ``grace_s`` (default 60 s) lets a
   detector finish a window that closes after the episode.
3. **Who or what.** ``alert.instrument`` is one of ``label.instruments``, or ``alert.agents`` and
   ``label.agents`` share at least one agent id. A label with neither instruments nor agents is
   unscoped (market-wide) and this condition always holds for it; otherwise an alert with
   ``instrument`` null and no agents matches nothing. Labels carry no venue, so venues are not
   compared.

Per kind (the label's kind for recall, the alert's kind for precision):

- ``recall`` = labels with at least one matching alert / labels of that kind;
- ``precision`` = alerts matching at least one label (*true alerts*) / alerts of that kind; an
  alert whose kind has no labels at all is a false alert;
- ``median_delay_s`` = median over detected labels of (earliest matching alert ts - t_start);
- counts: ``labels``, ``detected``, ``alerts``, ``true_alerts``, ``false_alerts``.

One alert may detect several labels (it is one true alert; every such label is detected) and one
label may be detected by several alerts (all true; the delay comes from the earliest). Kinds with
neither labels nor alerts are omitted. The ``overall`` line is micro-averaged: sums of the
counts, ratios of the sums, median of all detection delays pooled. A metric whose denominator is
zero is ``None`` (null in JSON), never 0 and never a division error.

Halts
-----
A *halt* is a halt/1 message whose ``state`` is not ``TRADING``; resumptions (``TRADING``) are
counted separately and never scored. A halt is *on a market event* when some label of kind
``flash_crash``, ``price_spike`` or ``contagion`` (``aliases`` do not apply to halts) has
``t_start <= halt.ts <= t_end + grace_s`` and instrument overlap: ``halt.instrument`` is
``"*"`` (every instrument of its venue), or is one of ``label.instruments``, or the label lists
no instruments (a market-wide event). Any other halt is a *false halt*. Reported: halts, on
market events, false halts, ``precision`` (on events / halts), market-event labels, labels with
at least one halt, ``recall`` (their ratio) and ``median_delay_s`` (earliest halt ts - t_start).

Input hygiene
-------------
Alerts are de-duplicated by ``alert_id`` and halts by ``(venue, instrument, seq)`` (at-least-once
delivery can repeat a message; ids are deterministic); the duplicates are counted. A line that is
not JSON, not an object, or lacks what matching needs (alerts: ``kind``, ``ts``; halts: ``ts``,
``instrument``, ``state``; labels: ``kind``, ``t_start <= t_end``, ``instruments``, ``agents``)
is skipped and counted, with the first reasons kept; it is never fatal. Timestamps are ISO-8601
with a zone or epoch seconds (:func:`streams.contracts.parse_ts`); delays are rounded to the
microsecond. A missing file or directory raises :class:`EvaluationError`.

>>> label = {"kind": "flash_crash", "t_start": "2026-01-01T00:00:00Z",
...          "t_end": "2026-01-01T00:01:00Z", "instruments": ["GPU"], "agents": []}
>>> hit = {"alert_id": "a1", "kind": "flash_crash", "ts": "2026-01-01T00:00:12Z",
...        "instrument": "GPU", "agents": ["bot7"]}
>>> late = dict(hit, alert_id="a2", ts="2026-01-01T00:02:30Z")
>>> ev = evaluate([hit, late], [], [label])
>>> s = ev.kind("flash_crash")
>>> s.recall, s.precision, s.true_alerts, s.false_alerts, s.median_delay_s
(1.0, 0.5, 1, 1, 12.0)
"""

from __future__ import annotations

import gzip
import heapq
import math
import statistics
import zlib
from bisect import bisect_left, bisect_right
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Final

import msgspec

from streams.contracts import ALERT_KINDS, parse_ts

__all__ = [
    "MARKET_ALIASES",
    "MARKET_EVENT_KINDS",
    "Evaluation",
    "EvaluationError",
    "HaltStats",
    "KindStats",
    "LabelResult",
    "evaluate",
    "evaluate_dir",
    "format_table",
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


# --- results ---------------------------------------------------------------------------------


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


# --- parsed records ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Alert:
    idx: int
    alert_id: str | None
    ts: float
    ts_text: str
    kind: str
    instrument: str | None
    agents: frozenset[str]


@dataclass(frozen=True, slots=True)
class _Halt:
    ts: float
    instrument: str


@dataclass(frozen=True, slots=True)
class _Label:
    source: str
    kind: str
    start: float
    end: float
    t_start: str
    t_end: str
    instruments: tuple[str, ...]
    agents: tuple[str, ...]


class _Issues:
    """Malformed-input bookkeeping: a count and the first reasons per source."""

    def __init__(self) -> None:
        self.count = dict.fromkeys(SOURCES, 0)
        self.examples: dict[str, list[str]] = {s: [] for s in SOURCES}

    def add(self, source: str, where: str, reason: str) -> None:
        self.count[source] += 1
        if len(self.examples[source]) < MAX_EXAMPLES:
            self.examples[source].append(f"{where}: {reason}")


def _str_list(doc: Mapping[str, Any], key: str, *, required: bool) -> tuple[str, ...]:
    value = doc.get(key)
    if value is None and not required:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ValueError(f"{key} must be a list of non-empty strings, got {value!r:.60}")
    return tuple(value)


def _kind(doc: Mapping[str, Any]) -> str:
    kind = doc.get("kind")
    if not isinstance(kind, str) or not kind:
        raise ValueError(f"kind must be a non-empty string, got {kind!r:.60}")
    return kind


def _ts(doc: Mapping[str, Any], key: str) -> float:
    if key not in doc:
        raise ValueError(f"{key} is missing")
    try:
        return parse_ts(doc[key])
    except ValueError as exc:
        raise ValueError(f"{key}: {exc}") from None


def _parse_alert(doc: Mapping[str, Any], idx: int) -> _Alert:
    kind = _kind(doc)
    ts = _ts(doc, "ts")
    instrument = doc.get("instrument")
    if instrument is not None and not isinstance(instrument, str):
        raise ValueError(f"instrument must be a string or null, got {instrument!r:.60}")
    alert_id = doc.get("alert_id")
    return _Alert(idx, alert_id if isinstance(alert_id, str) and alert_id else None, ts,
                  str(doc["ts"]), kind, instrument or None,
                  frozenset(_str_list(doc, "agents", required=False)))


def _parse_halt(doc: Mapping[str, Any]) -> tuple[_Halt, bool, tuple[Any, ...] | None]:
    """The halt, whether it is a resumption, and its de-duplication key (or None)."""
    ts = _ts(doc, "ts")
    instrument, state = doc.get("instrument"), doc.get("state")
    if not isinstance(instrument, str) or not instrument:
        raise ValueError(f"instrument must be a non-empty string, got {instrument!r:.60}")
    if not isinstance(state, str) or not state:
        raise ValueError(f"state must be a non-empty string, got {state!r:.60}")
    seq = doc.get("seq")
    key = ((doc.get("venue"), instrument, seq)
           if isinstance(seq, int) and not isinstance(seq, bool) else None)
    return _Halt(ts, instrument), state == "TRADING", key


def _parse_label(doc: Mapping[str, Any], source: str) -> _Label:
    kind = _kind(doc)
    start, end = _ts(doc, "t_start"), _ts(doc, "t_end")
    if start > end:
        raise ValueError(f"t_start {doc['t_start']!r} is after t_end {doc['t_end']!r}")
    return _Label(source, kind, start, end, str(doc["t_start"]), str(doc["t_end"]),
                  _str_list(doc, "instruments", required=True),
                  _str_list(doc, "agents", required=True))


Record = tuple[str, Any]  # (where it came from, the decoded value)


def _as_mapping(value: Any) -> Mapping[str, Any]:
    if isinstance(value, msgspec.Struct):
        return msgspec.structs.asdict(value)
    if not isinstance(value, Mapping):
        raise ValueError(f"not a JSON object: {type(value).__name__}")
    return value


# --- the evaluation ----------------------------------------------------------------------------


def _check_params(grace_s: float,
                  aliases: Mapping[str, Collection[str]] | None) -> dict[str, tuple[str, ...]]:
    if isinstance(grace_s, bool) or not isinstance(grace_s, int | float) \
            or not math.isfinite(grace_s) or grace_s < 0:
        raise EvaluationError(f"grace_s must be a finite number >= 0, got {grace_s!r}")
    clean: dict[str, tuple[str, ...]] = {}
    for label_kind, alert_kinds in (aliases or {}).items():
        if not isinstance(label_kind, str) or isinstance(alert_kinds, str) or not all(
                isinstance(k, str) for k in alert_kinds):
            raise EvaluationError("aliases maps a label kind to a collection of alert kinds, "
                                  f"got {label_kind!r}: {alert_kinds!r}")
        extra = tuple(sorted(set(alert_kinds) - {label_kind}))
        if extra:
            clean[label_kind] = extra
    return clean


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 6) if values else None


def _kind_order(kinds: Iterable[str]) -> list[str]:
    known = {k: i for i, k in enumerate(ALERT_KINDS)}
    return sorted(set(kinds), key=lambda k: (known.get(k, len(known)), k))


def _alert_overlaps(label: _Label, alert: _Alert) -> bool:
    if not label.instruments and not label.agents:
        return True
    return (alert.instrument is not None and alert.instrument in label.instruments) \
        or not alert.agents.isdisjoint(label.agents)


def _halt_overlaps(label: _Label, halt: _Halt) -> bool:
    return halt.instrument == "*" or not label.instruments or halt.instrument in label.instruments


def evaluate(alerts: Iterable[Mapping[str, Any] | msgspec.Struct],
             halts: Iterable[Mapping[str, Any] | msgspec.Struct],
             labels: Iterable[Mapping[str, Any]], *, grace_s: float = 60.0,
             aliases: Mapping[str, Collection[str]] | None = None) -> Evaluation:
    """Score alerts and halts against labels (matching rules: see the module docstring).

    Parameters
    ----------
    alerts, halts
        alert/1 and halt/1 objects (mappings, or the ``Alert`` / ``Halt`` structs).
    labels
        Label objects (DESIGN §3.4).
    grace_s
        Seconds after ``t_end`` during which an alert or halt still counts.
    aliases
        Optional kind equivalences: label kind -> further alert kinds that detect it
        (e.g. :data:`MARKET_ALIASES`). Default: strict, kinds must be equal.

    Returns
    -------
    Evaluation
        Malformed records are skipped and reported in ``malformed`` / ``malformed_examples``.

    Examples
    --------
    >>> ev = evaluate([], [], [])
    >>> ev.overall.recall, ev.overall.precision, ev.halts.recall, ev.kinds
    (None, None, None, ())
    """
    return _evaluate([(f"alerts[{i}]", a) for i, a in enumerate(alerts)],
                     [(f"halts[{i}]", h) for i, h in enumerate(halts)],
                     [(f"labels[{i}]", lab) for i, lab in enumerate(labels)],
                     grace_s=grace_s, aliases=aliases, issues=_Issues())


def _evaluate(alert_recs: list[Record], halt_recs: list[Record], label_recs: list[Record], *,
              grace_s: float, aliases: Mapping[str, Collection[str]] | None,
              issues: _Issues) -> Evaluation:
    alias = _check_params(grace_s, aliases)
    grace = float(grace_s)
    dups = {"alerts": 0, "halts": 0}

    # -- parse, de-duplicate
    alerts: list[_Alert] = []
    seen_ids: set[str] = set()
    for where, value in alert_recs:
        try:
            alert = _parse_alert(_as_mapping(value), len(alerts))
        except ValueError as exc:
            issues.add("alerts", where, str(exc))
            continue
        if alert.alert_id is not None:
            if alert.alert_id in seen_ids:
                dups["alerts"] += 1
                continue
            seen_ids.add(alert.alert_id)
        alerts.append(alert)

    halt_list: list[_Halt] = []
    resumptions = 0
    seen_halts: set[tuple[Any, ...]] = set()
    for where, value in halt_recs:
        try:
            halt, resumption, key = _parse_halt(_as_mapping(value))
        except ValueError as exc:
            issues.add("halts", where, str(exc))
            continue
        if key is not None:
            if key in seen_halts:
                dups["halts"] += 1
                continue
            seen_halts.add(key)
        if resumption:
            resumptions += 1
        else:
            halt_list.append(halt)

    labels: list[_Label] = []
    for where, value in label_recs:
        try:
            labels.append(_parse_label(_as_mapping(value), where))
        except ValueError as exc:
            issues.add("labels", where, str(exc))

    # -- index alerts by kind and halts by time (stable sorts: ties keep input order)
    by_kind: dict[str, tuple[list[float], list[_Alert]]] = {}
    for kind in {a.kind for a in alerts}:
        group = sorted((a for a in alerts if a.kind == kind), key=lambda a: a.ts)
        by_kind[kind] = ([a.ts for a in group], group)
    halts_sorted = sorted(halt_list, key=lambda h: h.ts)
    halt_ts = [h.ts for h in halts_sorted]

    # -- match, label by label
    true_alert = [False] * len(alerts)
    halt_on_event = [False] * len(halts_sorted)
    results: list[LabelResult] = []
    for label in labels:
        hi_t = label.end + grace
        first: _Alert | None = None
        n_alerts = 0
        for kind in (label.kind, *alias.get(label.kind, ())):
            ts_list, group = by_kind.get(kind, ([], []))
            for alert in group[bisect_left(ts_list, label.start):bisect_right(ts_list, hi_t)]:
                if _alert_overlaps(label, alert):
                    n_alerts += 1
                    true_alert[alert.idx] = True
                    if first is None or (alert.ts, alert.idx) < (first.ts, first.idx):
                        first = alert
        market = label.kind in MARKET_EVENT_KINDS
        n_halts, first_halt = 0, None
        if market:
            lo, hi = bisect_left(halt_ts, label.start), bisect_right(halt_ts, hi_t)
            for j in range(lo, hi):
                if _halt_overlaps(label, halts_sorted[j]):
                    n_halts += 1
                    halt_on_event[j] = True
                    if first_halt is None:
                        first_halt = halts_sorted[j]
        results.append(LabelResult(
            source=label.source, kind=label.kind, t_start=label.t_start, t_end=label.t_end,
            instruments=label.instruments, agents=label.agents, matching_alerts=n_alerts,
            first_alert_id=first.alert_id if first else None,
            delay_s=round(first.ts - label.start, 6) if first else None,
            market_event=market, matching_halts=n_halts,
            halt_delay_s=round(first_halt.ts - label.start, 6) if first_halt else None))

    # -- per kind and overall
    rows: list[KindStats] = []
    for kind in _kind_order([lab.kind for lab in labels] + [a.kind for a in alerts]):
        mine = [r for r in results if r.kind == kind]
        delays = [r.delay_s for r in mine if r.delay_s is not None]
        group = by_kind.get(kind, ([], []))[1]
        n_true = sum(true_alert[a.idx] for a in group)
        rows.append(KindStats(kind=kind, labels=len(mine), detected=len(delays),
                              alerts=len(group), true_alerts=n_true,
                              false_alerts=len(group) - n_true,
                              recall=_ratio(len(delays), len(mine)),
                              precision=_ratio(n_true, len(group)), median_delay_s=_median(delays)))
    all_delays = [r.delay_s for r in results if r.delay_s is not None]
    n_true = sum(true_alert)
    overall = KindStats(kind="overall", labels=len(results), detected=len(all_delays),
                        alerts=len(alerts), true_alerts=n_true, false_alerts=len(alerts) - n_true,
                        recall=_ratio(len(all_delays), len(results)),
                        precision=_ratio(n_true, len(alerts)), median_delay_s=_median(all_delays))

    market_results = [r for r in results if r.market_event]
    halt_delays = [r.halt_delay_s for r in market_results if r.halt_delay_s is not None]
    on_events = sum(halt_on_event)
    halt_stats = HaltStats(
        halts=len(halts_sorted), on_market_events=on_events,
        false_halts=len(halts_sorted) - on_events,
        precision=_ratio(on_events, len(halts_sorted)),
        market_event_labels=len(market_results), market_event_labels_halted=len(halt_delays),
        recall=_ratio(len(halt_delays), len(market_results)),
        median_delay_s=_median(halt_delays), resumptions=resumptions)

    false_examples = tuple(
        {"alert_id": a.alert_id, "kind": a.kind, "ts": a.ts_text, "instrument": a.instrument}
        for a in heapq.nsmallest(MAX_FALSE_ALERT_EXAMPLES,
                                 (a for a in alerts if not true_alert[a.idx]),
                                 key=lambda a: (a.ts, a.idx)))
    return Evaluation(
        grace_s=grace, aliases=alias, kinds=tuple(rows), overall=overall, halts=halt_stats,
        labels=tuple(results), false_alert_examples=false_examples,
        malformed=dict(issues.count),
        malformed_examples={s: tuple(v) for s, v in issues.examples.items()},
        duplicates=dups)


# --- files -------------------------------------------------------------------------------------


def _open(path: Path) -> IO[bytes] | gzip.GzipFile:
    if path.name.endswith(".gz"):
        return gzip.open(path, "rb")
    return path.open("rb")


def _read_jsonl(path: Path, source: str, issues: _Issues) -> list[Record]:
    """Decoded lines of a JSON-lines file; undecodable lines go to ``issues``."""
    records: list[Record] = []
    try:
        with _open(path) as f:
            for lineno, line in enumerate(f, 1):
                line = line.strip(b" \t\r\n")
                if not line:
                    continue
                where = f"{path.name}:{lineno}"
                try:
                    records.append((where, msgspec.json.decode(line)))
                except (msgspec.DecodeError, UnicodeDecodeError) as exc:
                    issues.add(source, where, f"bad JSON: {exc}")
    except (OSError, EOFError, zlib.error) as exc:  # unreadable, or a broken .gz
        raise EvaluationError(f"{path}: cannot read: {exc}") from None
    return records


def _find(out_dir: Path, stem: str) -> Path:
    for name in (f"{stem}.jsonl", f"{stem}.jsonl.gz"):
        if (out_dir / name).is_file():
            return out_dir / name
    raise EvaluationError(f"{out_dir}: no {stem}.jsonl (is it the --out directory of "
                          "`surveil backtest`?)")


def evaluate_dir(out_dir: Path | str, labels_path: Path | str, *, grace_s: float = 60.0,
                 aliases: Mapping[str, Collection[str]] | None = None) -> Evaluation:
    """Evaluate the output directory of ``surveil backtest`` against a labels file.

    Reads ``out_dir/alerts.jsonl`` and ``out_dir/halts.jsonl`` (or ``.jsonl.gz``) and
    ``labels_path``. Malformed lines are reported in the result, never fatal; a missing
    directory or file raises :class:`EvaluationError`.

    Examples
    --------
    >>> evaluate_dir("/nonexistent-dir", "labels.jsonl")
    Traceback (most recent call last):
    ...
    replay.evaluate.EvaluationError: /nonexistent-dir: no such directory
    """
    out_dir, labels_path = Path(out_dir), Path(labels_path)
    if not out_dir.is_dir():
        raise EvaluationError(f"{out_dir}: no such directory")
    alerts_path, halts_path = _find(out_dir, "alerts"), _find(out_dir, "halts")
    if not labels_path.is_file():
        raise EvaluationError(f"{labels_path}: no such labels file")
    issues = _Issues()
    return _evaluate(_read_jsonl(alerts_path, "alerts", issues),
                     _read_jsonl(halts_path, "halts", issues),
                     _read_jsonl(labels_path, "labels", issues),
                     grace_s=grace_s, aliases=aliases, issues=issues)


# --- the table ---------------------------------------------------------------------------------


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def _secs(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.1f} s"


_HEADER: Final = ("kind", "labels", "detected", "recall", "alerts", "true", "false",
                  "precision", "median delay")


def _row(k: KindStats) -> tuple[str, ...]:
    return (k.kind, str(k.labels), str(k.detected), _pct(k.recall), str(k.alerts),
            str(k.true_alerts), str(k.false_alerts), _pct(k.precision), _secs(k.median_delay_s))


def format_table(ev: Evaluation) -> str:
    """A plain-text report: one line per kind, the overall line, halts, missed labels, hygiene.

    Examples
    --------
    >>> print(format_table(evaluate([], [], [])))  # doctest: +NORMALIZE_WHITESPACE
    kind     labels  detected  recall  alerts  true  false  precision  median delay
    overall       0         0     n/a       0     0      0        n/a           n/a
    halts: 0 (on market events 0, false 0, precision n/a); resumptions 0
    market-event labels halted: 0/0 (recall n/a); median halt delay n/a
    matching: grace 60 s after t_end; kinds strict
    """
    table = [_HEADER, *(_row(k) for k in ev.kinds), _row(ev.overall)]
    widths = [max(len(r[i]) for r in table) for i in range(len(_HEADER))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                       for i, (c, w) in enumerate(zip(r, widths, strict=True))).rstrip()
             for r in table]
    h = ev.halts
    lines.append(f"halts: {h.halts} (on market events {h.on_market_events}, false "
                 f"{h.false_halts}, precision {_pct(h.precision)}); resumptions {h.resumptions}")
    lines.append(f"market-event labels halted: {h.market_event_labels_halted}/"
                 f"{h.market_event_labels} (recall {_pct(h.recall)}); median halt delay "
                 f"{_secs(h.median_delay_s)}")
    kinds = ("kinds strict" if not ev.aliases else "aliases " + "; ".join(
        f"{k} <- {', '.join(v)}" for k, v in sorted(ev.aliases.items())))
    lines.append(f"matching: grace {ev.grace_s:g} s after t_end; {kinds}")
    missed = [r for r in ev.labels if not r.detected]
    if missed:
        lines.append(f"missed labels: {len(missed)}")
        lines.extend(f"  {r.source} {r.kind} {r.t_start}..{r.t_end} instruments "
                     f"{list(r.instruments)} agents {list(r.agents)}" for r in missed[:10])
    if any(ev.duplicates.values()):
        lines.append(f"duplicates skipped: alerts {ev.duplicates.get('alerts', 0)}, halts "
                     f"{ev.duplicates.get('halts', 0)}")
    if any(ev.malformed.values()):
        lines.append("malformed (skipped): " + ", ".join(
            f"{s} {ev.malformed.get(s, 0)}" for s in SOURCES))
        lines.extend(f"  {e}" for s in SOURCES for e in ev.malformed_examples.get(s, ()))
    return "\n".join(lines)
