"""Agents behaving unlike the venue's agents, scored online with river (stage 2).

Rules
-----
- **Features.** Each closed window gives every agent of each instrument seven numbers in
  ``[0, 1]`` (:func:`features`): counterparty concentration (share of its volume with its
  largest counterparty), reciprocity (share of its volume bought from *and* sold to the same
  counterparties), position neutrality ``1 - |buy - sell| / (buy + sell)``, order-flow direction
  ``(1 + (buy - sell) / (buy + sell)) / 2``, its share of the instrument's volume, and size and
  timing regularity ``1 / (1 + cv)`` of its mean trade size and of the gaps between its active
  windows, from exponentially weighted river statistics (``stats.EWMean``/``EWVar``).
  The model sees the agent's *profile*: exponentially weighted means (river ``EWMean``) of its
  concentration, reciprocity and neutrality, the neutrality of its weighted net position, and
  its size and timing regularity, because manipulation is steady behaviour, not one window.
- **Scoring.** A river ``HalfSpaceTrees`` (fixed ``seed``) inside ``anomaly.ThresholdFilter``
  scores each vector and learns it only when it scores below ``protect``: the baseline is
  protected from what it flags. A river ``stats.Quantile`` tracks the ``quantile`` of the
  scores of every vector, over the whole venue.
- **Alert.** After ``warmup`` scored vectors venue-wide and ``grace`` windows of the agent, it
  alerts when the mean of the agent's last ``grace`` scores exceeds the calibrated threshold
  ``max(floor, margin · quantile)``: one odd window does not alert, steady oddness does.
- **Only churn alerts.** An alert also needs the agent's weighted net position to be nearly flat
  (``net_neutrality >= min_neutrality``) with few counterparties (``counterparty_concentration
  >= min_concentration``): unusual *and* trading volume without taking a position inside a
  small circle, the footprint of wash, circular and Sybil churn (a market maker is flat too, but
  with everyone). One-sided agents (a seller posting
  prices in a duopoly, a fleet buying energy) are unusual by the market's design, not by
  manipulation: they are scored and learnt from, never alerted.
- **Score** 0-100: :func:`detectors.base.score_ratio` of ``mean / threshold`` with the ratio
  stretched (``1 + 4 · (ratio - 1)``): 50 at the threshold, 75 a quarter above it.
- **Once per episode.** An agent re-alerts only after ``cooldown_s`` or when its mean rises by
  ``0.1`` over its last alert. **Bounds**: at most ``max_agents`` agents are tracked; those idle
  for ``idle_s`` are dropped, then the least recently seen. At most ``max_per_window`` agents of
  one window are scored, the busiest by volume (the rest are counted in ``unscored``): a flood
  of new ids costs a bounded time per window (each scored agent costs ~0.1 ms in river).

Examples
--------
>>> from detectors.flows import AgentActivity, PairFlow
>>> from detectors.venue_base import WindowView
>>> pairs = [PairFlow("a", "b", 2, 4.0, 8.0, 1.0, 9.0, ["t1", "t2"]),
...          PairFlow("b", "a", 1, 4.0, 8.0, 20.0, 20.0, ["t3"])]
>>> acts = [AgentActivity("a", 4.0, 4.0, 8.0, 8.0, 3, 1.0, 20.0, 1)]
>>> view = WindowView(venue="v", instrument="I", window_start=0.0, window_end=60.0, trades=3,
...                   volume=8.0, notional=16.0, first_price=2.0, last_price=2.0, vwap=2.0,
...                   pairs=pairs, agents=acts)
>>> [round(x, 2) for x in features(view, acts[0], None).values()]
[1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.5]
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from typing import Any

from river import anomaly, stats

from detectors.base import Finding, score_ratio, stable_id
from detectors.flows import AgentActivity
from detectors.venue_base import VenueContext, WindowView, round_evidence

__all__ = ["AgentAnomalyDetector", "features"]


class _Agent:
    """What is kept of one agent: a few river statistics and its last scores."""

    __slots__ = ("alerted", "alerted_at", "gap", "last", "n", "net", "profile", "scores", "size",
                 "trades")

    def __init__(self, grace: int) -> None:
        self.profile: dict[str, stats.EWMean] = {}
        self.net = (stats.EWMean(0.1), stats.EWMean(0.1))  # buys, sells
        self.size, self.gap = (stats.EWMean(0.3), stats.EWVar(0.3)), (
            stats.EWMean(0.3), stats.EWVar(0.3))
        self.scores: deque[float] = deque(maxlen=grace)
        self.last, self.n, self.alerted, self.alerted_at = -math.inf, 0, 0.0, -math.inf
        self.trades: deque[str] = deque(maxlen=20)


def _regularity(pair: tuple[Any, Any]) -> float:
    mean, var = pair[0].get(), pair[1].get()
    return 1.0 / (1.0 + math.sqrt(max(var, 0.0)) / mean) if mean > 0 else 0.5


def _flows(view: WindowView) -> dict[str, dict[str, list[float]]]:
    """agent -> counterparty -> [bought from it, sold to it], from the window's pairs."""
    out: dict[str, dict[str, list[float]]] = {}
    for p in view.pairs:
        out.setdefault(p.buyer, {}).setdefault(p.seller, [0.0, 0.0])[0] += p.qty
        out.setdefault(p.seller, {}).setdefault(p.buyer, [0.0, 0.0])[1] += p.qty
    return out


