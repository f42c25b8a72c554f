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

Posted-price markets (a few sellers post prices that buyers take, as GPU hours sold by pricing
bots) are recognised from the trades alone and their repricing is not paused: there the price is
each seller's commercial decision, and a price war (one seller undercuts, the rival follows, both
return within minutes) is no disorder; pausing it would freeze the deviator's lower price and
shield a cartel (see ``detectors.collusion``). Criteria, judged over each ``ref_window_s`` window
(aligned on event time, so batching changes nothing) with at least ``posted_min_trades`` trades:

- ≥ ``posted_share`` (90%) of the volume sold by at most ``posted_sellers`` (3) sellers — the first
  ones seen in the window; any other seller's volume counts against the share;
- those sellers are sellers only: they bought ≤ ``1 − posted_share`` of the volume (not a wash
  ring, nor market makers quoting both sides);
- ≥ ``posted_buyers`` (3) distinct buyers besides them (a market, not one counterparty);
- they post prices: ≥ ``posted_repeat`` (50%) of the window's prints are at the price of the
  same seller's previous print (prices stay constant between discrete reposts; a seller walking
  down a book, or dumping along a ramp, prints a new price almost every time).

Hysteresis: ``posted_windows`` (2) qualifying windows in a row enter the regime, as many failing
ones in a row leave it; thin windows count neither way. In the regime a filtered price inside the
*repricing range* trips nothing (no velocity, band, spike, dynamic or limit state): from
``min(low·(1 − posted_margin), high·(1 − posted_drop))`` to ``high·(1 + posted_margin)``, where
high and low are the filtered extremes of the trailing hour, and never beyond the hard caps
``high / (1 + anchor_cap)`` and ``low · (1 + anchor_cap)`` (a 50% fall, a 100% rise). Beyond it
every check trips as in an order-book market. Order-book markets (many sellers) never enter it.

State is bounded and compact (the engine keeps thousands of monitors and checkpoints them): per
closed second of the reference window only what the checks read again (second, sum and count of
filtered prints; filtered extremes while in the velocity window), and of the last
``recent_trades`` trades only those an alert could still cite (those of its window: the velocity
window, the limit state, the last ``5 · evidence_trades`` trades), as flat columns and, every
``_BLOCK`` trades, one zlib-compressed block. Both are allocated with the first bar or batch.

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
from bisect import bisect_left
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from detectors.base import Finding, TradeColumns, score_ratio, stable_id
from detectors.breaker import PAUSED, TRADING, BreakerConfig, CircuitBreaker, Transition
from detectors.market_store import Bars as _Bars
from detectors.market_store import Range as _Range
from detectors.market_store import Row
from detectors.market_store import Trades as _Trades
from detectors.market_store import clocks as _clocks

__all__ = ["MarketConfig", "MarketMonitor", "MonitorOutput"]

DETECTOR = "market/1"
BarTuple = tuple[int, float, float, float, float, float, float, int]
#: The open bar: second, open, high, low, close, filtered high, low and close, sum and count of
#: filtered prints, volume, notional.
OpenBar = tuple[int, float, float, float, float, float, float, float, float, int, float, float]

#: Stands for a trade the full ``recent_trades`` window would still hold but no alert can cite.
_GONE: Row = (-math.inf, "", math.nan, math.nan, "", "")
_INF = math.inf
#: Reason codes (DESIGN §3.6) of the triggers that have none of their own.
_REASON = {"DYNAMIC": "LUDP", "ANCHOR": "SPIKE"}


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
    #: An instrument silent this long (event time) starts afresh, as a new instrument would
    #: (but for its last known price and volatility: it wakes up cold, see ``cold_band``).
    idle_reset_s: float = 3600.0
    #: Dynamic breaker (CME dynamic circuit breakers; Coinbase ±10% hourly): beyond ``dynamic``
    #: below the filtered high (above the low) of the last ``dynamic_window_s`` since the last
    #: reopening ⇒ ``PAUSED`` (``LUDP``) for ``breaker.dynamic_pause_s``, where
    #: ``dynamic = min(dynamic_cap, max(dynamic_floor, dynamic_k·σ·√dynamic_window_s))``.
    dynamic_window_s: int = 3600
    dynamic_floor: float = 0.10
    dynamic_k: float = 5.0
    dynamic_cap: float = 0.30
    #: Containment through reopenings. A pause opens an episode whose anchor is the hour's low
    #: (a rise) or high (a fall) before it; pauses do not reset it. The ``escalate_after``-th
    #: pause in the same direction within ``episode_s`` of the previous one halts instead
    #: (``SPIKE``); so does a move of ``anchor_cap`` from the anchor (up ×2, down ÷2 at 1.0).
    #: ``escalate_after=0`` switches episodes off.
    episode_s: float = 1800.0
    escalate_after: int = 3
    anchor_cap: float = 1.00
    #: Cold and thin markets: until warmed up, and for ``warmup_s`` after waking from a silence
    #: that emptied the reference window, the reference is the last known price (a new
    #: instrument: its first filtered prints) and the band is static: ``max(cold_band,
    #: wake_k·σ·√silence)`` (capped by ``band_cap``), spike ``max(cold_spike, spike_mult·band)``.
    #: ``cold_band=inf`` switches it off (not judged before warm-up, as before).
    cold_band: float = 0.10
    cold_spike: float = 0.30
    wake_k: float = 8.0
    #: Posted-price regime (see the module docstring): ≥ ``posted_share`` of a window's volume
    #: sold by ≤ ``posted_sellers`` pure sellers to ≥ ``posted_buyers`` buyers
    #: who post prices (≥ ``posted_repeat`` of the prints at their seller's previous price),
    #: for ``posted_windows`` windows in a row. There, prices within the trailing hour's range
    #: (widened by ``posted_margin``; falls to ``posted_drop`` below the hour's high) are
    #: repricing, not disorder. ``posted_sellers=0`` switches it off.
    posted_sellers: int = 3
    posted_share: float = 0.90
    posted_buyers: int = 3
    posted_min_trades: int = 20
    posted_repeat: float = 0.5
    posted_windows: int = 2
    posted_margin: float = 0.10
    posted_drop: float = 0.40
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


