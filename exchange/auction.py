"""The single-price uncross of a call auction, and the price collars of a reopening auction.

Everything here is pure: price levels in, price and volume out; event times in, decisions out.

At a candidate price ``p`` the executable demand is ``D(p)`` = buy quantity limited at ``>= p``
and the executable supply is ``S(p)`` = sell quantity limited at ``<= p``; ``min(D, S)`` trades.
The auction price is chosen, as on Xetra, Euronext and Vega's protective auctions, by

1. maximum executable volume ``min(D, S)``;
2. then minimum imbalance ``|D - S|`` (surplus left unexecuted at that price);
3. then the price closest to the reference price (the caller's: the halt's ``reference_price``
   or the last trade). Without any reference, the middle of the tied prices is the reference.
   A remaining exact tie goes to the lower price.

Candidates are the limit prices inside the crossed range ``[lowest ask, highest bid]`` plus the
reference price clamped into that range (so an auction can print at the reference price when it
is as good as any limit, which keeps a reopening from jumping to the edge of the crossed range).

Price collars (DESIGN §7: LULD, Nasdaq halt cross, Vega protective auctions)
--------------------------------------------------------------------------------
A reopening auction may only print within collars around the pre-pause reference (the halt's
``reference_price``, else the last trade before the pause). Without them a pump reopens wherever
its own bids sit, the breaker's bands follow the print, and the next pause reopens higher again.

- **Width by price tier** (:data:`DEFAULT_TIERS`): ±10 % for a reference up to 3.0, ±5 % above.
  The 3.0 break and the 5 %/10 % widths are LULD's (tier 1 5 %, tier 2 10 %, the $3 break); the
  cheaper tier is the wider one, as in the Nasdaq halt-cross collars (10 % up to $25), because a
  cheap instrument moves more per tick and per news. Machine-to-machine instruments are mostly
  cheap (0.12 to 20 in the simulator), so most reopen within ±10 %.
- **Extension** (Nasdaq halt cross, NYSE/Nasdaq LULD reopenings, Vega's auction extension): when
  the indicative (equilibrium) price is outside the collars, the uncross does not happen. The
  book stays in its call phase, collecting orders, for ``extension_s`` (30 s of event time), and
  the collar on the breached side widens by ``step`` (5 % of the reference). At the end of each
  extension the indicative price is checked again.
- **After ``max_extensions``** (3: at most 90 s more, final collar ±25 % / ±20 % on the breached
  side) the auction uncrosses at the **collar-bounded price**, it does not stay halted (a venue
  that never reopens while the regulator says ``TRADING`` is worse than a bounded print).
  Orders priced through the collar are first repriced to it (LULD's price sliding: a buy above
  the upper collar becomes a buy at the collar, with new time priority), then the book uncrosses;
  the tie-break reference is the equilibrium clamped into the collars, so the print reflects the
  pressure (at the bound) instead of falling back to the reference. Every print lies within the
  collars and the book left behind is not crossed.
- Without any reference (no halt reference, no trade ever) there is nothing to collar around:
  the auction uncrosses at once as before.

>>> bids, asks = [(10.0, 5.0), (9.0, 5.0)], [(9.0, 3.0), (9.5, 4.0)]
>>> u = uncross_price(bids, asks, reference=9.0)  # 9.5 and 10 both trade 5 with 2 left over
>>> (u.price, u.volume, u.imbalance)
(9.5, 5.0, -2.0)
>>> uncross_price(bids, asks).price  # no reference: the middle of the tied prices
9.75
>>> uncross_price([(9.0, 1.0)], [(10.0, 1.0)]) is None  # not crossed: nothing to execute
True
>>> uncross_price([(11.0, 10.0)], [(9.0, 10.0)], reference=10.2).price
10.2
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import accumulate
from typing import Final, Literal

__all__ = ["DEFAULT_TIERS", "AuctionEvent", "CollarPolicy", "Reopening", "Uncross",
           "uncross_price"]


@dataclass(frozen=True, slots=True)
class Uncross:
    """Outcome of the price determination.

    Attributes
    ----------
    price
        The single auction price.
    volume
        Quantity that executes at ``price`` (``min(D, S)``).
    imbalance
        ``D - S`` at ``price``: positive = unexecuted buy surplus, negative = sell surplus.
    """

    price: float
    volume: float
    imbalance: float


def uncross_price(
    bids: Iterable[tuple[float, float]],
    asks: Iterable[tuple[float, float]],
    reference: float | None = None,
) -> Uncross | None:
    """Find the auction price of a (possibly crossed) book.

    Parameters
    ----------
    bids, asks
        ``(limit price, quantity)`` per level or per order, in any order; prices > 0.
    reference
        Reference price for the last tie-break (``None``: the middle of the tied prices).

    Returns
    -------
    Uncross | None
        ``None`` when the book is not crossed (nothing can execute).
    """
    bid_levels = sorted((p, q) for p, q in bids if q > 0)
    ask_levels = sorted((p, q) for p, q in asks if q > 0)
    if not bid_levels or not ask_levels:
        return None
    lo, hi = ask_levels[0][0], bid_levels[-1][0]
    if hi < lo:
        return None
    bid_prices = [p for p, _ in bid_levels]
    ask_prices = [p for p, _ in ask_levels]
    # demand_from[i] = quantity of bids at index >= i; supply_to[j] = asks at index < j
    demand_from = list(accumulate((q for _, q in reversed(bid_levels)), initial=0.0))[::-1]
    supply_to = list(accumulate((q for _, q in ask_levels), initial=0.0))
    total = demand_from[0] + supply_to[-1]
    tol = 1e-9 * max(1.0, total)

    def at(price: float) -> tuple[float, float]:
        demand = demand_from[bisect_left(bid_prices, price)]
        supply = supply_to[bisect_right(ask_prices, price)]
        return min(demand, supply), demand - supply

    candidates = {p for p in bid_prices if p >= lo} | {p for p in ask_prices if p <= hi}
    if reference is not None:
        candidates.add(min(max(reference, lo), hi))
    scored = {p: at(p) for p in candidates}
    best_volume = max(v for v, _ in scored.values())
    tied = {p: s for p, s in scored.items() if s[0] >= best_volume - tol}
    best_imbalance = min(abs(i) for _, i in tied.values())
    tied = {p: s for p, s in tied.items() if abs(s[1]) <= best_imbalance + tol}
    if reference is None:
        reference = (min(tied) + max(tied)) / 2
        volume, imbalance = at(reference)
        if volume >= best_volume - tol and abs(imbalance) <= best_imbalance + tol:
            tied[reference] = (volume, imbalance)
    price = min(tied, key=lambda p: (abs(p - reference), p))
    volume, imbalance = tied[price]
    return Uncross(price, volume, imbalance)


# ---------------------------------------------------------------------- price collars
#: ``(highest reference price of the tier, collar width)``, by reference price.
DEFAULT_TIERS: Final = ((3.0, 0.10), (math.inf, 0.05))


@dataclass(frozen=True, slots=True, kw_only=True)
class CollarPolicy:
    """Price collars of a reopening auction and how they widen (see the module notes).

    Parameters
    ----------
    tiers
        ``(highest reference of the tier, width)`` in increasing order of price; the width is a
        fraction of the reference (default ±10 % up to 3.0, ±5 % above).
    step
        Widening per extension, as a fraction of the reference, on the breached side only.
    extension_s
        Length of one extension in event-time seconds.
    max_extensions
        Extensions before the auction uncrosses at the collar-bounded price.

    >>> p = CollarPolicy()
    >>> p.bounds(2.0), p.bounds(20.0), p.bounds(20.0, up=2)
    ((1.8, 2.2), (19.0, 21.0), (19.0, 23.0))
    """

    tiers: tuple[tuple[float, float], ...] = DEFAULT_TIERS
    step: float = 0.05
    extension_s: float = 30.0
    max_extensions: int = 3

    def __post_init__(self) -> None:
        if not self.tiers or any(not 0 < w < 1 for _, w in self.tiers):
            raise ValueError(f"tiers need widths in (0, 1), got {self.tiers!r}")
        if [t for t, _ in self.tiers] != sorted(t for t, _ in self.tiers):
            raise ValueError(f"tiers must be in increasing order of price, got {self.tiers!r}")
        if self.step < 0 or self.extension_s < 0 or self.max_extensions < 0:
            raise ValueError("step, extension_s and max_extensions must be >= 0")

    def width(self, reference: float) -> float:
        """Collar width (fraction of the reference) of the tier ``reference`` falls in."""
        for top, width in self.tiers:
            if reference <= top:
                return width
        return self.tiers[-1][1]

    def bounds(self, reference: float, *, up: int = 0, down: int = 0) -> tuple[float, float]:
        """``(low, high)`` collars after ``up`` upward and ``down`` downward extensions."""
        width = self.width(reference)
        low = reference * max(1.0 - width - down * self.step, 0.0)
        return round(low, 12), round(reference * (1.0 + width + up * self.step), 12)


Decision = Literal["wait", "uncross", "extend", "bounded"]


@dataclass(frozen=True, slots=True)
class AuctionEvent:
    """One step of a reopening auction, as the exchange logs it.

    ``kind``: ``"extended"`` (indicative price outside the collars, the call phase goes on),
    ``"uncrossed"`` (inside the collars, or no collars), ``"bounded"`` (extensions used up: the
    auction printed at the collar-bounded price). ``price``/``volume`` are the auction's
    (``None``/0 for an extension); ``indicative`` is the equilibrium price before the collars.
    """

    ts: float
    instrument: str
    kind: str
    reference: float | None
    low: float | None
    high: float | None
    indicative: float | None
    price: float | None
    volume: float
    extensions: int


class Reopening:
    """Progress of one reopening auction under a :class:`CollarPolicy` (pure, event time).

    >>> r = Reopening(CollarPolicy(), reference=10.0, ts=0.0)
    >>> r.decide(10.4, ts=0.0), r.decide(11.2, ts=0.0), r.bounds, r.deadline
    ('uncross', 'extend', (9.5, 11.0), 30.0)
    >>> r.decide(11.2, ts=10.0), r.decide(10.9, ts=30.0)
    ('wait', 'uncross')
    """

    __slots__ = ("deadline", "down", "policy", "reference", "up")

    def __init__(self, policy: CollarPolicy, *, reference: float, ts: float) -> None:
        self.policy, self.reference, self.deadline = policy, reference, ts
        self.up = self.down = 0

    @property
    def extensions(self) -> int:
        return self.up + self.down

    @property
    def bounds(self) -> tuple[float, float]:
        return self.policy.bounds(self.reference, up=self.up, down=self.down)

    def decide(self, indicative: float | None, ts: float) -> Decision:
        """What to do at event time ``ts`` given the book's indicative price.

        ``"wait"`` while an extension runs; ``"uncross"`` when nothing would trade or the
        indicative price is inside the collars; ``"extend"`` (collars widened on the breached
        side, deadline moved by ``extension_s``) while extensions remain; else ``"bounded"``.
        """
        if ts < self.deadline:
            return "wait"
        low, high = self.bounds
        if indicative is None or low <= indicative <= high:
            return "uncross"
        if self.extensions >= self.policy.max_extensions:
            return "bounded"
        if indicative > high:
            self.up += 1
        else:
            self.down += 1
        self.deadline = ts + self.policy.extension_s
        return "extend"
