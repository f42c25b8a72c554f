"""Tacit price collusion among posted-price sellers: the screens of antitrust practice.

:class:`PriceCollusionDetector` (kind ``price_collusion``) is a stage-2 detector
(:mod:`detectors.venue_base`). Per instrument and window it takes each seller's volume-weighted
price from ``view.pairs`` and applies, against the instrument's *own* history only:

- **gate** — a posted-price oligopoly: ≥ 2 sellers and a Herfindahl index of sell volume
  ≥ ``min_hhi`` (0.25 = the 2,500 points of "highly concentrated" in merger practice);
  other windows are ignored, so order-book markets keep no state here;
- **punishment** — deviation → punishment → reversion (Calvano et al. 2020): a seller's price
  (the war starts) and then the sellers' price index fall below their plateaus (median of the
  last ``plateau_n`` calm windows) by at least
  ``min_drop``, ``k_noise`` robust s.d. of the calm windows around it and the largest such calm
  deviation in ``history`` (deeper than anything the calm market did; screened once ``grace``
  calm deviations are known), at least two
  sellers each cut their own price by that much (the rival answers the deviator), and within
  ``max_war`` windows the index recovers ≥ ``revert`` of the drop. A fall that does not revert
  is a new price level, not a punishment;
- **level** — the river rolling mean of the calm index over ``recent`` windows / baseline
  ≥ 1 + ``min_rise``; the baseline is the lower of the median index over the last ``history``
  windows and the mean price of the last price war (a war shows what the sellers can live with);
- **variance** — a river rolling CV of the calm index over ``recent`` windows at most
  ``max_var_ratio`` of its own historical median, while the level screen holds;
- **parallel** — Pearson correlation of the two largest sellers' window-to-window price changes
  over ``recent`` windows ≥ ``min_corr`` (evidence and score only: best responses co-move too).

A finding needs punishment + level, or level + variance held for ``persist`` windows. Score:
``score_ratio(0.5 · Σ min(2, measure/threshold))`` over the screens crossed, so two screens at
their thresholds give 50, all four at twice them 94. One alert per episode: after a finding the
instrument is quiet for ``cooldown_s`` and its baseline learns nothing (the baseline is protected).
State: ≤ ``max_instruments`` instruments (least recently seen evicted, idle ones after
``idle_s``), ≤ ``max_sellers`` sellers a window, deques of fixed length.

Breakers (a recommendation; no breaker code is changed here): the price war a punishment starts
is the cartel disciplining a deviator, not disorder. Today it trips VELOCITY pauses, which freeze
the deviator's lower price, shield the cartel and delay the buyers' gain. Breakers should not pause
a price *fall* on an instrument with an open ``price_collusion`` alert while the fall stays inside
the LULD band around the competitive baseline in the alert's evidence; they should attach the
alert id to any halt they still take there, and keep VELOCITY for rises and for falls beyond it.

Examples
--------
>>> from detectors.flows import PairFlow
>>> def view(t, p1, p2):
...     pairs = [PairFlow("b", s, 1, 10.0, 10.0 * p, t, t, [f"{s}{t:g}"])
...              for s, p in (("s1", p1), ("s2", p2))]
...     return WindowView(venue="v", instrument="GPU", window_start=t, window_end=t + 60,
...                       trades=2, volume=20.0, notional=10 * (p1 + p2), first_price=p1,
...                       last_price=p2, vwap=(p1 + p2) / 2, pairs=pairs, agents=[])
>>> det = PriceCollusionDetector()
>>> path = [1.8] * 8 + [1.6, 1.55, 1.8, 1.8]
>>> found = [f for i, p in enumerate(path) for f in det.observe(view(60.0 * i, p, p), None)]
>>> [(f.kind, f.ts, f.agents, f.evidence["crossed"]) for f in found]
[('price_collusion', 660.0, ['s1', 's2'], ['level', 'parallel', 'punishment'])]
"""

from __future__ import annotations

import math
import statistics
from collections import OrderedDict, deque
from typing import Any

from river import stats, utils

from detectors.base import Finding, score_ratio, stable_id
from detectors.venue_base import VenueContext, WindowView, round_evidence

__all__ = ["PriceCollusionDetector"]


class _Inst:
    """One instrument's bounded history (window counts, not time, drive every deque)."""

    def __init__(self, history: int, plateau_n: int, recent: int) -> None:
        self.idx: deque[float] = deque(maxlen=history)    # baseline: index of learnable windows
        self.moves: deque[float] = deque(maxlen=history)  # |log(index / plateau)|, calm
        self.cvs: deque[float] = deque(maxlen=history)    # rolling CVs seen so far
        self.calm: deque[float] = deque(maxlen=plateau_n)  # last calm index values
        self.sellers: deque[dict[str, float]] = deque(maxlen=max(recent, plateau_n) + 1)
        self.ids: deque[str] = deque(maxlen=20)
        self.episodes: deque[dict[str, Any]] = deque(maxlen=3)
        self.mean: Any = utils.Rolling(stats.Mean, window_size=recent)  # river's stubs are loose
        self.var: Any = utils.Rolling(stats.Var, window_size=recent)
        self.war: dict[str, Any] | None = None
        self.war_level: float | None = None
        self.persist, self.since = 0, 0.0
        self.last_end, self.cool_until = -math.inf, -math.inf


