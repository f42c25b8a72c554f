"""Circular trading: ids passing one quantity around a cycle A→B→…→A, round after round.

:class:`CircularTradingDetector` (kind ``circular_trading``) is a stage-2 detector
(:mod:`detectors.venue_base`). Per instrument and closed window it builds the *net* flow graph
(seller → buyer, the quantity sold less what came back; self-trades and flows that cancel are
wash trading, not circles) and looks for directed cycles of ``min_len``–``max_len`` ids whose
legs carry one quantity within ``tol`` (3 %): every member then received what it passed on and
ends flat. A round that straddles two windows is caught on the union of the window and its
predecessor (counted there only if neither window holds it alone).

- **bounded search** — edges are sorted by quantity and cut into bands no wider than ``tol``;
  ``networkx.simple_cycles(G, length_bound=max_len)`` runs on one band at a time, so only edges
  that could be legs of one matched cycle meet. At most ``max_edges`` edges per window (the
  largest), bands of ≤ ``max_band`` edges and ``max_cycles`` cycles per band are examined; a
  band wider than that holds one round size traded by everyone and carries no signal;
- **pattern** — a cycle observed in at least ``min_repeats`` windows within ``horizon_s`` is
  circular trading. Market makers laying off inventory with one another close cycles too, but
  with unrelated sizes and times: their legs do not match, and an accidental match does not
  repeat.

Score: ``score_ratio(repeats / min_repeats · (1 + 0.5 · linked))``, ``linked`` the share of legs
whose two ids share a declared owner or funder in the registry (50 at the threshold).

One alert per episode: an episode (instrument, ids) opens with its first finding and closes
``cooldown_s`` after its cycle was last seen. While open, cycles sharing an id with it are silent
unless they bring new ids or its observations reach ``grow`` times the count at its last alert.

State per instrument (≤ ``max_instruments``, least recently seen evicted): the previous window's
flows (≤ ``max_edges``), the observations of ≤ ``max_tracked`` cycles (least recently seen
evicted; each ≤ ``horizon_s`` old) and ≤ 64 open episodes.

Examples
--------
>>> from detectors.flows import PairFlow
>>> def view(i, ring, qty):
...     t = 60.0 * i
...     pairs = [PairFlow(b, s, 1, qty, 2 * qty, t + k, t + k, [f"t{i}{k}"])
...              for k, (s, b) in enumerate(zip(ring, ring[1:] + ring[:1]))]
...     return WindowView(venue="v", instrument="KWH", window_start=t, window_end=t + 60,
...                       trades=3, volume=3 * qty, notional=6 * qty, first_price=2.0,
...                       last_price=2.0, vwap=2.0, pairs=pairs, agents=[])
>>> det = CircularTradingDetector()
>>> [f.summary for i in range(4) for f in det.observe(view(i, ["a", "b", "c"], 7.0), None)]
['3 ids passed 7 units of KWH around a cycle 3 times in 2 min, ending flat']
"""

from __future__ import annotations

import itertools
from bisect import bisect_right
from collections import OrderedDict, deque
from typing import NamedTuple

import networkx as nx

from detectors.base import Finding, score_ratio, stable_id
from detectors.flows import PairFlow
from detectors.venue_base import VenueContext, WindowView, round_evidence

__all__ = ["CircularTradingDetector"]

_MAX_EPISODES = 64
_Flows = dict[tuple[str, str], tuple[float, int, float, float, float, tuple[str, ...]]]


class _Obs(NamedTuple):
    """One matched observation of a cycle: per leg (seller → next) qty, count, notional."""

    start: float
    end: float
    qty: tuple[float, ...]
    counts: tuple[int, ...]
    notional: tuple[float, ...]
    ids: tuple[str, ...]


class _Episode:
    def __init__(self, members: frozenset[str], seen: int, ts: float) -> None:
        self.members, self.alerted, self.total, self.last = members, seen, seen, ts


class _Book:
    def __init__(self) -> None:
        self.prev_end = float("nan")
        self.prev: _Flows = {}
        self.prev_found: set[tuple[str, ...]] = set()
        self.cycles: OrderedDict[tuple[str, ...], deque[_Obs]] = OrderedDict()
        self.episodes: list[_Episode] = []


