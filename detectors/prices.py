"""Stage 2's price board: stage 1's 5-second price buckets merged over partitions.

Stage 1 closes a price bucket per (instrument, ``tick_s`` seconds of event time) on its own
watermark and publishes the closed ones as :class:`~detectors.flows.PriceBatch` records on
``flows``. :class:`PriceBoard` (one per venue) merges them and, when the venue watermark passes a
bucket's end, hands the cross-market detectors one :class:`~detectors.venue_base.PriceBucket`
with every instrument that traded in it.

- **Redelivery.** A row is identified by ``(partition, instrument, start, seq)``; a repeat is
  counted (``duplicates``) and changes nothing.
- **Late rows.** A late trade reaches stage 1 after its bucket was published: stage 1 publishes
  an amendment (``seq`` + 1). When it arrives before the venue watermark closes the bucket, it
  is merged: sums add up, high and low widen, first and last prices stay those of the lowest
  ``seq`` (the amendment's trades are older than the bucket's last price). After the bucket
  closed it is counted (``late``) and dropped.
- **Determinism.** Rows are merged at close in ``(instrument, partition, seq)`` order, so the
  arrival order of partitions does not matter.
- **Bounds.** At most ``max_rows`` rows wait for the watermark; beyond, rows are refused and
  counted (``refused``): a flood of instruments cannot grow the board.

>>> from detectors.flows import PriceBatch
>>> board = PriceBoard("v", tick_s=5.0)
>>> batch = PriceBatch(venue="v", partition=0, tick_s=5.0,
...                    ticks=[["GPU", 0.0, 0, 10.0, 9.0, 10.5, 8.5, 3.0, 28.0, 2]])
>>> board.add(batch), board.add(batch), board.stats["duplicates"]
(1, 0, 1)
>>> [b] = board.close(5.0)
>>> b.start, b.ticks["GPU"].last, b.ticks["GPU"].trades
(0.0, 9.0, 2)
"""

from __future__ import annotations

import math
from typing import Any

from detectors.flows import PriceBatch
from detectors.venue_base import PriceBucket, Tick

__all__ = ["PriceBoard"]


class PriceBoard:
    """Merged price buckets of one venue, closed on the venue watermark."""

    def __init__(self, venue: str, *, tick_s: float = 5.0, max_rows: int = 500_000) -> None:
        self.venue, self.tick_s, self.max_rows = venue, tick_s, max_rows
        self.watermark = -math.inf
        self.stats = dict.fromkeys(("rows", "duplicates", "late", "refused", "malformed"), 0)
        #: start -> {(partition, instrument, seq): row}
        self._open: dict[float, dict[tuple[int, str, int], list[Any]]] = {}
        self._rows = 0

    def add(self, batch: PriceBatch) -> int:
        """Merge a stage-1 batch; returns the rows taken."""
        if batch.venue != self.venue or not math.isclose(batch.tick_s, self.tick_s):
            self.stats["malformed"] += len(batch.ticks)
            return 0
        taken = 0
        for row in batch.ticks:
            try:
                inst, start, seq = str(row[0]), float(row[1]), int(row[2])
                vals = [float(x) for x in row[3:9]] + [int(row[9])]
            except (IndexError, TypeError, ValueError):
                self.stats["malformed"] += 1
                continue
            if not all(math.isfinite(x) for x in vals) or not math.isfinite(start):
                self.stats["malformed"] += 1
                continue
            if start + self.tick_s <= self.watermark:
                self.stats["late"] += 1
                continue
            bucket = self._open.get(start)
            key = (batch.partition, inst, seq)
            if bucket is not None and key in bucket:
                self.stats["duplicates"] += 1
                continue
            if self._rows >= self.max_rows:
                self.stats["refused"] += 1
                continue
            if bucket is None:
                bucket = self._open[start] = {}
            bucket[key] = vals
            self._rows += 1
            taken += 1
        self.stats["rows"] += taken
        return taken

    def close(self, watermark: float) -> list[PriceBucket]:
        """Every bucket ending at or before ``watermark``, in order of start."""
        self.watermark = max(self.watermark, watermark)
        out = []
        for start in sorted(s for s in self._open if s + self.tick_s <= self.watermark):
            rows = self._open.pop(start)
            self._rows -= len(rows)
            ticks: dict[str, Tick] = {}
            for (_, inst, _), v in sorted(rows.items(), key=lambda kv: (kv[0][1], kv[0][0],
                                                                       kv[0][2])):
                old = ticks.get(inst)
                if old is None:
                    ticks[inst] = Tick(v[0], v[1], v[2], v[3], v[4], v[5], int(v[6]))
                else:
                    ticks[inst] = Tick(old.first, old.last, max(old.high, v[2]),
                                       min(old.low, v[3]), old.volume + v[4],
                                       old.notional + v[5], old.trades + int(v[6]))
            out.append(PriceBucket(self.venue, start, start + self.tick_s, ticks))
        return out
