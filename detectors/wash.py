"""Wash trading: repeated matched round trips that leave beneficial ownership where it was.

:class:`WashTradeDetector` (kind ``wash_trade``) is a stage-2 detector
(:mod:`detectors.venue_base`). Per instrument it reads each closed window's pair flows and applies
position-neutral volume matching (Victor & Weintraud 2021; Chainalysis' "same volume back within
~5 min, ≥ 3 times"; ``return_s`` allows twice that):

- **round trip** — for every unordered pair ``{a, b}`` the flows of the last ``return_s`` seconds
  are summed per direction; when both directions traded and the sums agree within ``tol``
  (1 %), the pair made one matched round trip and its sums restart from zero. A self-trade
  (buyer == seller) is a round trip by itself;
- **dedication** — an agent counts only when matched round trips make at least ``min_share`` of
  its own traded volume (both decayed with time constant ``horizon_s``). A market maker that
  happens to buy and sell one size with a noise trader is a hub of unmatched volume and drops out;
- **pattern** — the dedicated agents linked by round trips within ``horizon_s`` form groups; a
  group with at least ``min_trips`` round trips is wash trading, and, being made of closed round
  trips, ends flat. One accidental cross between bots of one owner is not a round trip, and one
  round trip is not a pattern.

The registry never gates a finding (honest owners run many bots, funders fund many); it raises
the score: ``score_ratio(trips / min_trips · (1 + 0.5 · linked))``, ``linked`` the share of the
group's pairs whose ids share a declared owner or funder (50 at the threshold, 65 if all linked).

One alert per episode: an episode (instrument, ids) opens with its first finding and closes
``cooldown_s`` after its last round trip. While it is open, groups that overlap it are silent
unless they bring new ids or its round trips reach ``grow`` times the count at its last alert.

State per instrument (≤ ``max_instruments``, least recently seen evicted): ≤ ``max_pairs`` open
pair sums, ≤ ``max_agents`` agents' decayed volumes (least recently seen evicted), the last
``max_trips`` round trips and ≤ 64 open episodes.

Examples
--------
>>> from detectors.flows import PairFlow
>>> def view(i, seller, buyer, qty):
...     t = 60.0 * i
...     pf = PairFlow(buyer, seller, 1, qty, 2 * qty, t + 1, t + 1, [f"t{i}"])
...     return WindowView(venue="v", instrument="TB", window_start=t, window_end=t + 60,
...                       trades=1, volume=qty, notional=2 * qty, first_price=2.0,
...                       last_price=2.0, vwap=2.0, pairs=[pf], agents=[])
>>> det = WashTradeDetector()
>>> legs = [("a", "b", 5.0), ("b", "a", 5.0), ("a", "c", 7.0), ("c", "a", 7.0),
...         ("b", "c", 3.0), ("c", "b", 3.0)]
>>> [f.summary for i, leg in enumerate(legs) for f in det.observe(view(i, *leg), None)]
['3 ids made 3 matched round trips of TB (15 units each way) in 5 min, ending flat']
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from typing import Any, NamedTuple

from detectors.base import Finding, score_ratio, stable_id
from detectors.venue_base import VenueContext, WindowView, round_evidence

__all__ = ["WashTradeDetector"]

_MAX_EPISODES = 64


class _Trip(NamedTuple):
    """One matched round trip: ``a`` sold ``q_ab`` to ``b`` and bought ``q_ba`` back."""

    start: float
    end: float
    a: str
    b: str
    q_ab: float
    q_ba: float
    n_ab: int
    n_ba: int
    v_ab: float
    v_ba: float
    ids: tuple[str, ...]


class _Episode:
    def __init__(self, members: frozenset[str], trips: int, ts: float) -> None:
        self.members, self.alerted, self.total, self.last = members, trips, trips, ts


class _Book:
    """One instrument's state."""

    def __init__(self) -> None:
        # (a, b), a < b -> rows [end, first, last, q_ab, q_ba, n_ab, n_ba, v_ab, v_ba, ids]
        self.pairs: OrderedDict[tuple[str, str], list[list[Any]]] = OrderedDict()
        self.agents: OrderedDict[str, list[float]] = OrderedDict()  # [gross, matched, ts]
        self.trips: deque[_Trip] = deque()
        self.episodes: list[_Episode] = []


