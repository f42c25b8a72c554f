"""Warnings about hostile or failing input, without flooding the log.

>>> import logging
>>> t = ThrottledLog(logging.getLogger("demo"), every_s=60.0)
>>> t.warning("bad", "first: %s", 1)   # logged
>>> t.warning("bad", "second: %s", 2)  # counted, reported with the next one after a minute
>>> t.quiet["bad"]
1
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from typing import Any

__all__ = ["ThrottledLog"]


class ThrottledLog:
    """Log the first problem of each sort at once, then at most one a ``every_s`` seconds, with
    the count of those left unlogged since."""

    def __init__(self, log: logging.Logger, every_s: float = 60.0) -> None:
        self.log, self.every_s = log, every_s
        self._next: dict[str, float] = {}
        self.quiet: Counter[str] = Counter()

    def warning(self, sort: str, msg: str, *args: Any) -> None:
        now = time.monotonic()
        if now < self._next.get(sort, 0.0):
            self.quiet[sort] += 1
            return
        self._next[sort] = now + self.every_s
        quiet = self.quiet.pop(sort, 0)
        self.log.warning(msg + (f" (and {quiet} more like it since the last report)" if quiet
                                else ""), *args)