def features(view: WindowView, act: AgentActivity, state: _Agent | None,
             index: dict[str, dict[str, list[float]]] | None = None) -> dict[str, float]:
    """The agent's feature vector in this window (updates ``state``'s statistics);
    ``index`` is :func:`_flows` of the view, computed once per view by the detector."""
    buy, sell = act.buy_qty, act.sell_qty
    vol = buy + sell
    flows = (index if index is not None else _flows(view)).get(act.agent, {})
    top = max((b + s for b, s in flows.values()), default=0.0)
    recip = sum(2 * min(b, s) for b, s in flows.values())
    if state is not None:
        if act.trades:
            for s in state.size:
                s.update(vol / act.trades)
        if state.last > -math.inf:
            for s in state.gap:
                s.update(act.first_ts - state.last)
        state.last = act.first_ts
    return {
        "counterparty_concentration": min(top / vol, 1.0) if vol > 0 else 0.0,
        "reciprocity": min(recip / vol, 1.0) if vol > 0 else 0.0,
        "neutrality": 1.0 - abs(buy - sell) / vol if vol > 0 else 0.0,
        "direction": (1.0 + (buy - sell) / vol) / 2 if vol > 0 else 0.5,
        "volume_share": min(vol / (2 * view.volume), 1.0) if view.volume > 0 else 0.0,
        "size_regularity": _regularity(state.size) if state and state.n else 0.5,
        "timing_regularity": _regularity(state.gap) if state and state.n > 1 else 0.5,
    }


