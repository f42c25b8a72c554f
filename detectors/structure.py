"""Stage 2 market structure: concentration, new entrants and pair dominance per window.

:class:`MarketStructure` (one per venue) merges the stage 1 :class:`~detectors.flows.WindowSummary`
messages of every partition into (instrument, window) buckets. When the venue watermark passes a
window's end, it closes the bucket and returns one :class:`StructureMetrics`:

- ``hhi``: Herfindahl–Hirschman index (0–10000) of the traders' shares of ``2 × volume``, where
  an agent's volume is its bought plus sold quantity. ``top5_share`` is the share of the five
  largest traders.
- ``new_entrant_share``: share of ``2 × volume`` traded by agents first seen less than
  ``new_entrant_s`` before the window start. When the registry (:meth:`observe_agent`) gives a
  ``created_ts``, the agent counts as new if it was created within that horizon instead.
- ``counterparty_hhi``: volume-weighted mean over agents of the HHI of each agent's counterparties'
  shares of its volume. 10000 means everyone trades with a single counterparty.
- ``top_pair_share``: largest unordered buyer–seller pair's share of volume.
  ``self_trade_share``: share of volume with buyer == seller.

Pairwise figures come from the tracked pairs, and trader figures from the tracked agents. When
stage 1 truncated a summary, or this stage shed one, ``truncated`` is set. In that case
``hhi``, ``top5_share``, ``new_entrant_share`` and the pair shares are lower bounds.

Determinism: a bucket keeps its summaries and aggregates them at close in (partition, seq)
order. The metrics therefore do not depend on the order in which partitions delivered them,
floating-point sums included. A summary whose ``key`` was already merged is a redelivery and is
ignored. A summary for a closed window is counted in ``stats["late"]``.

Bounds (nothing grows with the number of distinct agents ever seen):

- First-seen times are kept for at most ``max_agents`` agents. When the table is full,
  eviction starts with agents seen in a single bucket, oldest first, then moves to the least
  recently seen. Agents of the bucket being closed are spared.
- Evicted ids go into a Bloom filter, so a returning agent is not taken for a new entrant. The
  filter has two generations of ``bloom_bits`` bits each, seven blake2b-keyed hashes
  (deterministic across processes; no ``hash()``) and ``bloom_bits / 16`` ids per generation
  (false positives under 0.1%). When a generation fills, the older one is dropped, so a flood of
  ids cannot saturate the filter. rbloom was considered and not used: its default hash is
  Python's salted ``hash()``, and a per-item Python hash callback would cost as much as this code.
- Open buckets are capped at ``max_open_windows``. Their summaries are capped at
  ``max_open_entries`` entries in all, counting one per summary, pair and agent. Beyond that a
  summary's pairs and agents are shed (``stats["shed"]``) and a new bucket is refused
  (``stats["refused"]``). Only this overload case makes the results depend on arrival order,
  and such metrics are flagged ``truncated``. Registry facts live in an
  :class:`~detectors.registry.AgentBook` (capped at ``max_registry`` entries, least recently
  updated first), which stage 2 shares between its venues.

Examples
--------
>>> from detectors.base import TradeColumns
>>> from detectors.flows import FlowWindows
>>> rows = [(1.0, "t1", 2.0, 3.0, "a", "b"), (2.0, "t2", 2.0, 1.0, "c", "b")]
>>> fw = FlowWindows("v", "GPU", window_s=60.0)
>>> fw.update(TradeColumns.from_rows("v", "GPU", rows))
>>> ms = MarketStructure("v", window_s=60.0)
>>> [ms.add(s) for s in fw.flush()]
[True]
>>> [m] = ms.advance(60.0)
>>> m.agents, m.hhi, m.top5_share, m.new_entrants, m.top_pair_share, m.counterparty_hhi
(3, 4062.5, 1.0, 3, 0.75, 8125.0)
>>> structure_summary(m)
'GPU 00:00–00:01: 3 traders, HHI 4062, top 5 hold 100% of volume, new entrants 100%'
"""

