"""Flash-crash and spike detection for one instrument, with its circuit breaker.

Three event-time checks run on every trade once the instrument is warmed up:

- **spike** — the price is beyond ``spike`` of the reference price ⇒ ``HALTED`` (``SPIKE``);
- **velocity** — the price moved beyond ``velocity`` within ``velocity_window_s`` ⇒ ``PAUSED``
  (``VELOCITY``), as CME velocity logic;
- **band** — the price is outside the LULD-style band around the reference (the mean trade price
  of the last ``ref_window_s``); if it is still outside after the limit state (15 s) ⇒ ``PAUSED``
  (``LUDP``), as US LULD.

Thresholds adapt to each instrument's own volatility, so a noisy market is not halted for being
noisy: ``band = max(band_floor, band_k·σ·√band_scale_s)``, ``velocity = max(velocity_floor,
velocity_k·σ·√velocity_window_s)``, ``spike = max(spike_floor, spike_mult·band)``, where σ is an
event-time EWMA of one-second log returns (per √second). The baseline is protected: a return larger
than ``vol_clip_k``·σ is clipped before it is learnt, so a crash does not widen its own bands.

Robustness: checks use the median of the last three trade prices, so one stray print (a fat
finger, an odd lot at a silly price) never trips anything; two in a row do. After a pause the
reference restarts from the reopening trades (LULD). A reference window with no trades (a thin
market waking up after a gap) skips band checks instead of judging against a stale price.

State is bounded: one bar per second over ``ref_window_s`` and the last ``recent_trades`` trades.

>>> m = MarketMonitor("v", "GPU", MarketConfig(warmup_s=10, warmup_returns=5))
>>> calm = TradeColumns.from_rows("v", "GPU", [(float(t), f"t{t}", 2.0 + 0.001 * (t % 3), 1.0,
...                                             "b", "s") for t in range(60)])
>>> out = m.update(calm)
>>> out.transitions, out.findings
([], [])
>>> crash = TradeColumns.from_rows("v", "GPU", [(60.0 + i, f"c{i}", 2.0 * (1 - 0.03 * i), 1.0,
...                                              "b", "dumper") for i in range(1, 8)])
>>> out = m.update(crash)
>>> [(t.state, t.reason) for t in out.transitions], out.findings[0].kind
([('PAUSED', 'VELOCITY')], 'flash_crash')
"""

from __future__ import annotations

import math
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Any

from detectors.base import Finding, TradeColumns, score_ratio, stable_id
from detectors.breaker import PAUSED, TRADING, BreakerConfig, CircuitBreaker, Transition

__all__ = ["MarketConfig", "MarketMonitor", "MonitorOutput"]

DETECTOR = "market/1"
BarTuple = tuple[int, float, float, float, float, float, float, int]


@dataclass(frozen=True, kw_only=True)
class MarketConfig:
    """Hyperparameters (event-time seconds, fractions of price)."""

    ref_window_s: int = 300
    band_floor: float = 0.05
    band_k: float = 6.0
    band_scale_s: float = 100.0
    velocity_window_s: int = 30
    velocity_floor: float = 0.10
    velocity_k: float = 8.0
    spike_floor: float = 0.25
    spike_mult: float = 3.0
    vol_tau_s: float = 900.0
    vol_clip_k: float = 4.0
    max_gap_s: float = 300.0
    warmup_returns: int = 20
    warmup_s: float = 60.0
    #: Upper bounds of the adaptive thresholds: however volatile an instrument has become (or
    #: has been made to look), a move this large always trips.
    band_cap: float = 0.30
    velocity_cap: float = 0.40
    spike_cap: float = 1.00
    #: An instrument silent this long (event time) starts afresh, as a new instrument would.
    idle_reset_s: float = 3600.0
    recent_trades: int = 512
    evidence_trades: int = 20
    breaker: BreakerConfig = field(default_factory=BreakerConfig)


@dataclass(slots=True)
class MonitorOutput:
    findings: list[Finding] = field(default_factory=list)
    transitions: list[Transition] = field(default_factory=list)
    bars: list[BarTuple] = field(default_factory=list)

    def extend(self, other: MonitorOutput) -> None:
        self.findings += other.findings
        self.transitions += other.transitions
        self.bars += other.bars


class _Bar:
    """One second of trades: OHLC of prints plus the median-filtered extremes used by checks."""

    __slots__ = ("close", "high", "low", "mclose", "mhi", "mlo", "n", "notional", "open", "psum",
                 "sec", "volume")

    def __init__(self, sec: int, p: float, m: float) -> None:
        self.sec, self.open, self.high, self.low, self.close = sec, p, p, p, p
        self.mhi = self.mlo = self.mclose = m
        self.psum, self.n, self.volume, self.notional = 0.0, 0, 0.0, 0.0

    def as_tuple(self) -> BarTuple:
        return (self.sec, self.open, self.high, self.low, self.close, self.volume, self.notional,
                self.n)


