"""The plain-text report of an :class:`~replay.evaluate.Evaluation` (``surveil evaluate``).

Import :func:`format_table` from :mod:`replay.evaluate`.
"""

from __future__ import annotations

from typing import Final

from replay.evaluate_results import SOURCES, Evaluation, KindStats

__all__ = ["format_table"]


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
    >>> from replay.evaluate import evaluate
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
