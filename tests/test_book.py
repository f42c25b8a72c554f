"""Order book: continuous matching, cancels, STP, the reopening auction and its invariants."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exchange.auction import uncross_price
from exchange.book import Ack, Order, OrderBook, Reject
from streams.contracts import Trade, decode_message, encode

__all__: list[str] = []

INS = "GPU-H100-1H"


def order(oid: str, side: str, qty: float, agent: str, price: float | None = None,
          tif: str = "GTC") -> Order:
    return Order(oid, INS, side, qty, agent, price=price, tif=tif)  # type: ignore[arg-type]


def ack(result: Ack | Reject) -> Ack:
    assert isinstance(result, Ack), result
    return result


def fills(trades: Any) -> list[tuple[float, float, str, str]]:
    return [(t.price, t.qty, t.buyer, t.seller) for t in trades]


@pytest.fixture
def book() -> OrderBook:
    return OrderBook(INS, venue="v1", asset_class="compute")


# ---------------------------------------------------------------------- continuous trading
def test_price_then_time_priority(book: OrderBook) -> None:
    ack(book.submit(order("s1", "sell", 1, "a1", 10.0), 1.0))
    ack(book.submit(order("s2", "sell", 1, "a2", 9.5), 2.0))
    ack(book.submit(order("s3", "sell", 1, "a3", 9.5), 3.0))
    result = ack(book.submit(order("b1", "buy", 3, "b", 10.0), 4.0))
    assert fills(result.trades) == [(9.5, 1, "b", "a2"), (9.5, 1, "b", "a3"), (10.0, 1, "b", "a1")]
    assert [t.trade_id for t in result.trades] == ["v1-GPU-H100-1H-1", "v1-GPU-H100-1H-2",
                                                   "v1-GPU-H100-1H-3"]
    assert {t.aggressor for t in result.trades} == {"buy"}
    assert {t.ts for t in result.trades} == {4.0}
    assert len(book) == 0
    assert book.last_price == 10.0


def test_partial_fills_on_both_sides(book: OrderBook) -> None:
    ack(book.submit(order("s1", "sell", 5, "a", 10.0), 1.0))
    first = ack(book.submit(order("b1", "buy", 2, "b", 10.0), 2.0))
    assert (first.filled, first.resting, first.cancelled) == (2, 0, 0)
    assert book.remaining("s1") == 3
    second = ack(book.submit(order("b2", "buy", 7, "c", 10.0), 3.0))
    assert fills(second.trades) == [(10.0, 3, "c", "a")]
    assert (second.filled, second.resting) == (3, 4)
    assert book.remaining("s1") is None
    assert book.remaining("b2") == 4
    assert book.depth() == ([(10.0, 4)], [])


def test_no_trade_through_the_limit(book: OrderBook) -> None:
    for i, price in enumerate([9.0, 10.0, 11.0]):
        ack(book.submit(order(f"s{i}", "sell", 1, "a", price), 1.0))
    result = ack(book.submit(order("b", "buy", 5, "b", 10.0), 2.0))
    assert [t.price for t in result.trades] == [9.0, 10.0]
    assert result.resting == 3
    assert (book.best_bid(), book.best_ask()) == (10.0, 11.0)
    assert not book.crossed


def test_cancel(book: OrderBook) -> None:
    ack(book.submit(order("s1", "sell", 2, "a", 10.0), 1.0))
    ack(book.submit(order("s2", "sell", 3, "a2", 10.0), 1.0))
    assert book.cancel("s1") == 2
    assert book.cancel("s1") is None
    assert book.cancel("nope") is None
    result = ack(book.submit(order("b", "buy", 1, "b", 10.0), 2.0))
    assert fills(result.trades) == [(10.0, 1, "b", "a2")]
    assert book.cancel("s2") == 2
    assert book.depth() == ([], [])
    assert book.best_ask() is None


def test_market_order_is_immediate_or_cancel(book: OrderBook) -> None:
    nothing = ack(book.submit(order("m0", "sell", 4, "s"), 1.0))
    assert (nothing.trades, nothing.cancelled, nothing.resting) == ((), 4, 0)
    ack(book.submit(order("b1", "buy", 1, "b1", 9.0), 2.0))
    ack(book.submit(order("b2", "buy", 2, "b2", 8.0), 2.0))
    result = ack(book.submit(order("m1", "sell", 5, "s"), 3.0))
    assert fills(result.trades) == [(9.0, 1, "b1", "s"), (8.0, 2, "b2", "s")]
    assert {t.aggressor for t in result.trades} == {"sell"}
    assert (result.filled, result.cancelled, result.resting) == (3, 2, 0)
    assert len(book) == 0


def test_limit_ioc_cancels_the_rest(book: OrderBook) -> None:
    ack(book.submit(order("s1", "sell", 1, "a", 10.0), 1.0))
    result = ack(book.submit(order("b1", "buy", 3, "b", 10.0, tif="IOC"), 2.0))
    assert (result.filled, result.cancelled, result.resting) == (1, 2, 0)
    assert "b1" not in book


@pytest.mark.parametrize(("bad", "reason"), [
    (Order("x", "OTHER", "buy", 1, "a", 1.0), "wrong_instrument"),
    (Order("x", INS, "buy", 0, "a", 1.0), "invalid_qty"),
    (Order("x", INS, "buy", float("nan"), "a", 1.0), "invalid_qty"),
    (Order("x", INS, "buy", 1, "a", -1.0), "invalid_price"),
    (Order("x", INS, "buy", 1, "a", float("inf")), "invalid_price"),
    (Order("x", INS, "buy", 1, "a", 1.7e308), "invalid_price"),  # beyond the trade contract
    (Order("x", INS, "buy", 1, "a", 5e-324), "invalid_price"),
    (Order("x", INS, "buy", 1e31, "a", 1.0), "invalid_qty"),
    (Order("x", INS, "hold", 1, "a", 1.0), "invalid_side"),  # type: ignore[arg-type]
    (Order("x", INS, "buy", 1, "a", 1.0, tif="FOK"), "invalid_tif"),  # type: ignore[arg-type]
    (Order("x", INS, "buy", 1, "", 1.0), "invalid_agent"),
    (Order("s1", INS, "buy", 1, "a", 1.0), "duplicate_order_id"),
])
def test_invalid_orders_are_rejected(book: OrderBook, bad: Order, reason: str) -> None:
    ack(book.submit(order("s1", "sell", 1, "a", 5.0), 1.0))
    assert book.submit(bad, 2.0) == Reject(bad.order_id, reason)
    assert len(book) == 1


def test_self_trade_prevention_modes() -> None:
    resting = OrderBook(INS)
    ack(resting.submit(order("s1", "sell", 1, "mm", 10.0), 1.0))
    ack(resting.submit(order("s2", "sell", 1, "other", 10.0), 1.0))
    result = ack(resting.submit(order("b1", "buy", 2, "mm", 10.0), 2.0))
    assert result.stp_cancelled == (("s1", 1),)
    assert fills(result.trades) == [(10.0, 1, "mm", "other")]
    assert result.resting == 1  # the rest of the buy rests

    incoming = OrderBook(INS, stp="cancel_incoming")
    ack(incoming.submit(order("s1", "sell", 1, "mm", 10.0), 1.0))
    result = ack(incoming.submit(order("b1", "buy", 2, "mm", 10.0), 2.0))
    assert (result.trades, result.cancelled, result.resting) == ((), 2, 0)
    assert incoming.remaining("s1") == 1

    allowed = OrderBook(INS, stp="none")
    ack(allowed.submit(order("s1", "sell", 1, "mm", 10.0), 1.0))
    assert fills(ack(allowed.submit(order("b1", "buy", 1, "mm"), 2.0)).trades) == [
        (10.0, 1, "mm", "mm")]
    with pytest.raises(ValueError, match="stp"):
        OrderBook(INS, stp="sometimes")  # type: ignore[arg-type]


def test_different_ids_of_one_owner_trade(book: OrderBook) -> None:
    """Wash trading between Sybil ids must be possible: the detectors have to see it."""
    ack(book.submit(order("s1", "sell", 3, "owner1-bot-a", 10.0), 1.0))
    result = ack(book.submit(order("b1", "buy", 3, "owner1-bot-b", 10.0), 1.0))
    assert fills(result.trades) == [(10.0, 3, "owner1-bot-b", "owner1-bot-a")]


# ---------------------------------------------------------------------- call auction
def test_halt_queues_limits_and_rejects_market_and_ioc(book: OrderBook) -> None:
    ack(book.submit(order("s1", "sell", 2, "a", 10.0), 1.0))
    assert book.halt()
    assert not book.halt()
    queued = ack(book.submit(order("b1", "buy", 5, "b", 11.0), 2.0))
    assert queued.queued
    assert queued.trades == ()
    assert queued.resting == 5
    assert book.crossed
    assert book.submit(order("m", "buy", 1, "c"), 3.0) == Reject("m", "market_order_during_halt")
    assert book.submit(order("i", "buy", 1, "c", 11.0, tif="IOC"), 3.0) == Reject(
        "i", "ioc_during_halt")
    assert book.cancel("s1") == 2  # cancels still work
    assert book.indicative().price is None


def test_reopening_uncross_at_one_price_with_imbalance(book: OrderBook) -> None:
    book.halt()
    for oid, side, qty, agent, price in [("b1", "buy", 4, "b1", 12.0), ("b2", "buy", 4, "b2", 11.0),
                                         ("b3", "buy", 4, "b3", 9.0), ("s1", "sell", 3, "s1", 9.5),
                                         ("s2", "sell", 3, "s2", 10.5),
                                         ("s3", "sell", 3, "s3", 13.0)]:
        ack(book.submit(order(oid, side, qty, agent, price), 1.0))
    indicated = book.indicative()
    auction = book.reopen(5.0)
    # at 10.5 and 11: demand 8, supply 6 -> 6 trade, 2 buy surplus; no reference -> the middle
    assert (auction.price, auction.volume, auction.imbalance) == (10.75, 6, 2)
    assert (indicated.price, indicated.volume) == (auction.price, auction.volume)
    assert {t.price for t in auction.trades} == {10.75}
    assert {t.aggressor for t in auction.trades} == {None}
    assert {t.ts for t in auction.trades} == {5.0}
    assert fills(auction.trades) == [(10.75, 3, "b1", "s1"), (10.75, 1, "b1", "s2"),
                                     (10.75, 2, "b2", "s2")]
    assert book.phase == "CONTINUOUS"
    assert not book.crossed
    assert book.depth() == ([(11.0, 2), (9.0, 4)], [(13.0, 3)])
    assert book.last_price == 10.75


def test_reopening_prefers_the_reference_price(book: OrderBook) -> None:
    book.halt()
    ack(book.submit(order("b", "buy", 10, "b", 11.0), 1.0))
    ack(book.submit(order("s", "sell", 10, "s", 9.0), 1.0))
    auction = book.reopen(2.0, reference_price=10.2)
    assert (auction.price, auction.volume, auction.imbalance) == (10.2, 10, 0)


def test_reopening_without_a_cross_trades_nothing(book: OrderBook) -> None:
    ack(book.submit(order("b", "buy", 1, "b", 9.0), 1.0))
    book.halt()
    ack(book.submit(order("s", "sell", 1, "s", 10.0), 1.0))
    auction = book.reopen(2.0)
    assert (auction.price, auction.trades) == (None, ())
    assert book.phase == "CONTINUOUS"
    assert book.depth() == ([(9.0, 1)], [(10.0, 1)])
    assert ack(book.submit(order("m", "buy", 1, "c"), 3.0)).filled == 1  # continuous again


def test_auction_never_pairs_an_agent_with_itself(book: OrderBook) -> None:
    book.halt()
    ack(book.submit(order("s1", "sell", 2, "mm", 9.0), 1.0))
    ack(book.submit(order("b1", "buy", 2, "mm", 11.0), 2.0))  # newer: mm's older sell expires
    ack(book.submit(order("s2", "sell", 2, "x", 10.0), 3.0))
    auction = book.reopen(4.0)
    assert auction.stp_cancelled == (("s1", 2),)
    assert fills(auction.trades) == [(10.5, 2, "mm", "x")]


@pytest.mark.parametrize(("bids", "asks", "reference", "expected"), [
    ([(10.0, 5.0)], [(10.0, 5.0)], None, (10.0, 5.0, 0.0)),
    ([(10.0, 5.0), (9.0, 5.0)], [(9.0, 3.0), (9.5, 4.0)], 9.0, (9.5, 5.0, -2.0)),  # max volume
    ([(11.0, 4.0), (10.0, 4.0)], [(10.0, 2.0), (11.0, 6.0)], None, (11.0, 4.0, -4.0)),
    ([(12.0, 1.0)], [(8.0, 1.0)], 100.0, (12.0, 1.0, 0.0)),  # reference clamped to the range
    ([(9.0, 1.0)], [(10.0, 1.0)], None, None),
    ([], [(10.0, 1.0)], None, None),
])
def test_uncross_price_rules(bids: list[tuple[float, float]], asks: list[tuple[float, float]],
                             reference: float | None, expected: tuple[float, ...] | None) -> None:
    found = uncross_price(bids, asks, reference)
    assert (None if found is None else (found.price, found.volume, found.imbalance)) == expected


# ---------------------------------------------------------------------- determinism, contract
def _script(book: OrderBook) -> list[Trade]:
    trades: list[Trade] = []
    for i in range(40):
        side = "buy" if i % 3 else "sell"
        price = None if i % 7 == 0 else 10.0 + (i * 37 % 11 - 5) / 10
        result = book.submit(order(f"o{i}", side, 1 + i % 4, f"agent{i % 5}", price), i / 10)
        if isinstance(result, Ack):
            trades += result.trades
        if i == 20:
            book.halt()
        if i == 30:
            trades += book.reopen(3.0).trades
    return trades


def test_deterministic_and_within_the_trade_contract() -> None:
    first, second = _script(OrderBook(INS, venue="v1")), _script(OrderBook(INS, venue="v1"))
    assert first
    assert encode(first) == encode(second)
    decoded, rejected = decode_message(encode(first))
    assert rejected == []
    assert len(decoded) == len(first)
    assert len({t.trade_id for t in decoded}) == len(decoded)


# ---------------------------------------------------------------------- properties
_action = st.one_of(
    st.tuples(st.just("order"), st.sampled_from(["buy", "sell"]),
              st.one_of(st.none(), st.integers(1, 6).map(float)), st.integers(1, 5),
              st.sampled_from(["GTC", "GTC", "IOC"]), st.sampled_from(["a", "b", "c"])),
    st.tuples(st.just("cancel"), st.integers(0, 60)),
)
#: (actions in continuous trading, actions while halted, reference price of the reopening,
#: width of its price collars around the reference or None)
_segment = st.tuples(st.lists(_action, max_size=12), st.lists(_action, max_size=12),
                     st.one_of(st.none(), st.integers(1, 6).map(float)),
                     st.one_of(st.none(), st.sampled_from([0.05, 0.1, 0.25])))


@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(segments=st.lists(_segment, min_size=1, max_size=4),
       stp=st.sampled_from(["cancel_resting", "cancel_incoming", "none"]))
def test_never_crossed_and_volume_conserved(segments: list[tuple[Any, ...]], stp: str) -> None:
    """After any sequence: never crossed outside a halt, and every unit is accounted for;
    a collared reopening prints within its collars."""
    book = OrderBook(INS, stp=stp)  # type: ignore[arg-type]
    ops: list[tuple[Any, ...]] = []
    for before, during, reference, width in segments:
        ops += [*before, ("halt",), *during, ("reopen", reference, width)]
    submitted = traded = cancelled = 0.0
    for n, op in enumerate(ops):
        trades: tuple[Trade, ...] = ()
        if op[0] == "order":
            _, side, price, qty, tif, agent = op
            result = book.submit(order(f"o{n}", side, qty, agent, price, tif), float(n))
            if isinstance(result, Ack):
                submitted += qty
                if price is not None:  # no trade through the limit
                    assert all(t.price <= price if side == "buy" else t.price >= price
                               for t in result.trades)
                assert result.filled + result.resting + result.cancelled == pytest.approx(qty)
                cancelled += result.cancelled + sum(q for _, q in result.stp_cancelled)
                trades = result.trades
            else:
                assert book.phase == "AUCTION"
                assert (price is None or tif == "IOC")
        elif op[0] == "cancel":
            cancelled += book.cancel(f"o{op[1]}") or 0.0
        elif op[0] == "halt":
            book.halt()
        else:
            _, reference, width = op
            collars = None
            if reference is not None and width is not None:
                collars = (reference * (1 - width), reference * (1 + width))
            auction = book.reopen(float(n), reference, collars=collars)
            cancelled += sum(q for _, q in auction.stp_cancelled)
            trades = auction.trades
            assert len({t.price for t in trades}) <= 1
            if collars is not None:
                assert all(collars[0] <= t.price <= collars[1] for t in trades)
        traded += sum(t.qty for t in trades)
        for t in trades:
            assert t.qty > 0
            assert t.price > 0
            if stp != "none":
                assert t.buyer != t.seller
        if book.phase == "CONTINUOUS":
            assert not book.crossed
        assert submitted == pytest.approx(2 * traded + book.open_volume() + cancelled)