class MarketMonitor:
    """Velocity, band and spike checks plus the circuit breaker of one (venue, instrument)."""

    name = "market"
    version = "1"

    def __init__(self, venue: str, instrument: str, config: MarketConfig | None = None) -> None:
        self.venue, self.instrument = venue, instrument
        self.config = cfg = config or MarketConfig()
        self.breaker = CircuitBreaker(instrument, cfg.breaker)
        self.clock = -math.inf
        self.first_sec: int | None = None
        self.bar: _Bar | None = None
        self.bars: deque[_Bar] = deque(maxlen=cfg.ref_window_s + 1)
        self.ref_sum, self.ref_n, self._rolls = 0.0, 0, 0
        self.var, self.nret = 0.0, 0
        self.prev_close: tuple[int, float] | None = None
        self.p1: float | None = None
        self.p2: float | None = None
        self.recent: deque[tuple[float, str, float, float, str, str]] = deque(
            maxlen=cfg.recent_trades)
        # per-second thresholds, set by _roll
        self.ref: float | None = None
        self.sigma = 0.0
        self.band = self.velocity = self.spike = math.inf
        self.win_hi, self.win_lo = -math.inf, math.inf
        self.ready = False
        self._reopen_pending = False

    # ------------------------------------------------------------------ batch entry point
    def update(self, cols: TradeColumns) -> MonitorOutput:
        """Consume trades in arrival order; batching does not change the result."""
        out = MonitorOutput()
        br, recent = self.breaker, self.recent
        idle_reset = self.config.idle_reset_s
        for t, tid, p, q, buyer, seller in zip(cols.ts, cols.trade_id, cols.price, cols.qty,
                                               cols.buyer, cols.seller, strict=True):
            if t > self.clock:
                if t - self.clock >= idle_reset and br.state == TRADING and self.bar is not None:
                    out.extend(self._restart())
                    br, recent = self.breaker, self.recent
                self.clock = t
            clock = self.clock
            sec = int(clock)
            # resume first, as the global clock would have: the same order either way
            if br.state != TRADING and clock >= br.resume_at:  # type: ignore[operator]
                self._resume(clock, out)
            bar = self.bar
            if bar is None or sec != bar.sec:
                self._roll(sec, out)
            if self._reopen_pending:
                self._reopen()
            p1, p2 = self.p1, self.p2
            if p1 is None or p2 is None:
                m = p
                self.p2 = p
            else:  # median of the last three prints
                m = max(min(p1, p2), min(max(p1, p2), p))
                self.p2 = p1
            self.p1 = p
            bar = self.bar
            if bar is None or bar.sec != sec:
                bar = self.bar = _Bar(sec, p, m)
            else:
                bar.high, bar.low, bar.close = max(bar.high, p), min(bar.low, p), p
                bar.mhi, bar.mlo = max(bar.mhi, m), min(bar.mlo, m)
                bar.mclose = m
            bar.psum += m  # a mean of filtered prints: one stray print cannot move it
            bar.n += 1
            bar.volume += q
            bar.notional += p * q
            recent.append((clock, tid, p, q, buyer, seller))
            if not self.ready:
                continue
            if br.state == TRADING:
                self._check(clock, m, tid, bar, out)
            elif br.state == PAUSED and br.reference_price:
                dev = m / br.reference_price - 1.0
                if abs(dev) >= self.spike:
                    self._trip("SPIKE", clock, tid, abs(dev), self.spike, dev, out,
                               ref=br.reference_price, ratio=abs(dev) / self.band)
        return out

    def advance(self, clock: float) -> MonitorOutput:
        """Event time moved on elsewhere (other instruments): fire a due resumption."""
        out = MonitorOutput()
        br = self.breaker
        if br.state != TRADING and br.resume_at is not None and clock >= br.resume_at:
            self._resume(clock, out)
        return out

    def flush(self) -> MonitorOutput:
        """End of input: emit the open bar (it will not be emitted again)."""
        out = MonitorOutput()
        if self.bar is not None:
            out.bars.append(self.bar.as_tuple())
            self.bars.append(self.bar)
            self.bar = None
        return out

    @property
    def idle_since(self) -> float:
        return self.clock

    def _restart(self) -> MonitorOutput:
        """Silent for ``idle_reset_s``: close the open bar and start afresh (as eviction would)."""
        out = self.flush()
        clock = self.clock
        self.__init__(self.venue, self.instrument, self.config)  # type: ignore[misc]
        self.clock = clock
        return out

    # ------------------------------------------------------------------ internals
    def _check(self, clock: float, m: float, tid: str, bar: _Bar, out: MonitorOutput) -> None:
        hi = max(self.win_hi, bar.mhi)
        lo = min(self.win_lo, bar.mlo)
        down, up = 1.0 - m / hi, m / lo - 1.0
        ref = self.ref
        dev = m / ref - 1.0 if ref else 0.0
        br = self.breaker
        # one severity for every trigger, so a bigger move never scores lower
        ratio = max(abs(dev) / self.band, max(down, up) / self.velocity)
        if abs(dev) >= self.spike:
            self._trip("SPIKE", clock, tid, abs(dev), self.spike, dev, out, ref=ref, ratio=ratio)
        elif down >= self.velocity or up >= self.velocity:
            move = -down if down >= up else up
            self._trip("VELOCITY", clock, tid, abs(move), self.velocity, move, out, ref=ref,
                       ratio=ratio, extra={"window_high": hi, "window_low": lo})
        elif abs(dev) > self.band:
            br.enter_limit(clock, 1 if dev > 0 else -1)
            if br.limit_expired(clock):
                self._trip("LUDP", clock, tid, abs(dev), self.band, dev, out, ref=ref,
                           ratio=ratio, extra={"limit_state_since": br.limit_since})
        elif br.limit_since is not None:
            br.exit_limit()

    def _roll(self, sec: int, out: MonitorOutput) -> None:
        """A new second starts: close the previous bar, learn from it, set this second's limits."""
        cfg, b = self.config, self.bar
        if self.first_sec is None:
            self.first_sec = sec
        if b is not None:
            out.bars.append(b.as_tuple())
            if len(self.bars) == self.bars.maxlen:
                old = self.bars[0]
                self.ref_sum -= old.psum
                self.ref_n -= old.n
            self.bars.append(b)
            self.ref_sum += b.psum
            self.ref_n += b.n
            self._learn(b, learn=self.breaker.trading and self.breaker.limit_since is None)
            self.bar = None
        horizon = sec - cfg.ref_window_s
        bars = self.bars
        while bars and bars[0].sec < horizon:
            old = bars.popleft()
            self.ref_sum -= old.psum
            self.ref_n -= old.n
        self._rolls += 1
        if self._rolls % 1024 == 0:  # wash out floating-point drift of the running sums
            self.ref_sum = math.fsum(x.psum for x in bars)
            self.ref_n = sum(x.n for x in bars)
        if self.ref_n > 0:
            self.ref = self.ref_sum / self.ref_n
        else:  # nothing traded in the reference window: the market is waking up, judge afresh
            self.ref = None
            self.p1 = self.p2 = None
        sigma = self.sigma = math.sqrt(self.var)
        self.band = min(cfg.band_cap, max(cfg.band_floor,
                                          cfg.band_k * sigma * math.sqrt(cfg.band_scale_s)))
        self.velocity = min(cfg.velocity_cap, max(
            cfg.velocity_floor, cfg.velocity_k * sigma * math.sqrt(cfg.velocity_window_s)))
        self.spike = min(cfg.spike_cap, max(cfg.spike_floor, cfg.spike_mult * self.band))
        hi, lo, start = -math.inf, math.inf, sec - cfg.velocity_window_s
        for x in reversed(bars):
            if x.sec < start:
                break
            hi, lo = max(hi, x.mhi), min(lo, x.mlo)
        self.win_hi, self.win_lo = hi, lo
        self.ready = (self.nret >= cfg.warmup_returns and sec - self.first_sec >= cfg.warmup_s)

    def _learn(self, b: _Bar, *, learn: bool) -> None:
        """EWMA of squared one-second log returns of the filtered close, clipped once warm.

        Nothing is learnt while the instrument is in a limit state, paused or halted: the
        baseline must not absorb the very moves it flags.
        """
        cfg, prev = self.config, self.prev_close
        self.prev_close = (b.sec, b.mclose)
        if prev is None or not learn:
            return
        gap = min(float(b.sec - prev[0]), cfg.max_gap_s)
        r = math.log(b.mclose / prev[1])
        sample = r * r / gap
        if self.nret < cfg.warmup_returns:
            self.var += (sample - self.var) / (self.nret + 1)
        else:
            sample = min(sample, cfg.vol_clip_k**2 * self.var)
            self.var += (1.0 - math.exp(-gap / cfg.vol_tau_s)) * (sample - self.var)
        self.nret += 1

    def _resume(self, clock: float, out: MonitorOutput) -> None:
        t = self.breaker.tick(clock)
        if t is None:
            return
        out.transitions.append(t)
        # Applied before this instrument's next trade is judged (after that trade's second has
        # rolled), whether the resumption was noticed by its own trade or by the global clock.
        self._reopen_pending = True

    def _reopen(self) -> None:
        """LULD: the reopening trades become the new reference; the velocity window restarts."""
        self._reopen_pending = False
        self.bars.clear()
        self.ref_sum, self.ref_n, self.ref = 0.0, 0, None
        self.win_hi, self.win_lo = -math.inf, math.inf
        self.p1 = self.p2 = None

    def _trip(self, reason: str, clock: float, tid: str, measure: float, threshold: float,
              move: float, out: MonitorOutput, *, ref: float | None, ratio: float,
              extra: dict[str, Any] | None = None) -> None:
        cfg = self.config
        kind = "flash_crash" if move < 0 else "price_spike"
        since = {"VELOCITY": clock - cfg.velocity_window_s}.get(reason)
        if reason == "LUDP" and extra:
            since = extra["limit_state_since"]
        recent = list(self.recent)
        first = next((i for i, r in enumerate(recent) if since is None or r[0] >= since),
                     len(recent) - 1)
        if reason == "SPIKE" and since is None:
            first = max(0, len(recent) - cfg.evidence_trades * 5)
        window = recent[first:]
        agents, volume, impact = _attribute(recent, first, move)
        band_low = ref * (1 - self.band) if ref else None
        band_high = ref * (1 + self.band) if ref else None
        key = (reason, self.venue, self.instrument, round(clock * 1e6), tid)
        alert_id = stable_id(kind.replace("_", "-"), DETECTOR, *key)
        verb = "fell" if move < 0 else "rose"
        what = {"VELOCITY": f"within {cfg.velocity_window_s} s",
                "LUDP": f"from its reference for {cfg.breaker.limit_state_s:g} s (LULD band)",
                "SPIKE": "from its reference"}[reason]
        action = "halted" if reason == "SPIKE" else "paused"
        summary = (f"{self.instrument} {verb} {abs(move):.1%} {what}, limit {threshold:.1%} "
                   f"({measure / threshold:.1f}x): {action}, reason {reason}")
        n = cfg.evidence_trades
        evidence: dict[str, Any] = {
            "trigger": reason,
            "move_pct": round(move * 100, 3),
            "threshold_pct": round(threshold * 100, 3),
            "reference_price": ref,
            "band_pct": round(self.band * 100, 3),
            "band_low": band_low,
            "band_high": band_high,
            "velocity_pct": round(self.velocity * 100, 3),
            "spike_pct": round(self.spike * 100, 3),
            "sigma_1s_pct": round(self.sigma * 100, 5),
            "window_start": window[0][0] if window else clock,
            "window_end": clock,
            "price_first": window[0][2] if window else None,
            "price_last": window[-1][2] if window else None,
            "trades_in_window": len(window),
            "trade_ids": [r[1] for r in (window if len(window) <= n else
                                         window[: n // 2] + window[-n // 2:])],
            "trigger_trade_id": tid,
            "aggressive_volume": {a: volume[a] for a in agents},
            "price_impact_pct": {a: round(impact.get(a, 0.0) * 100, 3) for a in agents},
            **(extra or {}),
        }
        out.findings.append(Finding(kind=kind, ts=clock, score=score_ratio(ratio),
                                    venue=self.venue, instrument=self.instrument, agents=agents,
                                    summary=summary, evidence=evidence, key=alert_id))
        # with no LULD reference yet (just reopened), escalation is judged from the pre-move price
        halt_ref = ref if ref else (window[0][2] if window else None)
        out.transitions.append(self.breaker.trip(clock, reason, reference_price=halt_ref,
                                                 band_low=band_low, band_high=band_high,
                                                 alert_ids=[alert_id]))


def _attribute(recent: list[tuple[float, str, float, float, str, str]], first: int,
               move: float) -> tuple[list[str], dict[str, float], dict[str, float]]:
    """Who drove the move: the sellers of a crash (buyers of a spike), ranked by the price impact
    of their prints (each print's return in the move's direction, when positive), then volume."""
    crash = move < 0
    sign = -1.0 if crash else 1.0
    volume: dict[str, float] = defaultdict(float)
    impact: dict[str, float] = defaultdict(float)
    for i in range(first, len(recent)):
        _, _, price, qty, buyer, seller = recent[i]
        agent = seller if crash else buyer
        volume[agent] += qty
        if i > 0:
            ret = sign * (price / recent[i - 1][2] - 1.0)
            if ret > 0:
                impact[agent] += ret
    ranked = sorted(volume, key=lambda a: (-impact[a], -volume[a], a))
    return ranked[:5], volume, impact
