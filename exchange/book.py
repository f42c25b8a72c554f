"""Continuous double-auction order book of one instrument, with a reopening call auction.

Rules
-----
- **Price-time priority.** Better price first; at one price, earlier arrival first (the book's
  own arrival counter, so equal event times never tie). A trade prints at the resting order's
  price, so a limit order never trades through its limit.
- **Orders.** Limit orders are good-till-cancelled (``tif="GTC"``, the remainder rests) or
  immediate-or-cancel (``tif="IOC"``). Market orders (``price=None``) are always IOC: they
  walk the book and any unfilled remainder is cancelled, never rested.
- **Self-trade prevention (STP)** applies to the *same agent id* on both sides only. The default
  ``"cancel_resting"`` expires the agent's resting order and lets the incoming order go on
  (Binance's EXPIRE_MAKER); ``"cancel_incoming"`` cancels the rest of the incoming order;
  ``"none"`` lets the agent trade with itself. Different ids of one beneficial owner are never
  stopped: the book does not know owners, and the wash trades between such ids are exactly what
  the detectors (DESIGN §5) must see.
- **Call phase (halts).** :meth:`OrderBook.halt` stops matching. Limit GTC orders are then
  *queued* (they rest, the book may become crossed); market and IOC orders are rejected with a
  reason, since they cannot wait for a price; cancels work as usual. :meth:`OrderBook.reopen`
  runs the single-price uncross of :mod:`exchange.auction` and returns to continuous trading;
  given price collars, it never prints outside them (orders through a collar slide to it).
  Before the uncross an agent's own crossing orders are resolved by the STP mode, so an
  auction never pairs an agent with itself.
- **Trades** are :class:`streams.contracts.Trade` with ``ts`` = the caller's event time, trade
  ids ``f"{venue}-{instrument}-{n}"`` (``n`` counts from 1 per book) and ``aggressor`` = the
  incoming side; auction trades have no aggressor (``None``).

Data structures: ``sortedcontainers.SortedDict`` (price -> level) per side, and per level an
``OrderedDict`` (order id -> order) kept in arrival order. SortedDict rather than ``heapq``:
best price is ``peekitem`` in O(1), an emptied level is deleted in O(log n) (a heap would need
lazy deletion for cancels), and the auction and ``depth`` need the levels in order, which a heap
only gives by sorting. The OrderedDict gives O(1) FIFO head, append and cancel by id.

Quantities are floats; a remainder of at most :data:`EPS` counts as filled.

>>> book = OrderBook("GPU-H100-1H", venue="v1")
>>> book.submit(Order("s1", "GPU-H100-1H", "sell", 5.0, "alice", price=10.0), ts=1.0).resting
5.0
>>> ack = book.submit(Order("b1", "GPU-H100-1H", "buy", 2.0, "bob"), ts=2.0)  # market order
>>> [(t.trade_id, t.price, t.qty, t.buyer, t.seller, t.aggressor) for t in ack.trades]
[('v1-GPU-H100-1H-1', 10.0, 2.0, 'bob', 'alice', 'buy')]
>>> book.depth()
([], [(10.0, 3.0)])
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Final, Literal

from sortedcontainers import SortedDict

from exchange.auction import uncross_price
from streams.contracts import MAX_VALUE, MIN_VALUE, Trade

__all__ = ["EPS", "Ack", "Auction", "Order", "OrderBook", "Reject", "Side", "StpMode"]

Side = Literal["buy", "sell"]
TimeInForce = Literal["GTC", "IOC"]
StpMode = Literal["cancel_resting", "cancel_incoming", "none"]
Phase = Literal["CONTINUOUS", "AUCTION"]
#: Quantities at or below this are treated as zero (float residue of partial fills).
EPS: Final = 1e-9
_STP_MODES: Final = ("cancel_resting", "cancel_incoming", "none")


@dataclass(frozen=True, slots=True)
class Order:
    """An order from an agent. ``price=None`` makes it a market order (always IOC)."""

    order_id: str
    instrument: str
    side: Side
    qty: float
    agent: str
    price: float | None = None
    tif: TimeInForce = "GTC"


@dataclass(frozen=True, slots=True)
class Reject:
    """An order the book or exchange refused, with a stable machine-readable ``reason``."""

    order_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class Ack:
    """What happened to an accepted order.

    Attributes
    ----------
    trades
        Trades it took part in now (continuous phase only).
    filled, resting, cancelled
        Quantity executed, left in the book, and cancelled (IOC/market remainder or STP);
        ``filled + resting + cancelled`` equals the order's quantity.
    queued
        Accepted during the call phase: it waits for the reopening auction.
    stp_cancelled
        ``(order_id, remaining qty)`` of the agent's own resting orders that STP cancelled.
    """

    order_id: str
    trades: tuple[Trade, ...] = ()
    filled: float = 0.0
    resting: float = 0.0
    cancelled: float = 0.0
    queued: bool = False
    stp_cancelled: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True, slots=True)
class Auction:
    """Result of a reopening uncross (``price is None``: the book was not crossed).

    ``bounded``: the equilibrium lay outside the price collars and the auction printed at the
    collar-bounded price.
    """

    price: float | None
    volume: float
    imbalance: float
    trades: tuple[Trade, ...] = ()
    stp_cancelled: tuple[tuple[str, float], ...] = ()
    bounded: bool = False


class _Resting:
    __slots__ = ("agent", "order_id", "price", "remaining", "seq", "side")

    def __init__(self, order_id: str, side: str, price: float, remaining: float, agent: str,
                 seq: int) -> None:
        self.order_id, self.side, self.price = order_id, side, price
        self.remaining, self.agent, self.seq = remaining, agent, seq


class _Level:
    __slots__ = ("orders", "qty")

    def __init__(self) -> None:
        self.orders: OrderedDict[str, _Resting] = OrderedDict()
        self.qty = 0.0


class OrderBook:
    """Order book of one instrument. Pure and single-threaded: the caller passes event time.

    Parameters
    ----------
    instrument
        The instrument every order must name.
    venue
        Venue id written into trades and trade ids.
    asset_class
        Optional ``asset_class`` of the trades (DESIGN §3.1).
    stp
        Self-trade prevention mode for the same agent id (see the module notes).
    """

    def __init__(self, instrument: str, *, venue: str = "default",
                 asset_class: str | None = None, stp: StpMode = "cancel_resting") -> None:
        if stp not in _STP_MODES:
            raise ValueError(f"stp must be one of {_STP_MODES}, got {stp!r}")
        self.instrument, self.venue = instrument, venue
        self.asset_class, self.stp = asset_class, stp
        self.phase: Phase = "CONTINUOUS"
        self.last_price: float | None = None
        self._bids: Any = SortedDict()  # price -> _Level; best bid = last item
        self._asks: Any = SortedDict()  # price -> _Level; best ask = first item
        self._index: dict[str, _Resting] = {}
        self._arrivals = 0
        self._trades = 0

    # ------------------------------------------------------------------ queries
    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, order_id: object) -> bool:
        return order_id in self._index

    @property
    def trade_count(self) -> int:
        """Trades printed so far (the ``n`` of the last trade id)."""
        return self._trades

    def best_bid(self) -> float | None:
        return float(self._bids.peekitem(-1)[0]) if self._bids else None

    def best_ask(self) -> float | None:
        return float(self._asks.peekitem(0)[0]) if self._asks else None

    @property
    def crossed(self) -> bool:
        """Best bid >= best ask (possible only in the call phase)."""
        bid, ask = self.best_bid(), self.best_ask()
        return bid is not None and ask is not None and bid >= ask

    def remaining(self, order_id: str) -> float | None:
        """Quantity of ``order_id`` still resting, or ``None`` when it is not in the book."""
        order = self._index.get(order_id)
        return order.remaining if order is not None else None

    def depth(self, levels: int | None = None) -> tuple[list[tuple[float, float]],
                                                         list[tuple[float, float]]]:
        """``(bids best first, asks best first)`` as ``(price, quantity)`` per level."""
        bids = [(p, self._bids[p].qty) for p in reversed(self._bids.keys())]
        asks = [(p, lvl.qty) for p, lvl in self._asks.items()]
        return bids[:levels], asks[:levels]

    def open_volume(self) -> float:
        """Total resting quantity on both sides."""
        return sum(o.remaining for o in self._index.values())

    # ------------------------------------------------------------------ orders
    def submit(self, order: Order, ts: float) -> Ack | Reject:
        """Match (continuous phase) or queue (call phase) ``order`` at event time ``ts``."""
        reason = self._invalid(order)
        if reason is not None:
            return Reject(order.order_id, reason)
        if self.phase == "AUCTION":
            if order.price is None:
                return Reject(order.order_id, "market_order_during_halt")
            if order.tif == "IOC":
                return Reject(order.order_id, "ioc_during_halt")
            self._rest(order.order_id, order.side, order.price, order.qty, order.agent)
            return Ack(order.order_id, resting=order.qty, queued=True)
        return self._match(order, ts)

    def cancel(self, order_id: str) -> float | None:
        """Cancel a resting order; returns the quantity removed, or ``None`` if unknown."""
        order = self._index.get(order_id)
        if order is None:
            return None
        self._remove(order)
        return order.remaining

    def _invalid(self, order: Order) -> str | None:
        if order.instrument != self.instrument:
            return "wrong_instrument"
        if not order.order_id or order.order_id in self._index:
            return "duplicate_order_id" if order.order_id else "invalid_order_id"
        if not order.agent:
            return "invalid_agent"
        if order.side not in ("buy", "sell"):
            return "invalid_side"
        if order.tif not in ("GTC", "IOC"):
            return "invalid_tif"
        qty = order.qty
        if isinstance(qty, bool) or not isinstance(qty, int | float) or not (
                math.isfinite(qty) and EPS < qty <= MAX_VALUE):
            return "invalid_qty"
        price = order.price
        # the trade contract's range, so that surveillance can judge every fill
        if price is not None and (isinstance(price, bool) or not isinstance(price, int | float)
                                  or not MIN_VALUE <= price <= MAX_VALUE):
            return "invalid_price"
        return None

    def _match(self, order: Order, ts: float) -> Ack:
        buy = order.side == "buy"
        opposite = self._asks if buy else self._bids
        limit, remaining = order.price, float(order.qty)
        trades: list[Trade] = []
        stp_cancelled: list[tuple[str, float]] = []
        stopped = False
        while remaining > EPS and opposite and not stopped:
            price, level = opposite.peekitem(0 if buy else -1)
            if limit is not None and (price > limit if buy else price < limit):
                break
            orders = level.orders
            while remaining > EPS and orders:
                resting = orders[next(iter(orders))]
                if resting.agent == order.agent and self.stp != "none":
                    if self.stp == "cancel_incoming":
                        stopped = True
                        break
                    stp_cancelled.append((resting.order_id, resting.remaining))
                    self._remove(resting)
                    continue
                qty = min(remaining, resting.remaining)
                if buy:
                    trade = self._trade(ts, price, qty, order.agent, resting.agent, "buy")
                else:
                    trade = self._trade(ts, price, qty, resting.agent, order.agent, "sell")
                trades.append(trade)
                remaining -= qty
                resting.remaining -= qty
                level.qty -= qty
                if resting.remaining <= EPS:
                    self._remove(resting)
        filled = sum(t.qty for t in trades)
        remaining = float(order.qty) - filled
        resting_qty = cancelled = 0.0
        if remaining <= EPS:
            pass
        elif stopped or limit is None or order.tif == "IOC":
            cancelled = remaining
        else:
            self._rest(order.order_id, order.side, limit, remaining, order.agent)
            resting_qty = remaining
        return Ack(order.order_id, tuple(trades), filled, resting_qty, cancelled,
                   stp_cancelled=tuple(stp_cancelled))

    def _rest(self, order_id: str, side: str, price: float, qty: float, agent: str) -> None:
        self._arrivals += 1
        resting = _Resting(order_id, side, float(price), float(qty), agent, self._arrivals)
        book = self._bids if side == "buy" else self._asks
        level = book.get(resting.price)
        if level is None:
            level = book[resting.price] = _Level()
        level.orders[order_id] = resting
        level.qty += resting.remaining
        self._index[order_id] = resting

    def _remove(self, order: _Resting) -> None:
        book = self._bids if order.side == "buy" else self._asks
        level = book[order.price]
        del level.orders[order.order_id]
        del self._index[order.order_id]
        if level.orders:
            level.qty -= order.remaining
        else:
            del book[order.price]

    def _trade(self, ts: float, price: float, qty: float, buyer: str, seller: str,
               aggressor: Side | None) -> Trade:
        self._trades += 1
        self.last_price = price
        return Trade(ts=ts, trade_id=f"{self.venue}-{self.instrument}-{self._trades}",
                     instrument=self.instrument, price=price, qty=qty, buyer=buyer,
                     seller=seller, venue=self.venue, asset_class=self.asset_class,
                     aggressor=aggressor)

    # ------------------------------------------------------------------ call auction
    def halt(self) -> bool:
        """Enter the call phase (idempotent). Returns whether the phase changed."""
        changed = self.phase != "AUCTION"
        self.phase = "AUCTION"
        return changed

    def indicative(self, reference_price: float | None = None) -> Auction:
        """Price and volume the uncross would have now (no side effects, ignores STP)."""
        bids, asks = self.depth()
        found = uncross_price(bids, asks, self._reference(reference_price))
        if found is None:
            return Auction(None, 0.0, 0.0)
        return Auction(found.price, found.volume, found.imbalance)

    def reopen(self, ts: float, reference_price: float | None = None, *,
               collars: tuple[float, float] | None = None) -> Auction:
        """Uncross at a single price at event time ``ts``, then resume continuous trading.

        Parameters
        ----------
        ts
            Event time of the auction trades.
        reference_price
            Reference for the last tie-break (e.g. the halt's ``reference_price``); default
            the last trade price, if any.
        collars
            ``(low, high)``: the print must lie within them. When the equilibrium is outside,
            orders priced through a collar are repriced to it (new time priority) and the book
            uncrosses at the collar-bounded price (``bounded=True``; see :mod:`exchange.auction`).
        """
        cancelled = self._prevent_self_crossing()
        reference = self._reference(reference_price)
        bids, asks = self.depth()
        found = uncross_price(bids, asks, reference)
        bounded = False
        if found is not None and collars is not None and not (
                collars[0] <= found.price <= collars[1]):
            low, high = collars
            self._slide(low, high)
            bids, asks = self.depth()
            found = uncross_price(bids, asks, min(max(found.price, low), high))
            bounded = True
        trades: list[Trade] = []
        if found is not None:
            trades = self._allocate(found.price, ts)
        self.phase = "CONTINUOUS"
        if found is None:
            return Auction(None, 0.0, 0.0, (), tuple(cancelled), bounded)
        volume = sum(t.qty for t in trades)
        return Auction(found.price, volume, found.imbalance, tuple(trades), tuple(cancelled),
                       bounded)

    def _slide(self, low: float, high: float) -> None:
        """Reprice bids above ``high`` down to it and asks below ``low`` up to it."""
        # better-priced orders first, so they keep priority among the repriced ones
        through = [o for p in self._bids.irange(minimum=high, inclusive=(False, True),
                                                reverse=True)
                   for o in self._bids[p].orders.values()]
        through += [o for p in self._asks.irange(maximum=low, inclusive=(True, False))
                    for o in self._asks[p].orders.values()]
        for order in through:
            self._remove(order)
            self._rest(order.order_id, order.side, high if order.side == "buy" else low,
                       order.remaining, order.agent)

    def _reference(self, reference_price: float | None) -> float | None:
        return reference_price if reference_price is not None else self.last_price

    def _prevent_self_crossing(self) -> list[tuple[str, float]]:
        """Cancel an agent's orders that cross its own orders (by the STP mode)."""
        if self.stp == "none":
            return []
        sides: dict[str, tuple[list[_Resting], list[_Resting]]] = {}
        for order in self._index.values():
            pair = sides.setdefault(order.agent, ([], []))
            pair[0 if order.side == "buy" else 1].append(order)
        cancelled: list[tuple[str, float]] = []
        for buys, sells in sides.values():
            if not buys or not sells:
                continue
            buys.sort(key=lambda o: (-o.price, o.seq))
            sells.sort(key=lambda o: (o.price, o.seq))
            i = j = 0
            while i < len(buys) and j < len(sells) and buys[i].price >= sells[j].price:
                newer_is_buy = buys[i].seq > sells[j].seq
                drop_buy = newer_is_buy if self.stp == "cancel_incoming" else not newer_is_buy
                victim = buys[i] if drop_buy else sells[j]
                cancelled.append((victim.order_id, victim.remaining))
                self._remove(victim)
                i, j = (i + 1, j) if drop_buy else (i, j + 1)
        return cancelled

    def _allocate(self, price: float, ts: float) -> list[Trade]:
        """Pair eligible buys (>= price) and sells (<= price) in price-time priority."""
        buys = [o for p in reversed(self._bids.keys()) if p >= price
                for o in self._bids[p].orders.values()]
        sells = [o for p in self._asks.irange(maximum=price)
                 for o in self._asks[p].orders.values()]
        trades: list[Trade] = []
        i = j = 0
        while i < len(buys) and j < len(sells):
            buy, sell = buys[i], sells[j]
            qty = min(buy.remaining, sell.remaining)
            trades.append(self._trade(ts, price, qty, buy.agent, sell.agent, None))
            for order, book in ((buy, self._bids), (sell, self._asks)):
                order.remaining -= qty
                book[order.price].qty -= qty
            if buy.remaining <= EPS:
                self._remove(buy)
                i += 1
            if sell.remaining <= EPS:
                self._remove(sell)
                j += 1
        return trades
