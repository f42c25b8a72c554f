"""Sybil clusters: many ids acting as one hidden operator, from stage-2 window views.

Rules
-----
- **Lockstep.** In each window, a *moment* is one second in which at least three ids traded on
  the same side of one instrument (from the first and last trade time of every buyer→seller
  pair). Two ids are *linked* when they share at least two moments and at least half the
  trading seconds of the busier of the two (so a market maker, present in every moment, links
  to nobody, nor does a bystander who happened to trade in two of the swarm's seconds). A
  connected group of at least ``min_group`` linked ids is a lockstep group.
- **Episodes.** A group joins the episode of its instrument that holds at least half of its
  ids, else opens one. The episode keeps its ids (at most ``max_members``), the moments they
  shared, the trades among them (edges, at most 64) and a sample of trade ids (at most 20).
  Its *core*, judged and reported, is the ids in a group in at least half as many windows as
  the most regular one (a bystander linked once does not join a long-running swarm).
  An episode idle for ``idle_s`` is forgotten; at most ``max_episodes`` are kept (least
  recently active evicted). Nothing else is kept, whatever the number of ids seen.
- **Hidden operator.** Lockstep alone is not an attack: a declared fleet charging on a
  timetable trades in lockstep too. An episode alerts when it has ``min_group`` ids,
  ``min_moments`` shared moments and at least ``min_signals`` of: *funded as one* (a
  ``share`` of the ids share one funder in the registry), *created as one* (a ``share`` created
  within ``burst_s``, at most ``max_age_s`` ago), *new as one* (a ``share`` first seen on the
  venue within ``burst_s``, later than ``warmup_s`` after the detector started watching, when
  "first seen" still means new) and *trading inside* (at least ``min_inside`` trades among the
  ids, involving three of them). Without a registry the last two remain, so swarms absent from
  it are caught when they are new and trade among themselves.
- **Not Sybils.** A ``share`` of the ids declaring one owner is a disclosed fleet: no alert. A
  group whose known funders are many (distinct funders at least half the ids with one) is a
  launch: newness is explained by it, so *created* and *new* do not count.
- **Score** 0-100: :func:`detectors.base.score_ratio` of ``sqrt(ids / min_group) ·
  signals / min_signals · sqrt(min(moments / min_moments, 4))``: 50 at the bare threshold,
  about 75 with twice the evidence. **Once per episode**: it re-alerts only when it has grown
  to ``growth`` times the ids of its last alert.

Examples
--------
>>> from detectors.flows import AgentActivity, PairFlow
>>> from detectors.venue_base import WindowView
>>> ids = [f"s{i}" for i in range(6)]
>>> pairs = [PairFlow(a, "mm", 3, 6.0, 6.0, t, t + 20.0, [f"{a}-{t}"]) for a in ids
...          for t in (1.0, 11.0)] + [PairFlow("s0", "s1", 2, 4.0, 4.0, 5.0, 5.0, ["x1"]),
...                                   PairFlow("s2", "s3", 1, 2.0, 2.0, 7.0, 7.0, ["x2"])]
>>> acts = [AgentActivity(a, 12.0, 0.0, 12.0, 0.0, 6, 1.0, 31.0, 1) for a in ids]
>>> view = WindowView(venue="v", instrument="BW", window_start=0.0, window_end=60.0,
...                   trades=40, volume=80.0, notional=80.0, first_price=1.0, last_price=1.0,
...                   vwap=1.0, pairs=pairs, agents=acts)
>>> class Ctx:
...     venue = "v"
...     def facts(self, agent): return None
...     def first_seen(self, agent): return 900.0
>>> det = SybilClusterDetector(warmup_s=0.0)
>>> [f] = det.observe(view, Ctx())
>>> f.score, sorted(k for k, v in f.evidence["signals"].items() if v)
(58.4, ['new_as_one', 'trading_inside'])
>>> print(f.summary.replace(" traded", "\\n traded"))
6 ids first seen within 0 s
 traded BW on the same side in the same second 4 times and 3 times among themselves
>>> det.observe(view, Ctx())  # once per episode
[]
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
from scipy import sparse
from scipy.sparse import csgraph

from detectors.base import Finding, score_ratio, stable_id
from detectors.venue_base import VenueContext, WindowView, round_evidence

__all__ = ["SybilClusterDetector"]


@dataclass(slots=True)
class _Episode:
    instrument: str
    start: float
    last: float
    members: dict[str, int] = field(default_factory=dict)  # id -> windows in a group
    moments: int = 0
    windows: int = 0
    edges: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    trade_ids: list[str] = field(default_factory=list)
    alerted: int = 0
    alerts: int = 0


def _burst(times: list[float], span: float) -> tuple[int, float]:
    """Most times within ``span`` of each other, and the span they cover."""
    times, best, width, j = sorted(times), 0, 0.0, 0
    for i, t in enumerate(times):
        while t - times[j] > span:
            j += 1
        if i - j + 1 > best:
            best, width = i - j + 1, t - times[j]
    return best, width


class SybilClusterDetector:
    """Lockstep groups of ids that look like one hidden operator (see module notes)."""

    name = "sybil"
    version = "1"

    def __init__(self, *, min_group: int = 5, min_moments: int = 3, min_signals: int = 2,
                 share: float = 0.6, burst_s: float = 180.0, max_age_s: float = 7 * 86_400.0,
                 warmup_s: float = 300.0, min_inside: int = 2, growth: float = 1.5,
                 idle_s: float = 1_800.0, max_episodes: int = 256, max_members: int = 256,
                 max_moment: int = 64) -> None:
        self.min_group, self.min_moments, self.min_signals = min_group, min_moments, min_signals
        self.share, self.burst_s, self.max_age_s = share, burst_s, max_age_s
        self.warmup_s = warmup_s
        self.min_inside, self.growth, self.idle_s = min_inside, growth, idle_s
        self.max_episodes, self.max_members, self.max_moment = max_episodes, max_members, max_moment
        self._t0: float | None = None
        self._episodes: list[_Episode] = []
        #: funder -> ids first seen on the venue with it (at most 4096 funders, smallest evicted)
        self._funded: Counter[str] = Counter()

    def observe(self, view: WindowView, ctx: VenueContext) -> list[Finding]:
        if self._t0 is None:
            self._t0 = view.window_start
        end, inst = view.window_end, view.instrument
        for act in view.agents:  # ids new to the venue, counted once for their funder
            seen, facts = ctx.first_seen(act.agent), ctx.facts(act.agent)
            if facts is not None and facts.funded_by and (seen is None or seen >= act.first_ts):
                self._funded[facts.funded_by] += 1
        if len(self._funded) > 4096:
            self._funded = Counter(dict(self._funded.most_common(2048)))
        self._episodes = [e for e in self._episodes if end - e.last <= self.idle_s]
        touched: list[_Episode] = []
        for group, moments in self._lockstep(view):
            ep = max((e for e in self._episodes if e.instrument == inst),
                     key=lambda e: sum(a in e.members for a in group), default=None)
            if ep is None or 2 * sum(a in ep.members for a in group) < len(group):
                ep = _Episode(inst, view.window_start, end)
                self._episodes.append(ep)
                if len(self._episodes) > self.max_episodes:
                    self._episodes.remove(min(self._episodes, key=lambda e: e.last))
            for a in group:
                if a not in ep.members and len(ep.members) >= self.max_members:
                    del ep.members[min(ep.members, key=ep.members.__getitem__)]
                ep.members[a] = ep.members.get(a, 0) + 1
            ep.moments, ep.windows, ep.last = ep.moments + moments, ep.windows + 1, end
            if ep not in touched:
                touched.append(ep)
        index = {a: e for e in self._episodes if e.instrument == inst for a in e.members}
        for p in view.pairs:
            ep = index.get(p.buyer)
            if ep is None or p.buyer == p.seller or index.get(p.seller) is not ep:
                continue
            edge = ep.edges.get((p.buyer, p.seller))
            if edge is None and len(ep.edges) < 64:
                edge = ep.edges[(p.buyer, p.seller)] = [0, 0.0, 0.0]
            if edge is not None:
                edge[0], edge[1], edge[2] = edge[0] + p.count, edge[1] + p.qty, edge[2] + p.notional
            ep.trade_ids += p.trade_ids[:20 - len(ep.trade_ids)]
        for p in view.pairs:  # then the lockstep trades themselves
            if len(touched) and (p.buyer in index or p.seller in index):
                ep = index.get(p.buyer) or index[p.seller]
                ep.trade_ids += [t for t in p.trade_ids[:1] if len(ep.trade_ids) < 20
                                 and t not in ep.trade_ids]
        return [f for ep in touched if (f := self._judge(ep, view, ctx)) is not None]

    def end_window(self, start: float, end: float, ctx: VenueContext) -> list[Finding]:
        return []

    def _lockstep(self, view: WindowView) -> list[tuple[list[str], int]]:
        """Groups of linked ids in the window and the moments each group shared.

        A moment is a second and a side; two ids are linked when they share at least two
        moments (of 3 to ``max_moment`` ids) and at least half of the moments of each. The
        co-occurrences are one sparse product (scipy) of the moment-by-id incidence matrix."""
        moments: dict[tuple[int, bool], set[str]] = {}
        for p in view.pairs:
            if p.buyer != p.seller:
                for t in {p.first_ts, p.last_ts}:
                    moments.setdefault((math.floor(t), True), set()).add(p.buyer)
                    moments.setdefault((math.floor(t), False), set()).add(p.seller)
        sets = [s for s in moments.values() if 3 <= len(s) <= self.max_moment]
        if not sets:
            return []
        ids = sorted(set().union(*sets))
        col = {a: i for i, a in enumerate(ids)}
        count = np.zeros(len(ids), dtype=np.int64)  # moments of every size holding the id
        for s in moments.values():
            count[[col[a] for a in s if a in col]] += 1
        rows = np.repeat(np.arange(len(sets)), [len(s) for s in sets])
        cols = np.fromiter((col[a] for s in sets for a in s), dtype=np.int64, count=len(rows))
        inc = sparse.csr_array((np.ones(len(rows), dtype=np.int64), (rows, cols)),
                               shape=(len(sets), len(ids)))
        co = sparse.triu(inc.T @ inc, k=1).tocoo()
        ok = (co.data >= 2) & (2 * co.data >= np.maximum(count[co.row], count[co.col]))
        links = sparse.coo_array((np.ones(int(ok.sum())), (co.row[ok], co.col[ok])),
                                 shape=(len(ids), len(ids)))
        _, label = csgraph.connected_components(links, directed=False)
        groups: dict[int, list[int]] = {}
        for i, lab in enumerate(label.tolist()):  # ids in order: groups by their least id
            groups.setdefault(lab, []).append(i)
        out = []
        for members in groups.values():
            if len(members) >= self.min_group:
                shared = int((inc[:, members].sum(axis=1) >= 3).sum())
                out.append(([ids[i] for i in members], shared))
        return out

    def _judge(self, ep: _Episode, view: WindowView, ctx: VenueContext) -> Finding | None:
        top, end = max(ep.members.values()), view.window_end
        members = sorted(a for a, w in ep.members.items() if 2 * w >= top)  # the core
        n, need = len(members), self.share * len(members)
        facts = [f for f in map(ctx.facts, members) if f is not None]
        owners = Counter(f.owner for f in facts if f.owner)
        funders = Counter(f.funded_by for f in facts if f.funded_by)
        if n < self.min_group or ep.moments < self.min_moments or (
                owners and owners.most_common(1)[0][1] >= need):
            return None  # too little, or a disclosed fleet of one declared owner
        funder, funded = funders.most_common(1)[0] if funders else (None, 0)
        launch = sum(funders.values()) >= need and 2 * len(funders) >= sum(funders.values())
        created, c_span = _burst([f.created_ts for f in facts if f.created_ts is not None
                                  and f.created_ts >= end - self.max_age_s], self.burst_s)
        watched = (self._t0 or 0.0) + self.warmup_s
        seen = [s for s in map(ctx.first_seen, members) if s is not None and s >= watched]
        fresh, f_span = _burst(seen, self.burst_s)
        inside = int(sum(e[0] for e in ep.edges.values()))
        used: set[str] = set()
        for b, s in sorted(ep.edges):  # disjoint inside pairs: a hub's star is one
            if b not in used and s not in used:
                used |= {b, s}
        exclusive = funded >= need and 2 * funded >= self._funded.get(funder or "", 0)
        signals = {"funded_as_one": exclusive,
                   "created_as_one": created >= need and not launch,
                   "new_as_one": fresh >= need and not launch,
                   "trading_inside": inside >= self.min_inside and len(used) >= 4}
        k = sum(signals.values())
        if k < self.min_signals or (ep.alerted and n < self.growth * ep.alerted):
            return None
        ep.alerted, ep.alerts = n, ep.alerts + 1
        ratio = math.sqrt(n / self.min_group) * k / self.min_signals * math.sqrt(
            min(ep.moments / self.min_moments, 4.0))
        how = [f"created within {c_span:.0f} s" if signals["created_as_one"] else "",
               "funded by one account" if signals["funded_as_one"] else "",
               f"first seen within {f_span:.0f} s" if signals["new_as_one"] else ""]
        how_s = " and ".join(h for h in how if h)
        summary = (f"{n} ids{' ' + how_s if how_s else ''} traded {ep.instrument} on the same "
                   f"side in the same second {ep.moments} times"
                   + (f" and {inside} times among themselves" if inside else ""))
        edges = sorted(ep.edges.items(), key=lambda kv: (-kv[1][1], kv[0]))[:20]
        evidence = {
            "agents": members, "trade_ids": ep.trade_ids[:20],
            "edges": [{"buyer": b, "seller": s, "count": int(e[0]), "qty": round_evidence(e[1]),
                       "notional": round_evidence(e[2])} for (b, s), e in edges],
            "lockstep": {"moments": ep.moments, "windows": ep.windows,
                         "since": round_evidence(ep.start)},
            "registry": {"known": len(facts), "top_funder": funder, "funded": funded,
                         "distinct_funders": len(funders), "created_together": created,
                         "created_span_s": round_evidence(c_span),
                         "declared_owners": len(owners)},
            "first_seen_together": fresh, "first_seen_span_s": round_evidence(f_span),
            "inside_trades": inside, "signals": signals, "alert": ep.alerts,
            "thresholds": {"min_group": self.min_group, "min_moments": self.min_moments,
                           "min_signals": self.min_signals, "share": self.share,
                           "burst_s": self.burst_s, "min_inside": self.min_inside},
        }
        return Finding(kind="sybil_cluster", ts=end, score=score_ratio(ratio), venue=view.venue,
                       instrument=ep.instrument, agents=members, summary=summary,
                       evidence=evidence, key=stable_id("sybil", view.venue, ep.instrument,
                                                        ep.start, members[0], ep.alerts))