from __future__ import annotations

import hashlib
import heapq
import math
from collections import OrderedDict
from datetime import UTC, datetime

import msgspec
import numpy as np

from detectors.flows import AgentActivity, PairFlow, WindowSummary
from detectors.registry import AgentBook
from detectors.venue_base import AgentFacts, WindowView

__all__ = ["MarketStructure", "StructureMetrics", "structure_summary"]

SCHEMA = "structure/1"


class StructureMetrics(msgspec.Struct, kw_only=True, gc=False):
    """Market-structure figures of one (venue, instrument, window); shares are 0–1."""

    schema: str = SCHEMA
    venue: str
    instrument: str
    window_start: float
    window_end: float
    trades: int
    volume: float
    notional: float
    agents: int
    hhi: float
    top5_share: float
    new_entrant_share: float
    new_entrants: int
    counterparty_hhi: float
    top_pair_share: float
    self_trade_share: float
    partitions: int
    truncated: bool

    @property
    def key(self) -> str:
        return f"{self.venue}|{self.instrument}|{self.window_start}"


def structure_summary(m: StructureMetrics) -> str:
    """One plain sentence for people."""
    t0, t1 = (datetime.fromtimestamp(t, UTC) for t in (m.window_start, m.window_end))
    fmt = "%H:%M" if m.window_start % 60 == 0 and m.window_end % 60 == 0 else "%H:%M:%S"
    cut = " (truncated)" if m.truncated else ""
    return (f"{m.instrument} {t0:{fmt}}–{t1:{fmt}}: {m.agents} traders, HHI {m.hhi:.0f}, top 5 "
            f"hold {m.top5_share:.0%} of volume, new entrants {m.new_entrant_share:.0%}{cut}")


