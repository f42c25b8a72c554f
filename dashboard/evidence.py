"""An alert's evidence in words: the thresholds it crossed, read like a case file.

Detectors put their numbers in ``evidence`` (DESIGN §3.5); this module knows the common shapes
(a move against a threshold, ratios against ``thresholds``, a ``crossed`` list, registry facts)
and says them in sentences, rounding through :mod:`dashboard.fmt` only.

>>> for line in findings({"trigger": "VELOCITY", "move_pct": 12.34, "threshold_pct": 10.0,
...                        "reference_price": 2.5, "trades_in_window": 14}):
...     print(line)
The price moved 12.34% where the velocity threshold is 10% (1.234× the threshold), over 14
trades; reference price 2.5.
>>> for line in findings({"crossed": ["level", "variance"], "level_ratio": 1.23,
...                       "variance_ratio": 0.31, "thresholds": {"level": 1.1, "variance": 2.0}}):
...     print(line)
Crossed level: 1.23 against a threshold of 1.1.
Crossed variance: 0.31 against a threshold of 2.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dashboard.fmt import num

__all__ = ["facts", "findings"]

_RATIO_KEYS = ("{k}_ratio", "{k}", "{k}_corr", "parallel_corr")


def findings(ev: Mapping[str, Any]) -> list[str]:
    """Sentences saying which thresholds the evidence crossed, and by how much."""
    out: list[str] = []
    move, thr = ev.get("move_pct"), ev.get("threshold_pct")
    if isinstance(move, int | float) and isinstance(thr, int | float) and thr:
        trigger = str(ev.get("trigger") or "").lower().replace("_", " ")
        sentence = (f"The price moved {num(move)}% where the {trigger + ' ' if trigger else ''}"
                    f"threshold is {num(thr)}% ({num(abs(move) / thr)}× the threshold)")
        if ev.get("trades_in_window"):
            sentence += f", over {num(ev['trades_in_window'])} trades"
        if ev.get("reference_price") is not None:
            sentence += f"; reference price {num(ev['reference_price'])}"
        out.append(sentence + ".")
    thresholds = ev.get("thresholds")
    crossed = ev.get("crossed")
    if isinstance(thresholds, Mapping):
        names = crossed if isinstance(crossed, list) else []
        for name in names:
            limit = thresholds.get(name)
            value = next((ev[p.format(k=name)] for p in _RATIO_KEYS
                          if isinstance(ev.get(p.format(k=name)), int | float)), None)
            if value is not None and limit is not None:
                out.append(f"Crossed {name}: {num(value)} against a threshold of {num(limit)}.")
            else:
                out.append(f"Crossed {name}" + (f" (threshold {num(limit)})."
                                                if limit is not None else "."))
        if not names:
            out.append("Thresholds: " + ", ".join(f"{k} {num(v)}" for k, v in thresholds.items()
                                                  if isinstance(v, int | float)) + ".")
    lockstep = ev.get("lockstep")
    if isinstance(lockstep, Mapping) and lockstep.get("moments"):
        out.append(f"Traded in lockstep {num(lockstep['moments'])} times over "
                   f"{num(lockstep.get('windows') or 0)} windows.")
    if ev.get("signals"):
        signals = ev["signals"]
        out.append("Signals: " + (", ".join(map(str, signals)) if isinstance(signals, list)
                                  else str(signals)) + ".")
    return out


def facts(ev: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The scalar figures of the evidence (nested one level), formatted once, for a table."""
    rows: list[tuple[str, str]] = []
    for key, value in ev.items():
        if key in ("edges", "trade_ids", "thresholds", "crossed"):
            continue
        if isinstance(value, Mapping):
            for k, v in value.items():
                if isinstance(v, int | float | str | bool) or v is None:
                    rows.append((f"{key} · {k}", num(v) if not isinstance(v, str) else v))
        elif isinstance(value, list):
            rows.append((key, ", ".join(num(v) if isinstance(v, int | float) else str(v)
                                        for v in value[:12]) + (" …" if len(value) > 12 else "")))
        else:
            rows.append((key, value if isinstance(value, str) else num(value)))
    return rows