_STATE = ("venue", "instrument", "config", "breaker", "clock", "first_sec", "bar", "_bars",
          "ref_sum", "ref_n", "_rolls", "var", "nret", "prev_sec", "prev_mclose", "p1", "p2",
          "_trades", "ref", "sigma", "band", "velocity", "spike", "win_hi", "win_lo", "ready",
          "_reopen_pending", "_range", "dyn_since", "guard", "episode", "cold",
          "judge", "tally", "posted", "zone")
#: No guard levels (shared, so a newcomer costs no tuple of its own).
_NO_GUARD = (0.0, math.inf)
#: No repricing range (an order-book market): no price is inside it.
_NO_ZONE = (math.inf, -math.inf)
#: A window's tally: (window, sellers, volume, their volume sold, their volume bought, other
#: buyers, trades, each seller's last price, their prints at their own last price, filtered
#: high and low).
Tally = tuple[int, tuple[str, ...], float, float, float, tuple[str, ...], int, list[float], int,
              float, float]


_NOT_POSTED = (False, 0, -math.inf, math.inf, -math.inf, math.inf)
#: Stands for the tally before the first whole window (never updated: not tallying).
_IDLE: Tally = (0, (), 0.0, 0.0, 0.0, (), 0, [], 0, -math.inf, math.inf)


def _tally(window: int) -> Tally:
    return (window, (), 0.0, 0.0, 0.0, (), 0, [], 0, -math.inf, math.inf)


