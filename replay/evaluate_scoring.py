"""Matching alerts and halts to labels, and the metrics (rules: :mod:`replay.evaluate`).

Internal to :mod:`replay.evaluate`: :func:`_evaluate` takes decoded records, parses and
de-duplicates them, matches them label by label and computes per-kind, overall and halt metrics.
"""

from __future__ import annotations

import heapq
import math
import statistics
from bisect import bisect_left, bisect_right
from collections.abc import Collection, Iterable, Mapping
from typing import Any

from replay.evaluate_inputs import (
    Record,
    _Alert,
    _as_mapping,
    _Halt,
    _Issues,
    _Label,
    _parse_alert,
    _parse_halt,
    _parse_label,
)
from replay.evaluate_results import (
    MARKET_EVENT_KINDS,
    MAX_FALSE_ALERT_EXAMPLES,
    Evaluation,
    EvaluationError,
    HaltStats,
    KindStats,
    LabelResult,
)
from streams.contracts import ALERT_KINDS

__all__: list[str] = []


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
