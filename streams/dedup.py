"""Bounded memory of recently seen trade ids, for "duplicates are processed once".

Redelivery after a failure never reaches the detectors twice (the engine restores its state
together with the offsets it reflects and skips what that state already holds), so this set only
catches duplicates *inside* the input: a producer that retried a send, an exchange republishing
after a reconnect, a tape with repeated rows.

Memory is bounded twice: by event time (ids of trades older than ``horizon_s`` behind the newest
time seen are forgotten — such a duplicate is late anyway and the engine's lateness rule sends it
to the dead-letter topic instead of judging it again) and by count (``capacity``). Ids are kept as
``(venue, trade_id)`` pairs (strings pickle the same in every process, unlike ``hash()`` values),
so a checkpoint restored elsewhere recognises the same duplicates.

>>> seen = RecentIds(horizon_s=60.0, capacity=3)
>>> [seen.add("v", t, ts) for t, ts in [("a", 0.0), ("b", 1.0), ("a", 2.0)]]
[True, True, False]
>>> seen.add("v", "c", 100.0), "a" in [k for k in "abc" if seen.seen("v", k)]
(True, False)
"""

from __future__ import annotations

from collections import deque

__all__ = ["RecentIds"]

Key = tuple[str, str]


class RecentIds:
    """Ids seen within ``horizon_s`` of event time, at most ``capacity`` of them."""

    __slots__ = ("capacity", "horizon_s", "newest", "order", "stamps")

    def __init__(self, *, horizon_s: float = 120.0, capacity: int = 200_000) -> None:
        self.horizon_s = horizon_s
        self.capacity = capacity
        self.stamps: dict[Key, float] = {}
        self.order: deque[Key] = deque()
        self.newest = float("-inf")

    def add(self, venue: str, trade_id: str, ts: float) -> bool:
        """Remember the id; False when it was seen already (a duplicate)."""
        key = (venue, trade_id)
        if key in self.stamps:
            return False
        self.stamps[key] = ts
        self.order.append(key)
        if ts > self.newest:
            self.newest = ts
        self._prune()
        return True

    def settle(self, newest: float) -> None:
        """Prune after ids were added directly to ``stamps``/``order`` (the engine's hot loop
        does so and calls this once per batch, so the bound may be passed by one batch);
        ``newest`` is the latest ts among them."""
        if newest > self.newest:
            self.newest = newest
        self._prune()

    def seen(self, venue: str, trade_id: str) -> bool:
        return (venue, trade_id) in self.stamps

    def _prune(self) -> None:
        order, stamps = self.order, self.stamps
        horizon = self.newest - self.horizon_s
        while order and (len(order) > self.capacity or stamps[order[0]] < horizon):
            del stamps[order.popleft()]

    def __len__(self) -> int:
        return len(self.order)
