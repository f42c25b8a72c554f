"""The single-price uncross of a call auction (pure: price levels in, price and volume out).

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

from bisect import bisect_left, bisect_right
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import accumulate

__all__ = ["Uncross", "uncross_price"]


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