class WashTradeDetector:
    """Matched round trips among dedicated ids (see the module notes)."""

    name = "wash"
    version = "1"

    def __init__(self, *, tol: float = 0.01, return_s: float = 600.0, horizon_s: float = 1800.0,
                 min_trips: int = 3, min_share: float = 0.4, cooldown_s: float = 1800.0,
                 grow: float = 3.0, max_pairs: int = 2000, max_agents: int = 2000,
                 max_trips: int = 512, max_instruments: int = 64) -> None:
        self.tol, self.return_s, self.horizon_s = tol, return_s, horizon_s
        self.min_trips, self.min_share, self.cooldown_s, self.grow = (
            min_trips, min_share, cooldown_s, grow)
        self.max_pairs, self.max_agents, self.max_trips = max_pairs, max_agents, max_trips
        self.max_instruments = max_instruments
        self._books: OrderedDict[str, _Book] = OrderedDict()

    def _book(self, instrument: str) -> _Book:
        book = self._books.pop(instrument, None) or _Book()
        self._books[instrument] = book
        while len(self._books) > self.max_instruments:
            self._books.popitem(last=False)
        return book

    def _touch(self, book: _Book, agent: str, t: float, gross: float, matched: float) -> None:
        row = book.agents.pop(agent, None) or [0.0, 0.0, t]
        k = math.exp(-(t - row[2]) / self.horizon_s)
        book.agents[agent] = [row[0] * k + gross, row[1] * k + matched, t]
        while len(book.agents) > self.max_agents:
            book.agents.popitem(last=False)

    def observe(self, view: WindowView, ctx: VenueContext | None) -> list[Finding]:
        """Fold one closed window in; return the findings it completes."""
        t, book = view.window_end, self._book(view.instrument)
        gross: dict[str, float] = {}
        for p in view.pairs:
            gross[p.buyer] = gross.get(p.buyer, 0.0) + p.qty
            gross[p.seller] = gross.get(p.seller, 0.0) + p.qty
        for agent, qty in gross.items():
            self._touch(book, agent, t, qty, 0.0)
        new: list[_Trip] = []
        flows: dict[tuple[str, str], list[Any]] = {}
        for p in view.pairs:
            if p.buyer == p.seller:
                new.append(_Trip(p.first_ts, p.last_ts, p.buyer, p.buyer, p.qty, p.qty, p.count,
                                 p.count, p.notional, p.notional, tuple(p.trade_ids[:8])))
                continue
            a, b = sorted((p.seller, p.buyer))
            row = flows.setdefault((a, b), [t, p.first_ts, p.last_ts, 0.0, 0.0, 0, 0, 0.0, 0.0, []])
            d = 0 if p.seller == a else 1
            row[1], row[2] = min(row[1], p.first_ts), max(row[2], p.last_ts)
            row[3 + d] += p.qty
            row[5 + d] += p.count
            row[7 + d] += p.notional
            row[9] += p.trade_ids
        for key, row in flows.items():
            rows = book.pairs.pop(key, [])
            rows = [r for r in rows if r[0] > t - self.return_s] + [row]
            q_ab, q_ba = sum(r[3] for r in rows), sum(r[4] for r in rows)
            if q_ab > 0 and q_ba > 0 and abs(q_ab - q_ba) <= self.tol * max(q_ab, q_ba):
                new.append(_Trip(
                    min(r[1] for r in rows), max(r[2] for r in rows), *key, q_ab, q_ba,
                    sum(r[5] for r in rows), sum(r[6] for r in rows),
                    sum(r[7] for r in rows), sum(r[8] for r in rows),
                    tuple(i for r in rows for i in r[9])[:8]))
                continue
            book.pairs[key] = rows
            while len(book.pairs) > self.max_pairs:
                book.pairs.popitem(last=False)
        for trip in new:
            for agent in {trip.a, trip.b}:
                self._touch(book, agent, t, 0.0, trip.q_ab + trip.q_ba)
            for ep in book.episodes:
                if trip.a in ep.members and trip.b in ep.members:
                    ep.total, ep.last = ep.total + 1, t
        book.trips.extend(new)
        while book.trips and (len(book.trips) > self.max_trips
                              or book.trips[0].end < t - self.horizon_s):
            book.trips.popleft()
        book.episodes = [e for e in book.episodes if e.last >= t - self.cooldown_s]
        return self._judge(view, book, {a for x in new for a in (x.a, x.b)}, ctx) if new else []

    def end_window(self, start: float, end: float, ctx: VenueContext | None) -> list[Finding]:
        """Nothing spans instruments here."""
        return []

    def _judge(self, view: WindowView, book: _Book, fresh: set[str],
               ctx: VenueContext | None) -> list[Finding]:
        names = {a for x in book.trips for a in (x.a, x.b)}
        ok = {a for a in names if (row := book.agents.get(a)) and row[1] >= self.min_share * row[0]}
        parent: dict[str, str] = {}

        def root(x: str) -> str:
            while parent.setdefault(x, x) != x:
                x = parent[x]
            return x

        trips = [x for x in book.trips if x.a in ok and x.b in ok]
        for x in trips:
            parent[root(x.a)] = root(x.b)
        groups: dict[str, list[_Trip]] = {}
        for x in trips:
            groups.setdefault(root(x.a), []).append(x)
        out = []
        for group in groups.values():
            members = frozenset(a for x in group for a in (x.a, x.b))
            if len(group) < self.min_trips or not members & fresh:
                continue
            ep = next((e for e in book.episodes if e.members & members), None)
            if ep is None:
                if len(book.episodes) >= _MAX_EPISODES:
                    book.episodes.pop(0)
                book.episodes.append(_Episode(members, len(group), view.window_end))
            elif members <= ep.members and ep.total < self.grow * ep.alerted:
                continue
            else:
                ep.members, ep.alerted = ep.members | members, max(ep.total, len(group))
            out.append(self._finding(view, group, sorted(members), ctx))
        return out

    def _finding(self, view: WindowView, group: list[_Trip], agents: list[str],
                 ctx: VenueContext | None) -> Finding:
        r = round_evidence
        facts = {a: f._asdict() for a in agents if ctx is not None
                 and (f := ctx.facts(a)) is not None}
        pairs = {(x.a, x.b) for x in group}

        def linked(a: str, b: str) -> bool:
            fa, fb = facts.get(a, {}), facts.get(b, {})
            return any(fa.get(k) is not None and fa.get(k) == fb.get(k)
                       for k in ("owner", "funded_by"))

        share = sum(a == b or linked(a, b) for a, b in pairs) / len(pairs)
        edges: dict[tuple[str, str], list[float]] = {}
        for x in group:
            for seller, buyer, n, q, v in ((x.a, x.b, x.n_ab, x.q_ab, x.v_ab),
                                           (x.b, x.a, x.n_ba, x.q_ba, x.v_ba))[:1 + (x.a != x.b)]:
                e = edges.setdefault((buyer, seller), [0, 0.0, 0.0])
                e[0], e[1], e[2] = e[0] + n, e[1] + q, e[2] + v
        volume = sum(x.q_ab for x in group)
        start, end = min(x.start for x in group), max(x.end for x in group)
        minutes = max(1, round((end - start) / 60))
        owners = {f.get("owner") for f in facts.values()}
        funders = {f.get("funded_by") for f in facts.values()}
        who = f"{len(agents)} ids"
        if len(facts) == len(agents) > 1 and len(owners) == 1 and None not in owners:
            who += " of one owner"
        elif len(facts) == len(agents) > 1 and len(funders) == 1 and None not in funders:
            who += " of one funder"
        ratio = len(group) / self.min_trips * (1.0 + 0.5 * share)
        evidence = {
            "agents": agents,
            "edges": [{"buyer": b, "seller": s, "count": int(e[0]), "qty": r(e[1]),
                       "notional": r(e[2])} for (b, s), e in sorted(edges.items())],
            "trade_ids": [i for x in group for i in x.ids][:20],
            "registry": facts, "linked_share": r(share),
            "round_trips": len(group), "self_trades": sum(x.a == x.b for x in group),
            "volume_each_way": r(volume), "start_ts": start, "end_ts": end,
            "max_mismatch": r(max(abs(x.q_ab - x.q_ba) / max(x.q_ab, x.q_ba) for x in group)),
            "thresholds": {"min_trips": self.min_trips, "tol": self.tol,
                           "return_s": self.return_s, "horizon_s": self.horizon_s,
                           "min_share": self.min_share},
        }
        return Finding(
            kind="wash_trade", ts=view.window_end, score=score_ratio(ratio), venue=view.venue,
            instrument=view.instrument, agents=agents, evidence=evidence,
            summary=(f"{who} made {len(group)} matched round trips of {view.instrument} "
                     f"({r(volume, 4):g} units each way) in {minutes} min, ending flat"
                     if len(agents) > 1 else
                     f"{agents[0]} traded {view.instrument} with itself {len(group)} times "
                     f"({r(volume, 4):g} units) in {minutes} min"),
            key=stable_id("wash", view.venue, view.instrument, ",".join(agents),
                          view.window_end))