def _flows(pairs: list[PairFlow], limit: int) -> _Flows:
    """(seller, buyer) -> (qty, count, notional, first_ts, last_ts, ids), self-trades left out."""
    out: _Flows = {}
    for p in pairs[:limit]:
        if p.buyer != p.seller:
            out[(p.seller, p.buyer)] = (p.qty, p.count, p.notional, p.first_ts, p.last_ts,
                                        tuple(p.trade_ids))
    return out


def _merge(a: _Flows, b: _Flows) -> _Flows:
    out = dict(a)
    for k, (q, n, v, t0, t1, ids) in b.items():
        if k in out:
            q0, n0, v0, s0, s1, ids0 = out[k]
            out[k] = (q0 + q, n0 + n, v0 + v, min(s0, t0), max(s1, t1), ids0 + ids)
        else:
            out[k] = (q, n, v, t0, t1, ids)
    return out


def _core(edges: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The edges left once ids that only sell or only buy among ``edges`` are peeled off,
    repeatedly: no cycle passes through such an id, so the cycles are the same, and a band of
    unrelated trades (most of them, in a busy market) peels down to nothing before any graph
    is built."""
    while edges:
        sellers = {s for s, _ in edges}
        buyers = {b for _, b in edges}
        kept = [(s, b) for s, b in edges if s in buyers and b in sellers]
        if len(kept) == len(edges):
            break
        edges = kept
    return edges


class CircularTradingDetector:
    """Repeated matched cycles in the net flow graph (see the module notes)."""

    name = "circular"
    version = "1"

    def __init__(self, *, tol: float = 0.03, min_len: int = 3, max_len: int = 6,
                 min_repeats: int = 3, horizon_s: float = 1800.0, cooldown_s: float = 1800.0,
                 grow: float = 3.0, max_edges: int = 2000, max_band: int = 64,
                 max_cycles: int = 256, max_tracked: int = 512,
                 max_instruments: int = 64) -> None:
        self.tol, self.min_len, self.max_len, self.min_repeats = tol, min_len, max_len, min_repeats
        self.horizon_s, self.cooldown_s, self.grow = horizon_s, cooldown_s, grow
        self.max_edges, self.max_band, self.max_cycles = max_edges, max_band, max_cycles
        self.max_tracked, self.max_instruments = max_tracked, max_instruments
        self._books: OrderedDict[str, _Book] = OrderedDict()

    def _cycles(self, flows: _Flows) -> dict[tuple[str, ...], _Obs]:
        """Matched cycles of the net flow graph, keyed by their rotation from the least id."""
        net = sorted((q - flows.get((b, s), (0.0,))[0], s, b) for (s, b), (q, *_) in
                     flows.items() if q - flows.get((b, s), (0.0,))[0] > self.tol * q)
        qs = [e[0] for e in net]
        found: dict[tuple[str, ...], _Obs] = {}
        last_hi = 0
        for i, (q, _, _) in enumerate(net):
            hi = bisect_right(qs, q * (1 + self.tol))
            if hi <= last_hi or hi - i < self.min_len or hi - i > self.max_band:
                last_hi = max(last_hi, hi)
                continue
            last_hi = hi
            band = _core([(s, b) for _, s, b in net[i:hi]])
            if len(band) < self.min_len:
                continue  # no cycle of min_len ids can close in this band
            g = nx.DiGraph(band)
            for c in itertools.islice(nx.simple_cycles(g, length_bound=self.max_len),
                                      self.max_cycles):
                if len(c) < self.min_len:
                    continue
                k = c.index(min(c))
                ring = tuple(c[k:] + c[:k])
                legs = [flows[(s, b)] for s, b in zip(ring, ring[1:] + ring[:1], strict=True)]
                lq = [leg[0] for leg in legs]
                if max(lq) <= min(lq) * (1 + self.tol):
                    found[ring] = _Obs(min(leg[3] for leg in legs), max(leg[4] for leg in legs),
                                       tuple(lq), tuple(leg[1] for leg in legs),
                                       tuple(leg[2] for leg in legs),
                                       tuple(i for leg in legs for i in leg[5][:4]))
        return found

    def observe(self, view: WindowView, ctx: VenueContext | None) -> list[Finding]:
        """Fold one closed window in; return the findings it completes."""
        t = view.window_end
        book = self._books.pop(view.instrument, None) or _Book()
        self._books[view.instrument] = book
        while len(self._books) > self.max_instruments:
            self._books.popitem(last=False)
        flows = _flows(view.pairs, self.max_edges)
        found = self._cycles(flows)
        seen = dict(found)
        if book.prev_end == view.window_start:
            for ring, obs in self._cycles(_merge(book.prev, flows)).items():
                if ring not in found and ring not in book.prev_found:
                    seen[ring] = obs
        book.prev_end, book.prev, book.prev_found = t, flows, set(found)
        for ring, obs in sorted(seen.items()):
            hist = book.cycles.pop(ring, None) or deque()
            hist.append(obs)
            book.cycles[ring] = hist
            for old in book.episodes:
                if old.members.issuperset(ring):
                    old.total, old.last = old.total + 1, t
        while len(book.cycles) > self.max_tracked:
            book.cycles.popitem(last=False)
        book.episodes = [e for e in book.episodes if e.last >= t - self.cooldown_s]
        out = []
        for ring in sorted(seen):
            hist = book.cycles.get(ring, deque())  # empty: evicted by this window's flood
            while hist and hist[0].end < t - self.horizon_s:
                hist.popleft()
            members = frozenset(ring)
            if len(hist) < self.min_repeats:
                continue
            ep = next((e for e in book.episodes if e.members & members), None)
            if ep is None:
                if len(book.episodes) >= _MAX_EPISODES:
                    book.episodes.pop(0)
                book.episodes.append(_Episode(members, len(hist), t))
            elif members <= ep.members and ep.total < self.grow * ep.alerted:
                continue
            else:
                ep.members, ep.alerted = ep.members | members, max(ep.total, len(hist))
            out.append(self._finding(view, ring, list(hist), ctx))
        return out

    def end_window(self, start: float, end: float, ctx: VenueContext | None) -> list[Finding]:
        """Nothing spans instruments here."""
        return []

    def _finding(self, view: WindowView, ring: tuple[str, ...], hist: list[_Obs],
                 ctx: VenueContext | None) -> Finding:
        r, n = round_evidence, len(ring)
        facts = {a: f._asdict() for a in sorted(ring) if ctx is not None
                 and (f := ctx.facts(a)) is not None}
        legs = list(zip(ring, ring[1:] + ring[:1], strict=True))

        def linked(a: str, b: str) -> bool:
            fa, fb = facts.get(a, {}), facts.get(b, {})
            return any(fa.get(k) is not None and fa.get(k) == fb.get(k)
                       for k in ("owner", "funded_by"))

        share = sum(linked(a, b) for a, b in legs) / n
        qty = [sum(o.qty[j] for o in hist) for j in range(n)]
        rounds = sum(min(o.counts) for o in hist)
        net = {a: qty[j - 1] - qty[j] for j, a in enumerate(ring)}  # received - passed on
        start, end = hist[0].start, hist[-1].end
        who = f"{n} ids"
        for field, word in (("owner", "owner"), ("funded_by", "funder")):
            vals = {f.get(field) for f in facts.values()}
            if len(facts) == n and len(vals) == 1 and None not in vals:
                who = f"{n} ids of one {word}"
                break
        unit = sum(qty) / n / max(rounds, 1)
        evidence = {
            "agents": list(ring),
            "edges": [{"buyer": b, "seller": s, "count": sum(o.counts[j] for o in hist),
                       "qty": r(qty[j]), "notional": r(sum(o.notional[j] for o in hist))}
                      for j, (s, b) in enumerate(legs)],
            "trade_ids": [i for o in hist for i in o.ids][:20],
            "registry": facts, "linked_share": r(share),
            "windows": len(hist), "rounds": rounds, "units_per_round": r(unit),
            "net_position": {a: r(v) for a, v in net.items()},
            "max_net_share": r(max(abs(v) for v in net.values()) / max(qty)),
            "start_ts": start, "end_ts": end,
            "thresholds": {"min_repeats": self.min_repeats, "tol": self.tol,
                           "horizon_s": self.horizon_s, "length": [self.min_len, self.max_len]},
        }
        return Finding(
            kind="circular_trading", ts=view.window_end, venue=view.venue,
            score=score_ratio(len(hist) / self.min_repeats * (1.0 + 0.5 * share)),
            instrument=view.instrument, agents=sorted(ring), evidence=evidence,
            summary=(f"{who} passed {r(unit, 3):g} units of {view.instrument} around a cycle "
                     f"{rounds} times in {max(1, round((end - start) / 60))} min, ending flat"),
            key=stable_id("circ", view.venue, view.instrument, ",".join(ring), view.window_end))