class _Bloom:
    """Two-generation Bloom filter over packed numpy bits, keyed blake2b hashes."""

    def __init__(self, bits: int, seed: int, hashes: int = 7) -> None:
        self.bits = 1 << max(6, (bits - 1).bit_length())  # a power of two: masks, not modulo
        self.hashes, self.capacity = hashes, self.bits // 16
        self.key = f"structure/{seed}".encode()
        self.cur = np.zeros(self.bits // 8, np.uint8)
        self.old = np.zeros(self.bits // 8, np.uint8)
        self.n = 0

    def _bits(self, items: list[str]) -> tuple[np.ndarray, np.ndarray]:
        keyed, digests = hashlib.blake2b(digest_size=16, key=self.key), []
        for x in items:
            h = keyed.copy()  # cheaper than keying a new hasher
            h.update(x.encode())
            digests.append(h.digest())
        raw = b"".join(digests)
        hh = np.frombuffer(raw, dtype="<u8").reshape(-1, 2)
        pos = (hh[:, :1] + np.arange(self.hashes, dtype=np.uint64) * (hh[:, 1:] | 1)) \
            & np.uint64(self.bits - 1)
        return pos >> np.uint64(3), (pos & np.uint64(7)).astype(np.uint8)

    def add(self, items: list[str]) -> None:
        for i in range(0, len(items), self.capacity):
            chunk = items[i:i + self.capacity]
            if self.n + len(chunk) > self.capacity:
                self.old, self.cur, self.n = self.cur, np.zeros_like(self.cur), 0
            byte, bit = self._bits(chunk)
            np.bitwise_or.at(self.cur, byte.ravel(), np.left_shift(1, bit.ravel()).astype(
                np.uint8))
            self.n += len(chunk)

    def contains(self, items: list[str]) -> list[bool]:
        if not items:
            return []
        byte, bit = self._bits(items)
        hit = ((self.cur[byte] >> bit) & 1).all(axis=1) | ((self.old[byte] >> bit) & 1).all(axis=1)
        return [bool(x) for x in hit]


class _Bucket:
    __slots__ = ("entries", "instrument", "keys", "shed", "start", "summaries")

    def __init__(self, instrument: str, start: float) -> None:
        self.instrument, self.start = instrument, start
        self.summaries: list[WindowSummary] = []
        self.keys: set[str] = set()
        self.entries, self.shed = 0, False


class MarketStructure:
    """Venue-wide market-structure metrics per (instrument, window), closed on the watermark."""

    def __init__(self, venue: str, *, window_s: float = 60.0, new_entrant_s: float = 86_400.0,
                 max_agents: int = 200_000, max_open_windows: int = 4096,
                 max_open_entries: int = 500_000, max_registry: int = 200_000,
                 bloom_bits: int = 1 << 23, seed: int = 0,
                 registry: AgentBook | None = None) -> None:
        self.venue, self.window_s, self.new_entrant_s = venue, window_s, new_entrant_s
        self.max_agents, self.max_open_windows = max_agents, max_open_windows
        self.max_open_entries, self.max_registry = max_open_entries, max_registry
        self.bloom_bits, self.seed = bloom_bits, seed
        self.watermark = -math.inf
        self.stats = dict.fromkeys(
            ("merged", "duplicates", "late", "refused", "shed", "evicted"), 0)
        self._open: dict[tuple[str, float], _Bucket] = {}
        self._entries = 0
        #: agent -> first seen (-inf: seen before eviction); seen in one bucket, oldest first
        self._once: OrderedDict[str, float] = OrderedDict()
        #: the same for agents seen in several buckets, least recently seen first
        self._multi: OrderedDict[str, float] = OrderedDict()
        self._seen = _Bloom(bloom_bits, seed)
        self.registry = registry if registry is not None else AgentBook(max_registry)

    def add(self, summary: WindowSummary) -> bool:
        """Merge a stage 1 summary; False if it is a duplicate, late or refused."""
        s = summary
        if s.window_end <= self.watermark:
            self.stats["late"] += 1
            return False
        if s.venue != self.venue or not math.isclose(s.window_end - s.window_start,
                                                      self.window_s, rel_tol=1e-9):
            self.stats["refused"] += 1
            return False
        b = self._open.get((s.instrument, s.window_start))
        if b is not None and s.key in b.keys:
            self.stats["duplicates"] += 1
            return False
        size = 1 + len(s.pairs) + len(s.agents)
        if self._entries + size > self.max_open_entries:
            s, size = msgspec.structs.replace(s, pairs=[], agents=[]), 1
            self.stats["shed"] += 1
        if self._entries + size > self.max_open_entries or (
                b is None and len(self._open) >= self.max_open_windows):
            self.stats["refused"] += 1
            return False
        if b is None:
            b = self._open[(s.instrument, s.window_start)] = _Bucket(s.instrument, s.window_start)
        b.shed |= size == 1 and bool(summary.pairs or summary.agents)
        b.keys.add(s.key)
        b.summaries.append(s)
        b.entries += size
        self._entries += size
        self.stats["merged"] += 1
        return True

    def observe_agent(self, agent_id: str, *, owner: str | None = None,
                      funded_by: str | None = None, created_ts: float | None = None,
                      kind: str | None = None) -> None:
        """Record registry facts of this venue (optional); later facts fill in, never erase,
        earlier ones."""
        self.registry.observe(self.venue, agent_id,
                              AgentFacts(owner, funded_by, created_ts, kind))

    # the VenueContext of the stage-2 detectors (detectors.venue_base)
    def facts(self, agent: str) -> AgentFacts | None:
        """Registry facts of ``agent`` on this venue (``None``: not in the registry)."""
        return self.registry.facts(self.venue, agent)

    def first_seen(self, agent: str) -> float | None:
        """When ``agent`` first traded (``-inf``: before its time was forgotten; ``None``:
        never seen, or evicted and not in the Bloom filter of returning ids)."""
        seen = self._once.get(agent, self._multi.get(agent))
        if seen is None and self._seen.contains([agent])[0]:
            return -math.inf
        return seen

    def advance(self, watermark: float) -> list[StructureMetrics]:
        """Close every window ending at or before ``watermark`` (by start, then instrument)."""
        return [m for m, _ in self.close(watermark)]

    def close(self, watermark: float) -> list[tuple[StructureMetrics, WindowView]]:
        """Like :meth:`advance`, with each window's merged :class:`WindowView` for detectors."""
        self.watermark = max(self.watermark, watermark)
        due = sorted((b for b in self._open.values() if b.start + self.window_s <= self.watermark),
                     key=lambda b: (b.start, b.instrument))
        out = []
        for b in due:
            del self._open[(b.instrument, b.start)]
            self._entries -= b.entries
            out.append(self._close(b))
        return out

    def flush(self) -> list[StructureMetrics]:
        """End of input: close every open window."""
        return self.advance(math.inf)

    # ------------------------------------------------------------------ internals
    def _close(self, b: _Bucket) -> tuple[StructureMetrics, WindowView]:
        trades, volume, notional, truncated = 0, 0.0, 0.0, b.shed
        vol: dict[str, float] = {}
        first: dict[str, float] = {}
        pairs: dict[tuple[str, str], float] = {}
        for s in sorted(b.summaries, key=lambda s: (s.partition, s.seq)):
            trades, volume, notional = trades + s.trades, volume + s.volume, notional + s.notional
            truncated |= bool(s.truncated_pairs or s.truncated_agents)
            for act in s.agents:
                name = act.agent
                vol[name] = vol.get(name, 0.0) + act.buy_qty + act.sell_qty
                first[name] = min(first.get(name, math.inf), act.first_ts)
            for p in s.pairs:
                k = (p.buyer, p.seller) if p.buyer <= p.seller else (p.seller, p.buyer)
                pairs[k] = pairs.get(k, 0.0) + p.qty
        total2 = 2.0 * volume or math.inf
        new, returning = self._new_entrants(vol, b.start)
        cp_vol: dict[str, float] = {}
        cp_sq: dict[str, float] = {}
        self_vol = 0.0
        for (x, y), q in pairs.items():
            ends: tuple[tuple[str, float], ...] = ((x, 2.0 * q),) if x == y else ((x, q), (y, q))
            self_vol += q if x == y else 0.0
            for a, v in ends:
                cp_vol[a] = cp_vol.get(a, 0.0) + v
                cp_sq[a] = cp_sq.get(a, 0.0) + v * v
        cp_total = sum(cp_vol.values())
        metrics = StructureMetrics(
            venue=self.venue, instrument=b.instrument, window_start=b.start,
            window_end=b.start + self.window_s, trades=trades, volume=volume, notional=notional,
            agents=len(vol), hhi=10_000.0 * sum((v / total2) ** 2 for v in vol.values()),
            top5_share=sum(heapq.nlargest(5, vol.values())) / total2,
            new_entrant_share=sum(vol[a] for a in new) / total2, new_entrants=len(new),
            counterparty_hhi=10_000.0 * sum(cp_sq[a] / v for a, v in cp_vol.items() if v > 0)
            / cp_total if cp_total > 0 else 0.0,
            top_pair_share=max(pairs.values(), default=0.0) / (volume or math.inf),
            self_trade_share=self_vol / (volume or math.inf),
            partitions=len({s.partition for s in b.summaries}), truncated=truncated)
        self._remember(first, returning)
        return metrics, _view(self.venue, b, metrics)

    def _new_entrants(self, vol: dict[str, float], start: float
                      ) -> tuple[list[str], set[str]]:
        horizon = start - self.new_entrant_s
        new: list[str] = []
        unknown: list[str] = []
        for a in vol:
            facts = self.registry.facts(self.venue, a)
            created = facts.created_ts if facts is not None else None
            seen = self._once.get(a, self._multi.get(a))
            if created is not None:
                if created >= horizon:
                    new.append(a)
            elif seen is None:
                unknown.append(a)
            elif seen >= horizon:
                new.append(a)
        returning = {a for a, hit in zip(unknown, self._seen.contains(unknown), strict=True)
                     if hit}
        return new + [a for a in unknown if a not in returning], returning

    def _remember(self, first: dict[str, float], returning: set[str]) -> None:
        """Record the closed bucket's agents, then evict down to ``max_agents``."""
        once, multi = self._once, self._multi
        for a, t in first.items():
            if a in once:
                multi[a] = once.pop(a)
            elif a in multi:
                multi.move_to_end(a)
            else:
                once[a] = -math.inf if a in returning else t
        victims: list[str] = []
        excess = len(once) + len(multi) - self.max_agents
        for spare in (True, False):  # this bucket's agents (at the tails) go only if they must
            for table in (once, multi):
                while excess > 0 and table and not (spare and next(iter(table)) in first):
                    victims.append(table.popitem(last=False)[0])
                    excess -= 1
        self._seen.add(victims)
        self.stats["evicted"] += len(victims)


_SAMPLE = 8  # trade ids kept per merged pair: the first and the last four


def _view(venue: str, b: _Bucket, m: StructureMetrics) -> WindowView:
    """The bucket's summaries merged into one view, in (partition, seq) order."""
    summaries = sorted(b.summaries, key=lambda s: (s.partition, s.seq))
    pairs: dict[tuple[str, str], PairFlow] = {}
    agents: dict[str, AgentActivity] = {}
    for s in summaries:
        for p in s.pairs:
            k = (p.buyer, p.seller)
            old = pairs.get(k)
            if old is None:
                pairs[k] = PairFlow(p.buyer, p.seller, p.count, p.qty, p.notional, p.first_ts,
                                    p.last_ts, list(p.trade_ids))
                continue
            ids = old.trade_ids + p.trade_ids
            old.count += p.count
            old.qty += p.qty
            old.notional += p.notional
            old.first_ts, old.last_ts = min(old.first_ts, p.first_ts), max(old.last_ts, p.last_ts)
            old.trade_ids = ids if len(ids) <= _SAMPLE else ids[:_SAMPLE // 2] + ids[-_SAMPLE // 2:]
        for a in s.agents:
            cur = agents.get(a.agent)
            if cur is None:
                agents[a.agent] = AgentActivity(a.agent, a.buy_qty, a.sell_qty, a.buy_notional,
                                                a.sell_notional, a.trades, a.first_ts, a.last_ts,
                                                a.counterparties)
                continue
            cur.buy_qty += a.buy_qty
            cur.sell_qty += a.sell_qty
            cur.buy_notional += a.buy_notional
            cur.sell_notional += a.sell_notional
            cur.trades += a.trades
            cur.first_ts, cur.last_ts = min(cur.first_ts, a.first_ts), max(cur.last_ts, a.last_ts)
    cps: dict[str, set[str]] = {}
    for buyer, seller in pairs:
        cps.setdefault(buyer, set()).add(seller)
        cps.setdefault(seller, set()).add(buyer)
    for a in agents.values():
        a.counterparties = max(a.counterparties, len(cps.get(a.agent, ())))
    first = min(summaries, key=lambda s: (s.window_start if s.seq == 0 else math.inf, s.partition))
    last = summaries[-1]
    return WindowView(
        venue=venue, instrument=b.instrument, window_start=b.start,
        window_end=b.start + m.window_end - m.window_start, trades=m.trades, volume=m.volume,
        notional=m.notional, first_price=first.first_price, last_price=last.last_price,
        vwap=m.notional / m.volume if m.volume > 0 else last.last_price,
        pairs=sorted(pairs.values(), key=lambda p: (-p.qty, p.buyer, p.seller)),
        agents=sorted(agents.values(), key=lambda a: (-(a.buy_qty + a.sell_qty), a.agent)),
        truncated=m.truncated)
