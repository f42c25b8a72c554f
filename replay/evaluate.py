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

Code layout: this module is the public import path; the parts live in
:mod:`replay.evaluate_inputs` (reading and parsing), :mod:`replay.evaluate_scoring` (matching
and metrics), :mod:`replay.evaluate_results` (result records, constants) and
:mod:`replay.evaluate_table` (the text report).

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

from collections.abc import Collection, Iterable, Mapping
from pathlib import Path
from typing import Any

import msgspec

from replay.evaluate_inputs import _find, _Issues, _read_jsonl
from replay.evaluate_results import (
    MARKET_ALIASES,
    MARKET_EVENT_KINDS,
    Evaluation,
    EvaluationError,
    HaltStats,
    KindStats,
    LabelResult,
)
from replay.evaluate_scoring import _evaluate
from replay.evaluate_table import format_table

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
