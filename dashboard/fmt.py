"""The one place numbers and times become text: every page, table caption and chart tooltip
rounds through here, once, so one figure never reads 64.5 in one place and 65 in another.

>>> num(9.200000000000001), num(64.5), num(0.123456), num(12345.678), num(3), num(None)
('9.2', '64.5', '0.1235', '12,346', '3', '—')
>>> pct(0.12345), change(-0.0238), score(64.5), money(1234.5)
('12.3%', '-2.38%', '65', '1,234.50')
>>> tidy({"move_pct": 12.300000000000001, "ids": ["t1"], "n": 2.0})
{'move_pct': 12.3, 'ids': ['t1'], 'n': 2}
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any, Final

__all__ = ["DASH", "change", "duration", "money", "num", "pct", "round_sig", "score", "tidy",
           "when"]

DASH: Final = "—"
SIG: Final = 4  # significant digits of a plain number


def _missing(x: Any) -> bool:
    return x is None or (isinstance(x, float) and not math.isfinite(x))


def round_sig(x: float, sig: int = SIG) -> float:
    """``x`` rounded to ``sig`` significant digits (integers of that size stay whole)."""
    if x == 0 or not math.isfinite(x):
        return x
    digits = max(0, sig - 1 - math.floor(math.log10(abs(x))))
    return round(x, min(digits, 8))


def num(x: Any, sig: int = SIG) -> str:
    """A number with ``sig`` significant digits, thousands separated, no trailing zeros."""
    if _missing(x):
        return DASH
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return f"{x:,}"
    value = round_sig(float(x), sig)
    digits = max(0, sig - 1 - math.floor(math.log10(abs(value)))) if value else 0
    text = f"{value:,.{min(digits, 8)}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def pct(share: Any, decimals: int = 1) -> str:
    """A share (0–1) as a percentage."""
    return DASH if _missing(share) else f"{float(share) * 100:.{decimals}f}%"


def change(ratio: Any) -> str:
    """A relative change (0.012 = +1.2 %) with its sign."""
    return DASH if _missing(ratio) else f"{float(ratio) * 100:+.2f}%"


def score(x: Any) -> str:
    """An alert score (0–100), whole."""
    return DASH if _missing(x) else f"{math.floor(float(x) + 0.5):d}"


def money(x: Any) -> str:
    """A notional amount with two decimals."""
    return DASH if _missing(x) else f"{float(x):,.2f}"


def when(ts: datetime | None, *, seconds: bool = True) -> str:
    """A UTC time as the desk shows it."""
    if ts is None:
        return DASH
    return ts.strftime("%Y-%m-%d %H:%M:%S UTC" if seconds else "%Y-%m-%d %H:%M UTC")


def duration(seconds: float | None) -> str:
    """``75`` → ``1 min 15 s``; ``None`` → ``—``."""
    if seconds is None or not math.isfinite(seconds):
        return DASH
    s = max(0, round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    if s < 86_400:
        return f"{s // 3600} h {s % 3600 // 60} min"
    return f"{s // 86_400} d {s % 86_400 // 3600} h"


def tidy(value: Any) -> Any:
    """Evidence (any JSON) with every float rounded to :data:`SIG` significant digits."""
    if isinstance(value, dict):
        return {k: tidy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [tidy(v) for v in value]
    if isinstance(value, float) and math.isfinite(value):
        r = round_sig(value)
        return int(r) if r.is_integer() and abs(r) < 1e15 else r
    return value
