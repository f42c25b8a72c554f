"""Market-wide circuit breaker of a 24x7 venue: a liquidity-weighted index, levels 7/13/20 %.

Index
    Constituents are the instruments with at least ``min_trades`` trades in the trailing hour
    (exponentially weighted, time constant one hour) and a trade in the last ``stale_s``: at
    most ``max_constituents``, the most liquid by trailing-hour notional. Weights are notional
    shares capped at ``max_weight`` (``1/n`` when there are fewer than ``1/max_weight``
    constituents; the excess goes pro rata to the others), so one busy instrument cannot carry
    the venue. Constituents and weights are reset every ``rebalance_s`` and the index is
    chain-linked there (its level does not jump), like a published index. Fewer than
    ``min_constituents`` eligible instruments: no index, no market-wide halt.
Reference
    A 24x7 market has no close. The reference is the index's trailing 60-minute high (the
    window of CME's dynamic breakers): a breaker stops a *fast, disorderly* fall, so it asks
    how far the venue fell within the hour, adapts round the clock and never compares with a
    stale price. A rolling 24-h reference would halt a venue that repriced 7 % over a day (price
    discovery, not a crash) and measure from a price many hours old. Once a level trips, the
    reference then in force is held for ``rearm_s`` (24 h): higher levels are measured from it,
    as US levels are from the prior close, so a crash slower than an hour still escalates.
Breadth
    One instrument's crash is its own breaker's business (stage-1 bands), and its linked
    instruments' reaction is :mod:`detectors.contagion`'s. A level trips only if constituents
    holding at least ``breadth_weight`` (two thirds) of the index weight, and at least
    ``min_decliners`` (3) of them, are each down at least half the level since the moment of
    the reference high. Without it, in the simulator, a 30 % crash of one of four equally
    weighted instruments is a 7.5 % index fall, and a 4x spike of one instrument that reverts
    is a 40 % fall from an index high made by that instrument alone: venue halts for
    one-instrument events (measured: 5 of 10 crash and mixed days). The level must also be
    crossed by the weighted mean move of the constituents without the largest contributor, so
    no single instrument (a spike that reverts, a crash) can carry the venue over a level.
Decisions
    MWC1/MWC2: ``"*"`` HALTED, ``resume_at = ts + halt_s`` (15 min), then ``"*"`` TRADING/RESUME
    stamped ``ts = resume_at`` from :meth:`MarketWideBreaker.advance`; MWC3: HALTED until a
    regulator resumes. Each level trips at most once per ``rearm_s``; a level that trips marks
    the lower ones too; a higher level during a lower level's halt escalates it.

>>> from detectors.venue_base import PriceBucket, Tick
>>> mwb = MarketWideBreaker(warmup_s=0.0)
>>> def bucket(t, px):
...     return PriceBucket("v", t, t + 5, {i: Tick(p, p, p, p, 30.0, 30 * p, 30)
...                                         for i, p in px.items()})
>>> _ = mwb.observe_prices(bucket(0.0, {"A": 10.0, "B": 10.0, "C": 10.0}), None)
>>> found, halts = mwb.observe_prices(bucket(5.0, {"A": 9.0, "B": 9.0, "C": 9.5}), None)
>>> found[0].kind, [(h.instrument, h.state, h.reason, h.resume_at) for h in halts]
('flash_crash', [('*', 'HALTED', 'MWC1', 910.0)])
>>> mwb.advance(910.0, None)[1][0][:4]
(910.0, '*', 'TRADING', 'RESUME')
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from typing import Any

from detectors.base import Finding, score_ratio, stable_id
from detectors.venue_base import HaltDecision, PriceBucket, Tick, round_evidence

__all__ = ["MarketWideBreaker", "cap_weights"]

_HOUR = 3600.0


def cap_weights(x: list[float], cap: float) -> list[float]:
    """Shares of ``x`` capped at ``max(cap, 1/len(x))``, the excess spread pro rata.

    >>> cap_weights([8.0, 1.0, 1.0], 0.5), cap_weights([5.0, 1.0], 0.2)
    ([0.5, 0.25, 0.25], [0.5, 0.5])
    """
    cap = max(cap, 1.0 / len(x))
    fixed: set[int] = set()
    w = [v / sum(x) for v in x]
    while over := [i for i, v in enumerate(w) if i not in fixed and v > cap + 1e-12]:
        fixed.update(over)
        free = sum(x[i] for i in range(len(x)) if i not in fixed)
        rest = 1.0 - cap * len(fixed)
        w = [cap if i in fixed else rest * x[i] / free for i in range(len(x))]
    return w


def _ex_largest(movers: list[tuple[str, float, float, float]]) -> float:
    """Weighted mean move of the constituents without the largest contributor.

    >>> _ex_largest([("A", 0.25, 1.0, -0.6), ("B", 0.25, 1.0, -0.02), ("C", 0.5, 1.0, 0.0)])
    -0.00666...
    """
    top = max(range(len(movers)), key=lambda i: (abs(movers[i][1] * movers[i][3]), -i))
    rest = [m for i, m in enumerate(movers) if i != top]
    weight = sum(m[1] for m in rest)
    return sum(m[1] * m[3] for m in rest) / weight if weight > 0 else 0.0


class _Inst:
    __slots__ = ("last", "notional", "seen", "trades")

    def __init__(self) -> None:
        self.last, self.seen, self.notional, self.trades = math.nan, -math.inf, 0.0, 0.0

    def add(self, t: float, tick: Tick) -> None:
        decay = math.exp(-(t - self.seen) / _HOUR) if self.seen > -math.inf else 0.0
        self.notional = self.notional * decay + tick.notional
        self.trades = self.trades * decay + tick.trades
        self.seen, self.last = t, tick.last

    def liquidity(self, t: float) -> tuple[float, float]:
        decay = math.exp(-(t - self.seen) / _HOUR)
        return self.notional * decay, self.trades * decay


class MarketWideBreaker:
    """Halts the whole venue on a broad, fast fall of its index (see the module notes)."""

    name = "marketwide"
    version = "1"

    def __init__(self, *, levels: tuple[float, float, float] = (0.07, 0.13, 0.20),
                 halt_s: float = 900.0, rearm_s: float = 86_400.0, max_weight: float = 0.2,
                 min_trades: float = 20.0, stale_s: float = 600.0, max_constituents: int = 50,
                 min_constituents: int = 3, rebalance_s: float = 300.0,
                 breadth_weight: float = 2 / 3, min_decliners: int = 3, warmup_s: float = 300.0,
                 max_instruments: int = 2_000) -> None:
        self.levels, self.halt_s, self.rearm_s = levels, halt_s, rearm_s
        self.max_weight, self.min_trades, self.stale_s = max_weight, min_trades, stale_s
        self.max_constituents, self.min_constituents = max_constituents, min_constituents
        self.rebalance_s, self.breadth_weight = rebalance_s, breadth_weight
        self.min_decliners, self.warmup_s = min_decliners, warmup_s
        self.max_instruments = max_instruments
        self._insts: OrderedDict[str, _Inst] = OrderedDict()  # least recently traded first
        self._members: dict[str, tuple[float, float]] = {}  # name -> (weight, base price)
        self._base_level, self.level = 100.0, 100.0
        self._next_rebalance, self._born = -math.inf, math.inf
        #: per minute: (minute, index high, constituents' prices at that high); one hour
        self._highs: deque[tuple[int, float, dict[str, float]]] = deque(maxlen=61)
        self._tripped: dict[str, float] = {}
        #: ((reference, its prices), since): held for ``rearm_s`` after a trip
        self._anchor: tuple[tuple[float, dict[str, float]], float] | None = None
        self._resume_at: float | None = None

    def observe_prices(self, bucket: PriceBucket,
                       ctx: Any) -> tuple[list[Finding], list[HaltDecision]]:
        """Update the index with one closed bucket; trip a level if the fall is broad."""
        t, minute = bucket.end, int(bucket.start // 60)
        for name, tick in sorted(bucket.ticks.items()):
            if not (tick.last > 0 and math.isfinite(tick.last) and math.isfinite(tick.notional)):
                continue
            inst = self._insts.get(name)
            if inst is None:
                inst = self._insts[name] = self._admit()
            self._insts.move_to_end(name)
            inst.add(t, tick)
        if bucket.start >= self._next_rebalance:
            self._rebalance(t)
            self._next_rebalance = bucket.start + self.rebalance_s
        if not self._members:
            return [], []
        self.level = self._base_level * sum(
            w * self._insts[n].last / base for n, (w, base) in self._members.items())
        self._push_index(minute)
        ref, snap = self._reference(minute)
        if self._anchor is not None and t - self._anchor[1] < self.rearm_s \
                and self._anchor[0][0] > ref:
            ref, snap = self._anchor[0]
        decline = 1.0 - self.level / ref
        if t - self._born < self.warmup_s:
            return [], []
        for k in reversed(range(len(self.levels))):
            reason = f"MWC{k + 1}"
            if decline < self.levels[k]:
                continue
            if t - self._tripped.get(reason, -math.inf) < self.rearm_s:
                break
            movers = self._movers(snap)
            down = sum(w for n, w, _, mv in movers if mv <= -self.levels[k] / 2)
            count = sum(1 for *_, mv in movers if mv <= -self.levels[k] / 2)
            if down >= self.breadth_weight and count >= self.min_decliners \
                    and -_ex_largest(movers) >= self.levels[k]:
                return self._trip(bucket.venue, t, k, (ref, snap), decline, (down, count),
                                  movers)
        return [], []

    def advance(self, watermark: float, ctx: Any) -> tuple[list[Finding], list[HaltDecision]]:
        """The timed venue resumption, stamped at ``resume_at``, once ``watermark`` reaches it."""
        if self._resume_at is None or watermark < self._resume_at:
            return [], []
        at, self._resume_at = self._resume_at, None
        return [], [HaltDecision(at, "*", "TRADING", "RESUME", None)]

    def _admit(self) -> _Inst:
        if len(self._insts) >= self.max_instruments:  # evict the longest idle non-member
            victim = next((n for n in self._insts if n not in self._members), None)
            if victim is not None:
                del self._insts[victim]
        return _Inst()

    def _rebalance(self, t: float) -> None:
        liquid = []
        for name, inst in self._insts.items():
            notional, trades = inst.liquidity(t)
            if trades >= self.min_trades and t - inst.seen <= self.stale_s and notional > 0:
                liquid.append((-notional, name))
        chosen = sorted(liquid)[: self.max_constituents]
        if len(chosen) < self.min_constituents:
            self._members = {}
            return
        if self._members:
            self._base_level = self.level
        self._born = min(self._born, t)
        weights = cap_weights([-v for v, _ in chosen], self.max_weight)
        self._members = {n: (w, self._insts[n].last)
                         for (_, n), w in zip(chosen, weights, strict=True)}

    def _push_index(self, minute: int) -> None:
        """Keep the index's high of each minute with its constituents' prices then."""
        if self._highs and self._highs[-1][0] == minute:
            if self.level <= self._highs[-1][1]:
                return
            self._highs.pop()
        snap = {n: self._insts[n].last for n in self._members}
        self._highs.append((minute, self.level, snap))

    def _reference(self, minute: int) -> tuple[float, dict[str, float]]:
        """The index's 60-minute high and its constituents' prices at that moment."""
        best = max((h for h in self._highs if h[0] >= minute - 60), key=lambda h: h[1])
        return best[1], best[2]

    def _movers(self, snap: dict[str, float]) -> list[tuple[str, float, float, float]]:
        """Constituents as (name, weight, price at the reference, move since), heaviest
        first; a constituent added since the reference counts as unmoved."""
        out = []
        for n, (w, _base) in self._members.items():
            last = self._insts[n].last
            then = snap.get(n, last)
            out.append((n, w, then, last / then - 1.0))
        return sorted(out, key=lambda m: (-m[1], m[0]))

    def _trip(self, venue: str, t: float, k: int, reference: tuple[float, dict[str, float]],
              decline: float, breadth: tuple[float, int],
              movers: list[tuple[str, float, float, float]],
              ) -> tuple[list[Finding], list[HaltDecision]]:
        reason, level = f"MWC{k + 1}", self.levels[k]
        (ref, _), (down, count) = reference, breadth
        for j in range(k + 1):
            self._tripped[f"MWC{j + 1}"] = t
        self._anchor = (reference, t)
        resume_at = t + self.halt_s if k < 2 else None
        self._resume_at = resume_at
        key = stable_id("mwc", venue, reason, round_evidence(t), round_evidence(self.level))
        halt = ("venue halted 15 min" if resume_at is not None and self.halt_s == 900.0 else
                f"venue halted {self.halt_s:g} s" if resume_at is not None else
                "venue halted until a regulator resumes it")
        summary = (f"Venue index fell {100 * decline:.1f}% from its 60-minute high "
                   f"({count} of {len(movers)} constituents, {100 * down:.0f}% of the weight, down "
                   f"at least {100 * level / 2:.1f}%): level {k + 1} ({100 * level:g}%), {halt}")
        evidence = {
            "level": reason, "threshold": level, "decline": round_evidence(decline),
            "index": round_evidence(self.level), "reference": round_evidence(ref),
            "reference_rule": "trailing 60-minute high of the index, held 24 h after a trip",
            "ex_largest": round_evidence(_ex_largest(movers)),
            "breadth": {"weight_down": round_evidence(down), "decliners": count,
                        "min_weight": self.breadth_weight, "min_decliners": self.min_decliners,
                        "move": -level / 2},
            "constituents": [{"instrument": n, "weight": round_evidence(w),
                              "at_reference": round_evidence(h),
                              "price": round_evidence(self._insts[n].last),
                              "move": round_evidence(mv)} for n, w, h, mv in movers[:20]],
            "constituent_count": len(movers), "max_weight": self.max_weight,
            "halt": {"state": "HALTED", "resume_at": resume_at},
        }
        finding = Finding(kind="flash_crash", ts=t, score=score_ratio(decline / self.levels[0]),
                          venue=venue, instrument=None, agents=[], summary=summary,
                          evidence=evidence, key=key)
        return [finding], [HaltDecision(t, "*", "HALTED", reason, resume_at, alert_ids=(key,))]
