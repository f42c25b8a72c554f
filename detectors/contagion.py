"""Contagion: an abnormal move of one instrument spreading to linked instruments within a minute.

Moves
    Per instrument: an exponentially weighted variance of 5-s log returns (updates clipped at
    ``clip`` sigmas, so a crash does not teach that crashes are normal) and its last prices of
    the last ``lag_s``. A bucket's move is its low or high (a sweep of the book is the earliest
    sign; thin books refill within the bucket) against each of those prices (horizons 5-60 s,
    so a fall spread over buckets counts), in sigmas of that horizon. A *source* moves at least
    ``z_source`` sigmas and ``min_source``; a *follower* ``z_follow`` and ``min_follow``, the
    same way. Instruments need ``grace`` returns first.
Links
    Declared (``links``, both ways); by asset class (``class_links`` pairs of
    ``asset_classes``, keyed by the name's first dash-separated part); learned: an EW
    correlation (``corr_halflife_s``) of clipped standardised ``corr_horizon_s`` returns (30 s:
    5-s returns of thin books are mostly bounce) among the ``top_k`` most liquid instruments,
    a link from ``min_corr`` over ``min_obs`` buckets. Flagged buckets are not learned from.
Rule
    A source's episode starts at its first source-grade bucket. Linked instruments with a
    follower-grade move the same way no later than ``lag_s`` after it are followers: one
    ``contagion`` finding per source and bucket (``instrument``: the hardest-hit new follower;
    evidence: moves, z-scores, lags, links, thresholds) and PAUSED/CONTAGION for ``pause_s``
    per follower, before its own bands trip, then TRADING/RESUME stamped at ``resume_at`` by
    :meth:`ContagionDetector.advance`. The earliest mover is the source (in one bucket, the
    largest in sigmas); a follower cannot lead in its episode; a paused instrument is neither.
    Linked instruments co-moving within their usual volatility never reach the thresholds.
Bounds
    ``max_instruments`` tracked (least recently traded evicted, learned members kept), ``top_k``
    squared cells, ``max_sources`` x ``max_followers`` per bucket, deques of ``lag_s / 5 + 1``.

>>> from detectors.venue_base import PriceBucket, Tick
>>> det = ContagionDetector(links={"GPU": ["KWH"]}, grace=3)
>>> def bucket(t, gpu, kwh):
...     return PriceBucket("v", t, t + 5, {"GPU": Tick(gpu, gpu, gpu, gpu, 1, gpu, 1),
...                                        "KWH": Tick(kwh, kwh, kwh, kwh, 1, kwh, 1)})
>>> for i in range(10):
...     _ = det.observe_prices(bucket(5.0 * i, 2.0 + 0.002 * (-1) ** i, 0.1 + 0.0001 * (-1) ** i),
...                            None)
>>> found, pauses = det.observe_prices(bucket(50.0, 1.6, 0.093), None)
>>> found[0].evidence["source"]["instrument"], [(p.instrument, p.reason, p.resume_at)
...                                              for p in pauses]
('GPU', [('KWH', 'CONTAGION', 175.0)])
>>> det.advance(175.0, None)[1][0][1:4]
('KWH', 'TRADING', 'RESUME')
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

import numpy as np

from detectors.base import Finding, score_ratio, stable_id
from detectors.venue_base import HaltDecision, PriceBucket, Tick, round_evidence

__all__ = ["M2M_CLASSES", "ContagionDetector"]

#: Asset class of an M2M instrument by the first part of its name (``GPU-H100-1H``: compute).
M2M_CLASSES: Mapping[str, str] = MappingProxyType(
    {"GPU": "compute", "CPU": "compute", "KWH": "energy", "MWH": "energy",
     "STORAGE": "storage", "BW": "bandwidth"})

Move = tuple[float, float, float, float]  # (move, z, horizon_s, reference price)


class _Inst:
    __slots__ = ("hist", "last", "notional", "obs", "seen", "var")

    def __init__(self, maxlen: int) -> None:
        self.last, self.seen, self.var, self.obs, self.notional = math.nan, -math.inf, 0.0, 0, 0.0
        self.hist: deque[tuple[float, float]] = deque(maxlen=maxlen)  # (bucket end, last)


def _best(moves: list[Move], z_min: float, abs_min: float) -> Move | None:
    ok = [m for m in moves if abs(m[1]) >= z_min and abs(m[0]) >= abs_min]
    return max(ok, key=lambda m: (abs(m[0]), -m[2])) if ok else None


class ContagionDetector:
    """Pauses linked instruments that follow another's abnormal move (see the module notes)."""

    name = "contagion"
    version = "1"

    def __init__(self, *, links: Mapping[str, Sequence[str]] | None = None,
                 class_links: Sequence[tuple[str, str]] = (),
                 asset_classes: Mapping[str, str] = M2M_CLASSES, tick_s: float = 5.0,
                 lag_s: float = 60.0, z_source: float = 6.0, min_source: float = 0.02,
                 z_follow: float = 4.0, min_follow: float = 0.01, pause_s: float = 120.0,
                 halflife_s: float = 600.0, clip: float = 4.0, grace: int = 30,
                 min_sigma: float = 1e-4, top_k: int = 32, corr_horizon_s: float = 30.0,
                 corr_halflife_s: float = 3600.0,
                 min_corr: float = 0.2, min_obs: int = 120, rerank_s: float = 300.0,
                 max_instruments: int = 2_000, max_sources: int = 16,
                 max_followers: int = 50) -> None:
        self.links = {k: list(v) for k, v in (links or {}).items()}
        self.class_links, self.asset_classes = tuple(class_links), dict(asset_classes)
        self.tick_s, self.lag_s, self.pause_s = tick_s, lag_s, pause_s
        self.z_source, self.min_source, self.z_follow, self.min_follow = (
            z_source, min_source, z_follow, min_follow)
        self.halflife_s, self.clip, self.grace, self.min_sigma = halflife_s, clip, grace, min_sigma
        self.top_k, self.corr_horizon_s, self.corr_halflife_s = (
            top_k, corr_horizon_s, corr_halflife_s)
        self.min_corr, self.min_obs, self.rerank_s = min_corr, min_obs, rerank_s
        self.max_instruments, self.max_sources, self.max_followers = (
            max_instruments, max_sources, max_followers)
        self._declared = {(a, b) for a, bs in self.links.items() for b in bs}
        self._declared |= {(b, a) for a, b in self._declared}
        self._classes = {(a, b) for a, b in class_links} | {(b, a) for a, b in class_links}
        self._insts: OrderedDict[str, _Inst] = OrderedDict()  # least recently traded first
        #: source -> (episode start, last source-grade bucket, its move)
        self._sources: dict[str, tuple[float, float, Move]] = {}
        self._paused: dict[str, float] = {}  # follower -> resume_at
        self._members: dict[str, int] = {}  # learned-correlation slot of the top-k
        self._sxy, self._sxx, self._nobs = (np.zeros((top_k, top_k)) for _ in range(3))
        steps = max(int(round(corr_horizon_s / tick_s)), 1)
        self._grid = np.full((top_k, steps + 1), np.nan)  # members' last prices, ring of buckets
        self._step = 0
        self._next_rerank = -math.inf

    def observe_prices(self, bucket: PriceBucket,
                       ctx: Any) -> tuple[list[Finding], list[HaltDecision]]:
        """Score, then learn, one closed bucket; link followers to the sources they follow."""
        t = bucket.end
        follows: dict[str, Move] = {}
        flagged: set[str] = set()
        for name, tick in sorted(bucket.ticks.items()):
            if not (tick.last > 0 and tick.low > 0 and math.isfinite(tick.high)):
                continue
            inst = self._insts.get(name)
            if inst is None:
                inst = self._insts[name] = self._admit()
            self._insts.move_to_end(name)
            if self._score(name, inst, t, tick, follows):
                flagged.add(name)
            self._learn(inst, t, tick)
        self._learn_corr(flagged)
        if bucket.start >= self._next_rerank:
            self._rerank(t)
            self._next_rerank = bucket.start + self.rerank_s
        self._sources = {n: s for n, s in self._sources.items() if t - s[0] <= self.lag_s}
        return self._match(bucket.venue, t, follows)

    def advance(self, watermark: float, ctx: Any) -> tuple[list[Finding], list[HaltDecision]]:
        """Timed resumptions of paused followers, stamped at their ``resume_at``."""
        due = sorted((r, n) for n, r in self._paused.items() if r <= watermark)
        for _, n in due:
            del self._paused[n]
        return [], [HaltDecision(r, n, "TRADING", "RESUME", None) for r, n in due]

    def _admit(self) -> _Inst:
        if len(self._insts) >= self.max_instruments:  # evict the longest idle non-member
            victim = next((n for n in self._insts if n not in self._members), None)
            if victim is not None:
                del self._insts[victim]
                self._sources.pop(victim, None)
        return _Inst(int(self.lag_s // self.tick_s) + 1)

    def _score(self, name: str, inst: _Inst, t: float, tick: Tick,
               follows: dict[str, Move]) -> bool:
        """Record a source- or follower-grade move of this bucket; True if either."""
        while inst.hist and t - inst.hist[0][0] > self.lag_s:
            inst.hist.popleft()
        if inst.obs < self.grace or not inst.hist:
            return False
        sd = max(math.sqrt(inst.var), self.min_sigma)
        moves = []
        for then, ref in inst.hist:
            h = t - then
            scale = sd * math.sqrt(max(h / self.tick_s, 1.0))
            for px in (tick.low, tick.high):
                m = math.log(px / ref)
                moves.append((m, m / scale, h, ref))
        src = _best(moves, self.z_source, self.min_source)
        fol = _best(moves, self.z_follow, self.min_follow)
        if src is not None and name not in self._paused:
            old = self._sources.get(name)
            if old is not None and t - old[1] <= 2 * self.tick_s and old[2][0] * src[0] > 0:
                self._sources[name] = (old[0], t, max(old[2], src, key=lambda m: abs(m[0])))
            else:
                self._sources[name] = (t, t, src)
        if fol is not None:
            follows[name] = fol
        return src is not None or fol is not None

    def _learn(self, inst: _Inst, t: float, tick: Tick) -> None:
        """Update the instrument's variance (clipped after the grace period) and liquidity."""
        if inst.hist:
            n = min(max((t - inst.seen) / self.tick_s, 1.0), 12.0)
            r2 = math.log(tick.last / inst.last) ** 2 / n
            if inst.obs < self.grace:  # running mean until the grace period is over
                inst.var += (r2 - inst.var) / (inst.obs + 1)
            else:
                sd = max(math.sqrt(inst.var), self.min_sigma)
                a = 1.0 - 0.5 ** (self.tick_s / self.halflife_s)
                inst.var += a * (min(r2, (self.clip * sd) ** 2) - inst.var)
            inst.obs += 1
        decay = 0.5 ** ((t - inst.seen) / 3600.0) if inst.seen > -math.inf else 0.0
        inst.notional = inst.notional * decay + tick.notional
        inst.seen, inst.last = t, tick.last
        inst.hist.append((t, tick.last))

    def _learn_corr(self, flagged: set[str]) -> None:
        """Members' returns over ``corr_horizon_s`` (overlapping, on the bucket grid),
        standardised and clipped, into the correlation sums; flagged ones left out."""
        steps = self._grid.shape[1]
        now, back = self._step % steps, (self._step + 1) % steps
        self._step += 1
        u = np.zeros(self.top_k)
        mask = np.zeros(self.top_k, dtype=bool)
        for name, j in self._members.items():
            inst = self._insts.get(name)
            self._grid[j, now] = inst.last if inst is not None else np.nan
            then = self._grid[j, back]
            if inst is None or name in flagged or inst.obs < self.grace or not then > 0:
                continue
            sd = max(math.sqrt(inst.var), self.min_sigma) * math.sqrt(steps - 1)
            u[j] = max(-self.clip, min(self.clip, math.log(inst.last / then) / sd))
            mask[j] = True
        if mask.sum() < 2:
            return
        a = 1.0 - 0.5 ** (self.tick_s / self.corr_halflife_s)
        both = np.outer(mask, mask)
        self._sxy[both] += a * (np.outer(u, u)[both] - self._sxy[both])
        sq = np.broadcast_to((u * u)[:, None], both.shape)
        self._sxx[both] += a * (sq[both] - self._sxx[both])
        self._nobs[both] += 1

    def _rerank(self, t: float) -> None:
        """Re-choose the top-k liquid instruments; keep the statistics of those that stay."""
        ranked = sorted((-i.notional * 0.5 ** ((t - i.seen) / 3600.0), n)
                        for n, i in self._insts.items() if i.obs >= self.grace)
        chosen = [n for _, n in ranked[: self.top_k]]
        keep = [(self._members[n], j) for j, n in enumerate(chosen) if n in self._members]
        new = [np.zeros_like(self._sxy) for _ in range(3)]
        grid = np.full_like(self._grid, np.nan)
        if keep:
            old_i, new_i = (np.array(x) for x in zip(*keep, strict=True))
            for dst, src in zip(new, (self._sxy, self._sxx, self._nobs), strict=True):
                dst[np.ix_(new_i, new_i)] = src[np.ix_(old_i, old_i)]
            grid[new_i] = self._grid[old_i]
        (self._sxy, self._sxx, self._nobs), self._grid = new, grid
        self._members = {n: j for j, n in enumerate(chosen)}

    def _corr(self, a: str, b: str) -> float | None:
        i, j = self._members.get(a), self._members.get(b)
        if i is None or j is None or self._nobs[i, j] < self.min_obs:
            return None
        den = math.sqrt(self._sxx[i, j] * self._sxx[j, i])
        return float(self._sxy[i, j] / den) if den > 0 else None

    def _link(self, a: str, b: str) -> tuple[str, float | None] | None:
        corr = self._corr(a, b)
        if (a, b) in self._declared:
            return "declared", corr
        ca = self.asset_classes.get(a.split("-", 1)[0].upper())
        cb = self.asset_classes.get(b.split("-", 1)[0].upper())
        if (ca, cb) in self._classes:
            return f"asset class {ca}-{cb}", corr
        if corr is not None and corr >= self.min_corr:
            return "learned", corr
        return None

    def _match(self, venue: str, t: float,
               follows: dict[str, Move]) -> tuple[list[Finding], list[HaltDecision]]:
        findings: list[Finding] = []
        halts: list[HaltDecision] = []
        taken: set[str] = set()  # followers and sources of this bucket
        order = sorted(self._sources.items(), key=lambda s: (s[1][0], -abs(s[1][2][1]), s[0]))
        for src, (start, _, smove) in order[: self.max_sources]:
            if src in taken or src in self._paused:
                continue
            cands = []
            for f, fmove in follows.items():
                if f == src or f in taken or f in self._paused or fmove[0] * smove[0] <= 0:
                    continue
                led = self._sources.get(f)
                if led is not None and led[0] < start:
                    continue
                link = self._link(src, f)
                if link is not None:
                    cands.append((-abs(fmove[1]), f, fmove, link))
            if not cands:
                continue
            cands = sorted(cands)[: self.max_followers]
            taken.add(src)
            taken.update(f for _, f, _, _ in cands)
            finding = self._finding(venue, t, src, start, smove, cands)
            findings.append(finding)
            for _, f, fmove, _ in cands:
                if len(self._paused) < self.max_instruments:
                    self._paused[f] = t + self.pause_s
                    halts.append(HaltDecision(t, f, "PAUSED", "CONTAGION", t + self.pause_s,
                                              reference_price=round_evidence(fmove[3]),
                                              alert_ids=(finding.key,)))
        return findings, halts

    def _finding(self, venue: str, t: float, src: str, start: float, smove: Move,
                 cands: list[tuple[float, str, Move, tuple[str, float | None]]]) -> Finding:
        def move(m: Move) -> dict[str, float]:
            return {"return": round_evidence(m[0]), "z": round_evidence(m[1]),
                    "horizon_s": m[2], "reference_price": round_evidence(m[3])}

        followers = [{"instrument": f, **move(m), "lag_s": round_evidence(t - start),
                      "link": link, "correlation": None if c is None else round_evidence(c)}
                     for _, f, m, (link, c) in cands]
        lead = cands[0][1]
        ratio = min(abs(cands[0][2][1]) / self.z_follow, abs(cands[0][2][0]) / self.min_follow)
        key = stable_id("ctg", venue, src, lead, round_evidence(t), len(cands))
        others = f" and {len(cands) - 1} other linked instruments" if len(cands) > 1 else ""
        summary = (f"{lead} ({100 * cands[0][2][0]:+.1f}%, z {cands[0][2][1]:.1f}){others} "
                   f"followed {src} ({100 * smove[0]:+.1f}% in {smove[2]:g} s, z {smove[1]:.1f})"
                   f" within {t - start:g} s; paused {self.pause_s:g} s")
        evidence = {
            "source": {"instrument": src, "episode_start": start, **move(smove)},
            "followers": followers,
            "thresholds": {"z_source": self.z_source, "min_source": self.min_source,
                           "z_follow": self.z_follow, "min_follow": self.min_follow,
                           "lag_s": self.lag_s, "min_corr": self.min_corr},
            "pause_s": self.pause_s,
        }
        return Finding(kind="contagion", ts=t, score=score_ratio(ratio), venue=venue,
                       instrument=lead, agents=[], summary=summary, evidence=evidence, key=key)