class AgentAnomalyDetector:
    """Per-agent behaviour scored against the venue's baseline (see module notes)."""

    name = "anomaly"
    version = "1"

    def __init__(self, *, seed: int = 42, n_trees: int = 10, height: int = 8,
                 window_size: int = 1000, protect: float = 0.97, quantile: float = 0.999,
                 margin: float = 1.0, floor: float = 0.97, warmup: int = 1_000, grace: int = 5,
                 cooldown_s: float = 3_600.0, idle_s: float = 3_600.0,
                 max_agents: int = 5_000, min_neutrality: float = 0.8,
                 min_concentration: float = 0.5, max_per_window: int = 1_000) -> None:
        self.seed, self.n_trees, self.height, self.window_size = seed, n_trees, height, window_size
        self.protect, self.quantile, self.margin, self.floor = protect, quantile, margin, floor
        self.warmup, self.grace, self.cooldown_s = warmup, grace, cooldown_s
        self.idle_s, self.max_agents, self.min_neutrality = idle_s, max_agents, min_neutrality
        self.min_concentration, self.max_per_window = min_concentration, max_per_window
        #: agent-windows left unscored because a window held more than ``max_per_window``
        self.unscored = 0
        self.model = anomaly.ThresholdFilter(
            anomaly.HalfSpaceTrees(n_trees=n_trees, height=height, window_size=window_size,
                                   seed=seed), threshold=protect, protect_anomaly_detector=True)
        self.calibration = stats.Quantile(quantile)
        self.seen = 0
        self._agents: OrderedDict[str, _Agent] = OrderedDict()

    @staticmethod
    def _profile(state: _Agent, x: dict[str, float], act: AgentActivity) -> dict[str, float]:
        """The agent's profile: exponentially weighted means of its window features."""
        for k in ("counterparty_concentration", "reciprocity", "neutrality"):
            state.profile.setdefault(k, stats.EWMean(0.2)).update(x[k])
        state.net[0].update(act.buy_qty)
        state.net[1].update(act.sell_qty)
        b, s = state.net[0].get(), state.net[1].get()
        y = {k: m.get() for k, m in state.profile.items()}
        y["net_neutrality"] = 1.0 - abs(b - s) / (b + s) if b + s > 0 else 0.0
        y["size_regularity"], y["timing_regularity"] = x["size_regularity"], x["timing_regularity"]
        return y

    def threshold(self) -> float:
        """The calibrated alert threshold on an agent's mean score."""
        q = self.calibration.get()
        return max(self.floor, self.margin * q) if q is not None else self.floor

    def observe(self, view: WindowView, ctx: VenueContext) -> list[Finding]:
        out, index = [], _flows(view)
        ids: dict[str, list[str]] = {}
        for p in view.pairs:
            for a in {p.buyer, p.seller}:
                ids.setdefault(a, []).extend(p.trade_ids[:1])
        acts = view.agents
        if len(acts) > self.max_per_window:  # a flood of ids: the busiest are scored
            self.unscored += len(acts) - self.max_per_window
            acts = sorted(acts, key=lambda a: (-(a.buy_qty + a.sell_qty), a.agent))
            acts = acts[:self.max_per_window]
        for act in acts:
            state = self._agents.pop(act.agent, None) or _Agent(self.grace)
            self._agents[act.agent] = state  # most recently seen last
            x = self._profile(state, features(view, act, state, index), act)
            state.n += 1
            score = float(self.model.score_one(x))
            if score < self.protect:  # ThresholdFilter.learn_one, without scoring twice
                self.model.anomaly_detector.learn_one(x)  # type: ignore[arg-type]
            self.seen += 1
            self.calibration.update(score)
            state.scores.append(score)
            state.trades.extend(ids.get(act.agent, [])[:20])
            f = self._judge(act.agent, state, x, view)
            if f is not None:
                out.append(f)
        while len(self._agents) > self.max_agents:
            self._agents.popitem(last=False)
        return out

    def end_window(self, start: float, end: float, ctx: VenueContext) -> list[Finding]:
        stale = [a for a, s in self._agents.items() if end - s.last > self.idle_s]
        for a in stale:
            del self._agents[a]
        return []

    def _judge(self, agent: str, state: _Agent, x: dict[str, float],
               view: WindowView) -> Finding | None:
        if self.seen < self.warmup or len(state.scores) < self.grace:
            return None
        mean, limit, end = sum(state.scores) / len(state.scores), self.threshold(), view.window_end
        if mean < limit or x["net_neutrality"] < self.min_neutrality \
                or x["counterparty_concentration"] < self.min_concentration or (
                end - state.alerted_at < self.cooldown_s and mean < state.alerted + 0.1):
            return None
        state.alerted, state.alerted_at = mean, end
        ratio = 1.0 + 4.0 * (mean / limit - 1.0) if limit > 0 else 1.0
        odd = sorted(x, key=lambda k: -abs(x[k] - 0.5))[:3]
        summary = (f"{agent} traded {view.instrument} unlike the venue's agents for "
                   f"{len(state.scores)} windows running (mean anomaly score {mean:.2f} over a "
                   f"threshold of {limit:.2f}), most of all in {', '.join(odd)}")
        evidence = {
            "agents": [agent], "features": {k: round_evidence(v, 3) for k, v in x.items()},
            "scores": [round_evidence(s, 3) for s in state.scores],
            "mean_score": round_evidence(mean, 4), "trade_ids": list(state.trades),
            "edges": [{"buyer": p.buyer, "seller": p.seller, "count": p.count,
                       "qty": round_evidence(p.qty), "notional": round_evidence(p.notional)}
                      for p in view.pairs if agent in (p.buyer, p.seller)][:20],
            "thresholds": {"threshold": round_evidence(limit, 4), "floor": self.floor,
                           "min_neutrality": self.min_neutrality,
                           "min_concentration": self.min_concentration,
                           "quantile": self.quantile, "grace": self.grace,
                           "warmup": self.warmup, "protect": self.protect},
        }
        return Finding(kind="anomaly", ts=end, score=score_ratio(ratio), venue=view.venue,
                       instrument=view.instrument, agents=[agent], summary=summary,
                       evidence=evidence, key=stable_id("anomaly", view.venue, view.instrument,
                                                        agent, end))