class PriceCollusionDetector:
    """Variance, level, parallel-move and punishment screens on posted-price sellers."""

    name = "price_collusion"
    version = "1"

    def __init__(self, *, min_hhi: float = 0.25, min_drop: float = 0.03, k_noise: float = 6.0,
                 revert: float = 0.75, max_war: int = 15, min_rise: float = 0.03,
                 max_var_ratio: float = 0.5, min_corr: float = 0.5, persist: int = 5,
                 grace: int = 4, plateau_n: int = 4, recent: int = 10, history: int = 720,
                 max_sellers: int = 4, max_instruments: int = 256, cooldown_s: float = 3600.0,
                 idle_s: float = 21600.0) -> None:
        self.min_hhi, self.min_drop, self.k_noise, self.revert = min_hhi, min_drop, k_noise, revert
        self.max_war, self.min_rise, self.max_var_ratio = max_war, min_rise, max_var_ratio
        self.min_corr, self.persist, self.grace = min_corr, persist, grace
        self.plateau_n = plateau_n
        self.recent, self.history, self.max_sellers = recent, history, max_sellers
        self.max_instruments, self.cooldown_s, self.idle_s = max_instruments, cooldown_s, idle_s
        self._inst: OrderedDict[str, _Inst] = OrderedDict()

    def observe(self, view: WindowView, ctx: VenueContext | None) -> list[Finding]:
        """Screen one instrument's closed window; at most one finding."""
        qty: dict[str, float] = {}
        notional: dict[str, float] = {}
        for p in view.pairs:
            qty[p.seller] = qty.get(p.seller, 0.0) + p.qty
            notional[p.seller] = notional.get(p.seller, 0.0) + p.notional
        total = sum(qty.values())
        hhi = sum((q / total) ** 2 for q in qty.values()) if total > 0 else 0.0
        if len(qty) < 2 or hhi < self.min_hhi:
            return []
        st = self._state(view.instrument)
        if view.window_start - st.last_end > self.max_war * (view.window_end - view.window_start):
            st.calm.clear()
            st.war, st.persist = None, 0
        st.last_end = view.window_end
        top = sorted(qty, key=lambda s: (-qty[s], s))[: self.max_sellers]
        prices = {s: notional[s] / qty[s] for s in top if qty[s] > 0}
        index = sum(notional[s] for s in top) / sum(qty[s] for s in top)
        st.ids.extend(t for p in view.pairs if p.seller in prices for t in p.trade_ids[:2])
        episode = self._war(st, index, prices, view.window_start)
        st.sellers.append(prices)
        learn = view.window_end > st.cool_until
        base_cv = statistics.median(st.cvs) if st.cvs else 0.0
        if st.war is None and episode is None:
            st.mean.update(index)
            st.var.update(index)
        cv = math.sqrt(max(st.var.get(), 0.0)) / st.mean.get() if st.mean.get() > 0 else 0.0
        if learn:
            st.idx.append(index)
            if st.war is None and episode is None:
                st.cvs.append(cv)
        if st.war is not None or len(st.idx) < self.grace or not st.calm:
            return []
        level, baseline = st.mean.get(), statistics.median(st.idx)
        if st.war_level is not None:
            baseline = min(baseline, st.war_level)
        ratios = {"level": level / baseline - 1.0, "variance": (base_cv + 1e-9) / (cv + 1e-9),
                  "parallel": self._corr(st), "punishment": episode["depth"] if episode else 0.0}
        crossed = [k for k, v, t in (("level", ratios["level"], self.min_rise),
                                     ("variance", ratios["variance"], 1.0 / self.max_var_ratio),
                                     ("parallel", ratios["parallel"], self.min_corr))
                   if v >= t] + (["punishment"] if episode else [])
        if "level" in crossed and "variance" in crossed:
            st.persist, st.since = st.persist + 1, st.since if st.persist else view.window_start
        else:
            st.persist = 0
        fire = "level" in crossed and (episode is not None or st.persist >= self.persist)
        if not fire or not learn:
            return []
        st.cool_until, st.persist = view.window_end + self.cooldown_s, 0
        return [self._finding(view, st, top, prices, level, baseline, ratios, crossed, cv,
                              base_cv, episode)]

    def end_window(self, start: float, end: float, ctx: VenueContext | None) -> list[Finding]:
        """Forget instruments idle for ``idle_s``; findings come from :meth:`observe` only."""
        for key in [k for k, st in self._inst.items() if st.last_end < end - self.idle_s]:
            del self._inst[key]
        return []

    def _state(self, instrument: str) -> _Inst:
        st = self._inst.pop(instrument, None)
        if st is None:
            st = _Inst(self.history, self.plateau_n, self.recent)
            while len(self._inst) >= self.max_instruments:
                self._inst.popitem(last=False)
        self._inst[instrument] = st
        return st

    def _war(self, st: _Inst, index: float, prices: dict[str, float],
             start: float) -> dict[str, Any] | None:
        """Advance the deviation → punishment → reversion machine; a completed episode or None."""
        war = st.war
        if war is None:
            if len(st.calm) == self.plateau_n:
                plateau = statistics.median(st.calm)
                noise = 1.4826 * statistics.median(st.moves) if st.moves else 0.0
                thr = max(self.min_drop, self.k_noise * noise, max(st.moves, default=0.0))
                own = {s: statistics.median([w[s] for w in st.sellers if s in w] or [p])
                       for s, p in prices.items()}
                cut = max(1.0 - min(index / plateau, *(p / own[s] for s, p in prices.items())), 0)
                if len(st.moves) >= self.grace and cut >= thr:  # the index or one seller fell
                    st.war = {"start": start, "plateau": plateau, "thr": thr, "trough": index,
                              "sum": index, "n": 1, "own": own, "cut": {}}
                    self._cuts(st.war, prices)
                    return None
                st.moves.append(abs(math.log(index / plateau)))
            st.calm.append(index)
            return None
        war["n"] += 1
        self._cuts(war, prices)
        fall = war["plateau"] - war["trough"]
        if fall <= 0 or (index - war["trough"]) / fall >= self.revert:
            st.war = None
            st.calm.append(index)
            cutters = sorted(s for s, c in war["cut"].items() if c >= war["thr"])
            if len(cutters) < 2 or fall < war["thr"] * war["plateau"]:
                if sum(c >= war["thr"] / 2 for c in war["cut"].values()) < 2:
                    st.moves.append(max(fall, 0.0) / war["plateau"])  # one seller's dip: calm
                return None
            st.war_level = war["sum"] / (war["n"] - 1)
            ep = {"start": war["start"], "windows": war["n"] - 1, "plateau": war["plateau"],
                  "trough": war["trough"], "depth": 1.0 - war["trough"] / war["plateau"],
                  "threshold": war["thr"], "cutters": cutters}
            st.episodes.append({k: v if k == "start" or not isinstance(v, float)
                                else round_evidence(v) for k, v in ep.items()})
            return ep
        war["trough"] = min(war["trough"], index)
        war["sum"] += index
        if war["n"] > self.max_war:  # no reversion: a new price level, learn it afresh
            st.war = None
            st.calm.clear()
        return None

    @staticmethod
    def _cuts(war: dict[str, Any], prices: dict[str, float]) -> None:
        for s, p in prices.items():
            if s in war["own"]:
                war["cut"][s] = max(war["cut"].get(s, 0.0), 1.0 - p / war["own"][s])

    def _corr(self, st: _Inst) -> float:
        """Correlation of the two largest sellers' window-to-window log price changes."""
        a, b = list(st.sellers[-1])[:2] if len(st.sellers[-1]) >= 2 else ("", "")
        both = [(w[a], w[b]) for w in list(st.sellers)[-self.recent - 1:] if a in w and b in w]
        da = [math.log(y[0] / x[0]) for x, y in zip(both, both[1:], strict=False)]
        db = [math.log(y[1] / x[1]) for x, y in zip(both, both[1:], strict=False)]
        if len(da) < 3 or min(statistics.pstdev(da), statistics.pstdev(db)) < 1e-12:
            return 0.0
        return float(statistics.correlation(da, db))

    def _finding(self, view: WindowView, st: _Inst, top: list[str], prices: dict[str, float],
                 level: float, baseline: float, ratios: dict[str, float], crossed: list[str],
                 cv: float, base_cv: float, episode: dict[str, Any] | None) -> Finding:
        thr = {"level": self.min_rise, "variance": 1.0 / self.max_var_ratio,
               "parallel": self.min_corr,
               "punishment": episode["threshold"] if episode else self.min_drop}
        score = score_ratio(0.5 * sum(min(2.0, ratios[k] / thr[k]) for k in crossed))
        start = episode["start"] if episode else st.since
        agents = sorted(top)
        r = round_evidence
        evidence = {
            "seller_prices": {s: r(p) for s, p in sorted(prices.items())},
            "level": r(level), "baseline": r(baseline), "level_ratio": r(level / baseline),
            "cv": r(cv), "baseline_cv": r(base_cv),
            "variance_ratio": r((cv + 1e-9) / (base_cv + 1e-9)),
            "parallel_corr": r(ratios["parallel"]), "punishment_episodes": list(st.episodes),
            "thresholds": {k: r(v) for k, v in thr.items()}, "crossed": crossed,
            "episode_start": start, "trade_ids": list(st.ids),
        }
        how = ("punished a price cut and returned to the high price" if episode
               else "kept prices unusually steady")
        return Finding(
            kind="price_collusion", ts=view.window_end, score=score, venue=view.venue,
            instrument=view.instrument, agents=agents, evidence=evidence,
            summary=(f"{len(agents)} sellers of {view.instrument} priced "
                     f"{level / baseline - 1.0:.0%} above the instrument's own baseline "
                     f"and {how}."),
            key=stable_id("pc", view.venue, view.instrument, start, ",".join(agents)))