class MarketMonitor:
    """Velocity, band and spike checks plus the circuit breaker of one (venue, instrument)."""

    __slots__ = _STATE
    name = "market"
    version = "1"

    def __init__(self, venue: str, instrument: str, config: MarketConfig | None = None) -> None:
        self.venue, self.instrument = venue, instrument
        self.config = cfg = config or MarketConfig()
        self.breaker = CircuitBreaker(instrument, cfg.breaker)
        self.clock = -math.inf
        self.first_sec: int | None = None
        self.bar: OpenBar | None = None
        self._bars: _Bars | None = None  # allocated with the first closed bar
        self.ref_sum, self.ref_n, self._rolls = 0.0, 0, 0
        self.var, self.nret = 0.0, 0
        self.prev_sec: int | None = None  # second and filtered close of the last closed bar
        self.prev_mclose = 0.0
        self.p1: float | None = None
        self.p2: float | None = None
        self._trades: _Trades | None = None  # allocated with the first batch
        # per-second thresholds, set by _roll
        self.ref: float | None = None
        self.sigma = 0.0
        self.band = self.velocity = self.spike = math.inf
        self.win_hi, self.win_lo = -math.inf, math.inf
        self.ready = False
        self._reopen_pending = False
        self._range: _Range | None = None  # allocated once warm (the dynamic breaker)
        self.dyn_since = 0  # the dynamic range counts from this minute (the last reopening)
        #: per second: below guard[0] or above guard[1] ⇒ dynamic breaker or episode anchor
        self.guard: tuple[float, float] | None = None
        #: containment episode: (anchor, direction ±1, same-direction pauses, last pause clock)
        self.episode: tuple[float, int, int, float] | None = None
        #: cold regime: (reference or None until known, until second, band, spike); None for
        #: a new instrument (cold until warm, around its first prints) and once warm
        self.cold: tuple[float | None, int, float, float] | None = None
        self.judge = False  # checks run (warm, or cold with a reference)
        #: the current window's posted-price tally (``Tally``), from the first whole window on
        self.tally: Tally | None = None
        #: posted-price regime: (in it, windows in a row that qualified (> 0) or failed (< 0),
        #: filtered high and low of the last closed window, of the one before); None when out
        #: of it with no qualifying window pending (an order-book market)
        self.posted: tuple[bool, int, float, float, float, float] | None = None
        #: per second, in the posted-price regime: the repricing range (low, high)
        self.zone: tuple[float, float] | None = None

    def __getstate__(self) -> tuple[Any, ...]:
        return tuple(getattr(self, k) for k in _STATE)

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        for k, v in zip(_STATE, state, strict=True):
            setattr(self, k, v)

    @property
    def bars(self) -> _Bars | tuple[()]:
        """Closed bars of the reference window (their count: ``len``)."""
        return self._bars if self._bars is not None else ()

    @property
    def recent(self) -> list[Row]:
        """The last trades (at most ``recent_trades``) that an alert could still cite."""
        tr = self._trades
        if tr is None:
            return []
        rows = tr.rows()
        return rows[max(0, len(rows) - tr.size):]

    # ------------------------------------------------------------------ batch entry point
    def update(self, cols: TradeColumns) -> MonitorOutput:
        """Consume trades in arrival order; batching does not change the result."""
        out = MonitorOutput()
        ts, prices, qtys = cols.ts, cols.price, cols.qty
        n = len(ts)
        if not (n == len(prices) == len(qtys) == len(cols.trade_id) == len(cols.buyer)
                == len(cols.seller)):
            raise ValueError("TradeColumns columns differ in length")
        if not n:
            return out
        br = self.breaker
        idle_reset = self.config.idle_reset_s
        clock = self.clock
        # trades start: of this batch, remembered at the end (a restart forgets the earlier)
        start, start_clock, ordered = 0, clock, True
        trading = br.state == TRADING
        reopen = self._reopen_pending
        p1, p2 = self.p1, self.p2
        judge, ref, band, velocity, spike = self.judge, self.ref, self.band, self.velocity, \
            self.spike
        g_lo, g_hi = self.guard or _NO_GUARD
        z_lo, z_hi = self.zone or _NO_ZONE
        win_hi, win_lo = self.win_hi, self.win_lo
        sellers, buyers = cols.seller, cols.buyer
        npost, nbuy = self.config.posted_sellers, self.config.posted_buyers
        tallying = self.tally is not None
        twin, who, tvol, tsold, tbought, tbuyers, tn, tlast, trep, thi, tlo = self.tally or _IDLE
        bar = self.bar
        if bar is None:
            bsec: int | None = None
            bo = bh = bl = bc = bmh = bml = bmc = bps = bv = bnot = 0.0
            bn = 0
        else:
            bsec, bo, bh, bl, bc, bmh, bml, bmc, bps, bn, bv, bnot = bar
        i = -1
        for t, p, q in zip(ts, prices, qtys, strict=True):
            i += 1
            if t > clock:
                if t - clock >= idle_reset and trading and bsec is not None:
                    self.bar = (bsec, bo, bh, bl, bc, bmh, bml, bmc, bps, bn, bv, bnot)
                    self.clock = clock
                    out.extend(self._restart(t))
                    br, trading, reopen, bsec = self.breaker, True, False, None
                    p1, p2, ref = self.p1, self.p2, None
                    judge, band, velocity, spike = False, self.band, self.velocity, self.spike
                    g_lo, g_hi = self.guard or _NO_GUARD
                    z_lo, z_hi = self.zone or _NO_ZONE
                    tallying = False
                    win_hi, win_lo = self.win_hi, self.win_lo
                    start, start_clock, ordered = i, clock, True
                clock = t
            elif t != clock or not t:  # clock stays (late trade), or ±0 could differ
                ordered = False
            sec = int(clock)
            # resume first, as the global clock would have: the same order either way
            if not trading and clock >= br.resume_at:  # type: ignore[operator]
                self._resume(clock, out)
                trading, reopen = br.state == TRADING, self._reopen_pending
            if sec != bsec:
                self.p1, self.p2 = p1, p2
                if tallying:
                    self.tally = (twin, who, tvol, tsold, tbought, tbuyers, tn, tlast, trep,
                                  thi, tlo)
                self._roll(sec, out, None if bsec is None else
                           (bsec, bo, bh, bl, bc, bmh, bml, bmc, bps, bn, bv, bnot))
                bsec = None
                p1, p2, judge, ref = self.p1, self.p2, self.judge, self.ref
                g_lo, g_hi = self.guard or _NO_GUARD
                z_lo, z_hi = self.zone or _NO_ZONE
                if self.tally is not None:
                    tallying = True
                    twin, who, tvol, tsold, tbought, tbuyers, tn, tlast, trep, thi, tlo = \
                        self.tally
                band, velocity, spike = self.band, self.velocity, self.spike
                win_hi, win_lo = self.win_hi, self.win_lo
            if reopen:
                self._reopen(sec)
                reopen = False
                p1 = p2 = ref = None
                win_hi, win_lo = -_INF, _INF
                g_lo, g_hi = self.guard or _NO_GUARD
                z_lo, z_hi = self.zone or _NO_ZONE
            if p1 is None or p2 is None:
                m = p
                p2 = p
            else:  # median of the last three prints: max(min(p1, p2), min(max(p1, p2), p))
                lo12, hi12 = (p2 if p2 < p1 else p1), (p2 if p2 > p1 else p1)
                x = p if p < hi12 else hi12
                m = x if x > lo12 else lo12
                p2 = p1
            p1 = p
            if bsec is None:  # a new bar (its sums start at 0.0: 0.0 + x is x but for -0.0)
                bsec, bo, bh, bl, bc, bmh, bml, bmc = sec, p, p, p, p, m, m, m
                bn, bnot = 1, p * q
                bps = m if m else 0.0 + m
                bv = q if q else 0.0 + q
                if not bnot:
                    bnot += 0.0
            else:
                if p > bh:
                    bh = p
                if p < bl:
                    bl = p
                bc = p
                if m > bmh:
                    bmh = m
                if m < bml:
                    bml = m
                bmc = m
                bps += m  # a mean of filtered prints: one stray print cannot move it
                bn += 1
                bv += q
                bnot += p * q
            if tallying:  # posted-price tally: who sells, do they buy, how many buy
                tvol += q
                tn += 1
                if m > thi:
                    thi = m
                if m < tlo:
                    tlo = m
                s = sellers[i]
                if s in who:
                    tsold += q
                    k = who.index(s)
                    if p == tlast[k]:
                        trep += 1
                    tlast[k] = p
                elif len(who) < npost:
                    who += (s,)
                    tsold += q
                    tlast.append(p)
                b = buyers[i]
                if b in who:
                    tbought += q
                elif len(tbuyers) < nbuy and b not in tbuyers:
                    tbuyers += (b,)
            if not judge:
                continue
            if trading:
                hi = bmh if bmh > win_hi else win_hi
                lo = bml if bml < win_lo else win_lo
                down, up = 1.0 - m / hi, m / lo - 1.0
                dev = m / ref - 1.0 if ref else 0.0
                adev = abs(dev)
                if not (band and velocity):  # degenerate thresholds: the severity below
                    ratio = max(adev / band, max(down, up) / velocity)  # raises, as always
                if z_lo <= m <= z_hi:  # posted-price repricing within the hour's range
                    if br.limit_since is not None:
                        br.exit_limit()
                elif adev >= spike or down >= velocity or up >= velocity or m < g_lo or \
                        m > g_hi or (adev > band and self._limit(clock, dev)):
                    # one severity for every trigger, so a bigger move never scores lower
                    ratio = max(adev / band, max(down, up) / velocity)
                    pend = (cols, start, i + 1, start_clock, ordered)
                    trading = False
                    if adev >= spike:
                        self._trip("SPIKE", clock, cols.trade_id[i], adev, spike, dev, out,
                                   pend, ref=ref, ratio=ratio)
                    elif (m < g_lo or m > g_hi) and self._guarded(
                            m, clock, cols.trade_id[i], out, pend, ref=ref, ratio=ratio,
                            dynamic=not (down >= velocity or up >= velocity)):
                        pass
                    elif down >= velocity or up >= velocity:
                        move = -down if down >= up else up
                        self._trip("VELOCITY", clock, cols.trade_id[i], abs(move), velocity,
                                   move, out, pend, ref=ref, ratio=ratio,
                                   extra={"window_high": hi, "window_low": lo})
                    elif adev > band and self._limit(clock, dev):
                        self._trip("LUDP", clock, cols.trade_id[i], adev, band, dev, out, pend,
                                   ref=ref, ratio=ratio,
                                   extra={"limit_state_since": br.limit_since})
                    else:  # near a guard level, not beyond it
                        trading = True
                        if br.limit_since is not None and not adev > band:
                            br.exit_limit()
                elif br.limit_since is not None and not adev > band:
                    br.exit_limit()
            elif br.state == PAUSED and br.reference_price:
                dev = m / br.reference_price - 1.0
                if (m < g_lo or m > g_hi) and self._guarded(
                        m, clock, cols.trade_id[i], out, (cols, start, i + 1, start_clock,
                                                          ordered),
                        ref=br.reference_price, ratio=abs(dev) / band, dynamic=False):
                    pass
                elif abs(dev) >= spike:
                    self._trip("SPIKE", clock, cols.trade_id[i], abs(dev), spike, dev, out,
                               (cols, start, i + 1, start_clock, ordered),
                               ref=br.reference_price, ratio=abs(dev) / band)
        self.clock = clock
        self.bar = None if bsec is None else (bsec, bo, bh, bl, bc, bmh, bml, bmc, bps, bn, bv,
                                              bnot)
        self.p1, self.p2 = p1, p2
        if tallying:
            self.tally = (twin, who, tvol, tsold, tbought, tbuyers, tn, tlast, trep, thi, tlo)
        self._reopen_pending = reopen
        self._remember(cols, start, start_clock, ordered)
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
        b = self.bar
        if b is not None:
            sec, o, h, lo, c, mhi, mlo, _, psum, n, volume, notional = b
            out.bars.append((sec, o, h, lo, c, volume, notional, n))
            self._bar_ring().append(sec, psum, n, mhi, mlo, self.config.ref_window_s + 1)
            self.bar = None
        return out

    @property
    def idle_since(self) -> float:
        return self.clock

    def _restart(self, now: float) -> MonitorOutput:
        """Silent for ``idle_reset_s``: close the open bar and start afresh (as eviction would)."""
        out = self.flush()
        memo = self.memo()
        self.__init__(self.venue, self.instrument, self.config)  # type: ignore[misc]
        if memo is not None:
            self.wake(memo, now)
        return out

    def memo(self) -> tuple[Any, ...] | None:
        """What an idle instrument must not forget (a few numbers, kept by the engine when it
        evicts the monitor): its clock, last known price and volatility, last prints."""
        if not self.prev_mclose or self.prev_sec is None:
            return None
        return (self.clock, self.prev_mclose, self.prev_sec, self.var, self.p1, self.p2)

    def wake(self, memo: tuple[Any, ...], now: float) -> None:
        """A fresh monitor of an instrument silent since ``memo`` was taken: it wakes up cold,
        judged at once against its last known price (and prints: one stray print cannot
        trip), with a band as wide as its old volatility and the silence warrant."""
        clock, last, last_sec, var, p1, p2 = memo
        self.clock = max(self.clock, clock)
        if not math.isinf(self.config.cold_band):
            self.var = var  # for the width of the waking band only: learnt afresh from now
            self.cold = self._cold(last, now - last_sec, 0)
            self.var = 0.0
            self.p1, self.p2 = p1, p2

    # ------------------------------------------------------------------ internals
    def _limit(self, clock: float, dev: float) -> bool:
        """Outside the band: open (or keep) the limit state; True once it has lasted."""
        br = self.breaker
        br.enter_limit(clock, 1 if dev > 0 else -1)
        return br.limit_expired(clock)

    def _bar_ring(self) -> _Bars:
        bars = self._bars
        if bars is None:
            bars = self._bars = _Bars()
        return bars

    def _roll(self, sec: int, out: MonitorOutput, b: OpenBar | None) -> None:
        """A new second starts: close the previous bar, learn from it, set this second's limits."""
        cfg = self.config
        if self.first_sec is None:
            self.first_sec = sec
        bars = self._bars
        if b is not None:
            bsec, o, h, lo, c, mhi, mlo, mclose, psum, n, volume, notional = b
            out.bars.append((bsec, o, h, lo, c, volume, notional, n))
            bars = self._bar_ring()
            if len(bars) == cfg.ref_window_s + 1:
                self.ref_sum -= bars.psum[0]
                self.ref_n -= bars.n[0]
            bars.append(bsec, psum, n, mhi, mlo, cfg.ref_window_s + 1)
            self.ref_sum += psum
            self.ref_n += n
            if self._range is not None and self.breaker.trading:  # not prints while halted
                self._range.add(bsec, mhi, mlo)
            self._learn(bsec, mclose,
                        learn=self.breaker.trading and self.breaker.limit_since is None)
        if cfg.posted_sellers > 0:
            tally, window = self.tally, sec // cfg.ref_window_s
            if tally is None:  # tallies start with the first whole window
                if window != self.first_sec // cfg.ref_window_s:
                    self.tally = _tally(window)
            elif window != tally[0]:
                self._posted(sec)
        horizon = sec - cfg.ref_window_s
        while bars and bars.first() < horizon:
            old_psum, old_n = bars.popleft()
            self.ref_sum -= old_psum
            self.ref_n -= old_n
        self._rolls += 1
        if self._rolls % 1024 == 0:  # wash out floating-point drift of the running sums
            self.ref_sum = math.fsum(bars.psum if bars else ())
            self.ref_n = sum(bars.n if bars else ())
        if self.ref_n > 0:
            self.ref = self.ref_sum / self.ref_n
        else:  # nothing traded in the reference window: the market is waking up, judge afresh
            self.ref = None
            prev = self.prev_sec
            if (prev is not None and sec - prev >= cfg.ref_window_s and self.prev_mclose
                    and not math.isinf(cfg.cold_band)):
                # against its last known price (and prints: one stray print cannot trip)
                self.cold = self._cold(self.prev_mclose, sec - prev, sec)
            else:
                self.p1 = self.p2 = None
        sigma = self.sigma = math.sqrt(self.var)
        self.band = min(cfg.band_cap, max(cfg.band_floor,
                                          cfg.band_k * sigma * math.sqrt(cfg.band_scale_s)))
        self.velocity = min(cfg.velocity_cap, max(
            cfg.velocity_floor, cfg.velocity_k * sigma * math.sqrt(cfg.velocity_window_s)))
        self.spike = min(cfg.spike_cap, max(cfg.spike_floor, cfg.spike_mult * self.band))
        self.win_hi, self.win_lo = (bars.window(sec - cfg.velocity_window_s) if bars
                                    else (-_INF, _INF))
        self.ready = ready = (self.nret >= cfg.warmup_returns
                              and sec - self.first_sec >= cfg.warmup_s)
        judge, cold = ready, self.cold
        if cold is None and not ready and not math.isinf(cfg.cold_band):  # a new instrument
            cold = (None, 0, cfg.cold_band, cfg.cold_spike)
        if cold is not None:
            cref, until, cband, cspike = cold
            if ready and sec >= until:
                self.cold = None
            else:
                if cref is None and self.ref_n >= 3 and self.ref:  # its first filtered prints
                    cref = self.ref
                    self.cold = (cref, until, cband, cspike)
                if cref is not None:
                    self.ref, self.band, self.spike = cref, cband, cspike
                judge = cref is not None
        self.judge = judge
        self._levels(sec, ready)

    def _cold(self, last: float, silence: float, sec: int) -> tuple[float, int, float, float]:
        """Cold regime after ``silence`` seconds: a static band around the last known price,
        wider the longer the silence and the noisier the instrument was."""
        cfg = self.config
        band = min(cfg.band_cap, max(cfg.cold_band,
                                     cfg.wake_k * math.sqrt(self.var * silence)))
        return last, sec + int(cfg.warmup_s), band, min(cfg.spike_cap, max(
            cfg.cold_spike, cfg.spike_mult * band))

    def _levels(self, sec: int, ready: bool) -> None:
        """This second's guard levels: the dynamic breaker's and the episode anchor's."""
        cfg = self.config
        g_lo, g_hi = 0.0, _INF
        rng = self._range
        if ready and rng is None and not math.isinf(cfg.dynamic_floor):
            rng = self._range = _Range(max(1, cfg.dynamic_window_s // 60))
        if rng is not None and ready:
            dyn = self._dynamic()
            dh, dl = rng.extremes(self.dyn_since)
            if dh > 0.0:
                g_lo, g_hi = dh * (1.0 - dyn), dl * (1.0 + dyn)
        ep = self.episode
        if ep is not None:
            if sec - ep[3] > cfg.episode_s:
                self.episode = None
            elif ep[1] > 0:
                g_hi = min(g_hi, ep[0] * (1.0 + cfg.anchor_cap))
            else:
                g_lo = max(g_lo, ep[0] / (1.0 + cfg.anchor_cap))
        self.guard = None if g_hi == _INF and not g_lo else (g_lo, g_hi)
        zone = None
        on, _, hi1, lo1, hi2, lo2 = self.posted or _NOT_POSTED
        if on:  # the range of the two closed windows before this one (not the move's own)
            hh, hl = (hi1 if hi1 > hi2 else hi2), (lo1 if lo1 < lo2 else lo2)
            if hh > 0.0 and hl < _INF:
                cap = 1.0 + cfg.anchor_cap
                zone = (max(hh / cap, min(hl * (1.0 - cfg.posted_margin),
                                          hh * (1.0 - cfg.posted_drop))),
                        min(hl * cap, hh * (1.0 + cfg.posted_margin)))
        self.zone = zone

    def _posted(self, sec: int) -> None:
        """A new window starts: judge the last one's tally, move the regime by its hysteresis."""
        cfg = self.config
        _, who, vol, sold, bought, buyers, n, _, repeats, hi, lo = self.tally or _IDLE
        self.tally = _tally(sec // cfg.ref_window_s)
        on, streak, hi1, lo1, _, _ = self.posted or _NOT_POSTED
        if n < cfg.posted_min_trades or not vol > 0.0:  # a thin window: no evidence either way
            if self.posted is not None:
                self.posted = (on, streak, hi, lo, hi1, lo1)
            return
        ok = (sold >= cfg.posted_share * vol and bought <= (1.0 - cfg.posted_share) * vol
              and len(buyers) >= cfg.posted_buyers and repeats >= cfg.posted_repeat * n)
        if ok:
            streak = (streak if streak > 0 else 0) + 1
        else:
            streak = (streak if streak < 0 else 0) - 1
        if abs(streak) >= cfg.posted_windows:
            on, streak = ok, (1 if ok else -1) * cfg.posted_windows
        self.posted = (on, streak, hi, lo, hi1, lo1) if on or streak > 0 else None

    def _dynamic(self) -> float:
        cfg = self.config
        return min(cfg.dynamic_cap, max(cfg.dynamic_floor, cfg.dynamic_k * self.sigma
                                        * math.sqrt(cfg.dynamic_window_s)))

    def _guarded(self, m: float, clock: float, tid: str, out: MonitorOutput,
                 pend: tuple[TradeColumns, int, int, float, bool], *, ref: float | None,
                 ratio: float, dynamic: bool) -> bool:
        """Beyond a guard level: halt at the episode anchor, or (``dynamic``) pause by the
        dynamic breaker. False when neither is what was crossed."""
        cfg, ep = self.config, self.episode
        if ep is not None:
            anchor, side, pauses, _ = ep
            cap = cfg.anchor_cap
            if m >= anchor * (1.0 + cap) if side > 0 else m <= anchor / (1.0 + cap):
                move = m / anchor - 1.0
                limit = cap if side > 0 else 1.0 - 1.0 / (1.0 + cap)
                self._trip("ANCHOR", clock, tid, abs(move), limit, move, out, pend, ref=ref,
                           ratio=max(ratio, abs(move) / limit),
                           extra={"episode_anchor": anchor, "episode_pauses": pauses})
                # re-based: the next automatic halt of this kind needs as large a move again
                self.episode = (m, side, pauses, clock)
                return True
        rng = self._range
        if dynamic and rng is not None and self.ready:
            dh, dl = rng.extremes(self.dyn_since)
            down, up = 1.0 - m / dh, m / dl - 1.0
            dyn = self._dynamic()
            if down >= dyn or up >= dyn:
                move = -down if down >= up else up
                self._trip("DYNAMIC", clock, tid, abs(move), dyn, move, out, pend, ref=ref,
                           ratio=max(ratio, abs(move) / dyn),
                           extra={"range_high": dh, "range_low": dl,
                                  "range_since": 60.0 * max(self.dyn_since,
                                                            rng.newest - len(rng.minute) + 1)})
                return True
        return False

    def _learn(self, sec: int, mclose: float, *, learn: bool) -> None:
        """EWMA of squared one-second log returns of the filtered close, clipped once warm.

        Nothing is learnt while the instrument is in a limit state, paused or halted: the
        baseline must not absorb the very moves it flags.
        """
        cfg, prev_sec, prev_mclose = self.config, self.prev_sec, self.prev_mclose
        self.prev_sec, self.prev_mclose = sec, mclose
        if prev_sec is None or not learn:
            return
        gap = min(float(sec - prev_sec), cfg.max_gap_s)
        r = math.log(mclose / prev_mclose)
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

    def _reopen(self, sec: int) -> None:
        """LULD: the reopening trades become the new reference; the velocity window restarts."""
        self._reopen_pending = False
        if self._bars is not None:
            self._bars.clear()
        self.ref_sum, self.ref_n, self.ref = 0.0, 0, None
        self.win_hi, self.win_lo = -math.inf, math.inf
        self.p1 = self.p2 = None
        self.dyn_since = sec // 60  # CME: the dynamic range restarts at reopening
        if self._range is not None:
            self._range.forget(self.dyn_since)
        cold = self.cold
        if cold is not None:  # a cold reference restarts from the reopening prints too
            self.cold = (None, *cold[1:])
        self._levels(sec, self.ready)

    def _need(self) -> float:
        """The earliest start an alert's window can still have: the velocity window or the
        limit state (both only move on)."""
        need = self.clock - self.config.velocity_window_s
        since = self.breaker.limit_since
        return since if since is not None and since < need else need

    def _remember(self, cols: TradeColumns, start: int, clock: float, ordered: bool) -> None:
        """End of a batch: keep its trades from ``start`` on that an alert could still cite."""
        hi = len(cols.ts)
        n = hi - start
        if n <= 0:
            return
        cfg = self.config
        cap, keep = cfg.recent_trades, cfg.evidence_trades * 5 + 1  # keep: the spike window
        tr = self._trades
        if tr is None:
            tr = self._trades = _Trades()
        size = tr.size + n
        tr.size = size = size if size < cap else cap
        clocks = cols.ts[start:] if ordered else _clocks(cols, start, hi, clock, ordered)
        skip = 0
        if n > keep or n > cap:  # trades before `skip` (and earlier ones) are in no window
            skip = max(min(bisect_left(clocks, self._need()) - 1, n - keep), n - cap, 0)
            if skip:
                tr = self._trades = _Trades(size)
        sealed = tr.add(clocks, skip, cols, start + skip, hi)
        ends, held = tr.ends, tr.held
        if sealed or (len(ends) * tr.block + held - tr.block >= size if ends else
                      held and (held > size or tr.floats[0] < self._need())):
            tr.prune(self._need(), keep)  # (blocks go by the clock when the next one is sealed)

    def _recent(self, pend: tuple[TradeColumns, int, int, float, bool]) -> list[Row]:
        """The trades the plain ``deque(maxlen=recent_trades)`` would hold now (while batch
        trades ``start:stop`` of ``cols`` are judged); ``_GONE`` for those no alert can cite."""
        cols, start, stop, clock, ordered = pend
        tr = self._trades
        rows = tr.rows() if tr is not None else []
        size = min((tr.size if tr is not None else 0) + stop - start, self.config.recent_trades)
        rows += zip(_clocks(cols, start, stop, clock, ordered), cols.trade_id[start:stop],
                    cols.price[start:stop], cols.qty[start:stop], cols.buyer[start:stop],
                    cols.seller[start:stop], strict=True)
        if len(rows) >= size:
            return rows[len(rows) - size:]
        return [_GONE] * (size - len(rows)) + rows

    def _trip(self, trigger: str, clock: float, tid: str, measure: float, threshold: float,
              move: float, out: MonitorOutput, pend: tuple[TradeColumns, int, int, float, bool],
              *, ref: float | None, ratio: float, extra: dict[str, Any] | None = None) -> None:
        """Emit the finding and the breaker's transition of ``trigger`` (``SPIKE``,
        ``VELOCITY``, ``LUDP``; ``DYNAMIC`` pauses as ``LUDP``; ``ANCHOR`` halts as ``SPIKE``)."""
        cfg = self.config
        reason = _REASON.get(trigger, trigger)
        kind = "flash_crash" if move < 0 else "price_spike"
        since = {"VELOCITY": clock - cfg.velocity_window_s}.get(trigger)
        if trigger == "LUDP" and extra:
            since = extra["limit_state_since"]
        recent = self._recent(pend)
        first = next((i for i, r in enumerate(recent) if since is None or r[0] >= since),
                     len(recent) - 1)
        if since is None:
            first = max(0, len(recent) - cfg.evidence_trades * 5)
        window = recent[first:]
        agents, volume, impact = _attribute(recent, first, move)
        band_low = ref * (1 - self.band) if ref else None
        band_high = ref * (1 + self.band) if ref else None
        key = (trigger, self.venue, self.instrument, round(clock * 1e6), tid)
        alert_id = stable_id(kind.replace("_", "-"), DETECTOR, *key)
        verb = "fell" if move < 0 else "rose"
        what = {"VELOCITY": f"within {cfg.velocity_window_s} s",
                "LUDP": f"from its reference for {cfg.breaker.limit_state_s:g} s (LULD band)",
                "SPIKE": "from its reference",
                "DYNAMIC": f"from its {cfg.dynamic_window_s / 60:g}-minute "
                           f"{'high' if move < 0 else 'low'} (dynamic breaker)",
                "ANCHOR": "from its price before the episode's first pause"}[trigger]
        escalation = None
        if self.breaker.trading:
            reason, escalation = self._episode(clock, move, ref, window, reason)
        action = "halted" if reason == "SPIKE" else "paused"
        summary = (f"{self.instrument} {verb} {abs(move):.1%} {what}, limit {threshold:.1%} "
                   f"({measure / threshold:.1f}x): {action}, reason {reason}")
        if trigger != reason:
            summary += f" ({trigger})"
        if escalation and reason == "SPIKE" and trigger not in ("SPIKE", "ANCHOR"):
            summary += (f" (pause {escalation['episode_pauses']} in the same direction within "
                        f"{cfg.episode_s / 60:g} min)")
        n = cfg.evidence_trades
        evidence: dict[str, Any] = {
            "trigger": trigger,
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
            **(escalation or {}),
        }
        if self.posted and self.posted[0]:  # beyond the repricing range of a posted-price market
            evidence["regime"] = "posted_price"
            if self.zone is not None:
                evidence["repricing_low"], evidence["repricing_high"] = self.zone
        out.findings.append(Finding(kind=kind, ts=clock, score=score_ratio(ratio),
                                    venue=self.venue, instrument=self.instrument, agents=agents,
                                    summary=summary, evidence=evidence, key=alert_id))
        # with no LULD reference yet (just reopened), escalation is judged from the pre-move price
        halt_ref = ref if ref else (window[0][2] if window else None)
        ep = self.episode
        if reason == "SPIKE" and ep is not None and window and trigger != "ANCHOR":
            # a halt re-bases the anchor: the next automatic one needs as large a move again
            level = window[-1][2]
            self.episode = (max(ep[0], level) if ep[1] > 0 else min(ep[0], level), *ep[1:])
        duration = cfg.breaker.dynamic_pause_s if reason == "LUDP" and trigger == "DYNAMIC" \
            else None
        out.transitions.append(self.breaker.trip(clock, reason, reference_price=halt_ref,
                                                 band_low=band_low, band_high=band_high,
                                                 alert_ids=[alert_id], duration=duration))

    def _episode(self, clock: float, move: float, ref: float | None, window: list[Row],
                 reason: str) -> tuple[str, dict[str, Any] | None]:
        """A trip from trading: open or continue the containment episode in its direction.
        The ``escalate_after``-th pause in the same direction halts (``SPIKE``) instead."""
        cfg = self.config
        if not cfg.escalate_after:
            return reason, None
        side = 1 if move > 0 else -1
        ep = self.episode
        if ep is not None and clock - ep[3] > cfg.episode_s:
            ep = None
        if ep is None:  # the anchor: the hour's low before a rise, its high before a fall
            before = ref if ref else (window[0][2] if window else None)
            rng = self._range
            hi, lo = rng.extremes(-(2**31)) if rng is not None else (-_INF, _INF)
            if side > 0:
                anchor = min(x for x in (before, lo) if x is not None)
            else:
                anchor = max(x for x in (before, hi) if x is not None)
            if math.isinf(anchor) or not anchor:
                return reason, None
            self.episode = (anchor, side, 1, clock)
            return reason, {"episode_anchor": anchor, "episode_pauses": 1}
        anchor, ep_side, pauses, _ = ep
        if ep_side != side:  # a move back does not count, nor does it end the episode
            return reason, None
        pauses += 1
        self.episode = (anchor, side, pauses, clock)
        info = {"episode_anchor": anchor, "episode_pauses": pauses}
        if pauses >= cfg.escalate_after and reason != "SPIKE":
            return "SPIKE", {**info, "escalated_from": reason}
        return reason, info


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
