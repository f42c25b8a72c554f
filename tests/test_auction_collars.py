"""Reopening auctions within price collars: at once inside, extended outside, bounded at last.

The exchange obeys an in-process :class:`~exchange.halts.HaltBook`; event time is the ``ts``
passed to each call, so the 30 s extensions run without any wall clock.
"""

from __future__ import annotations

import time

import pytest

from exchange.auction import AuctionEvent, CollarPolicy, Reopening
from exchange.book import Ack, Order, OrderBook, Reject
from exchange.halts import HaltBook
from exchange.venue import Exchange
from streams.contracts import Halt, Trade, iso

__all__: list[str] = []

GPU = "GPU-H100-1H"


def halt(ts: float, state: str, reference_price: float | None = None) -> Halt:
    return Halt(seq=round(ts * 1e6), ts=iso(ts), emitted_at=iso(time.time()), venue="v1",
                instrument=GPU, state=state, reason="LUDP" if state != "TRADING" else "RESUME",
                resume_at=None, reference_price=reference_price, band_low=None, band_high=None,
                alert_ids=[])


def order(oid: str, side: str, qty: float, agent: str, price: float | None) -> Order:
    return Order(oid, GPU, side, qty, agent, price=price)  # type: ignore[arg-type]


def queue(ex: Exchange, orders: list[tuple[str, float, float]], ts: float) -> None:
    """Queue ``(side, price, qty)`` limit orders, one agent each."""
    for side, price, qty in orders:
        n = ex.counters.orders
        result = ex.place(order(f"q{n}", side, qty, f"agent-{n}", price), ts=ts)
        assert isinstance(result, Ack), result
        assert result.queued


DEFAULT = CollarPolicy()


def paused(reference: float | None = 10.0, *, collars: CollarPolicy | None = DEFAULT,
           last: float | None = None) -> tuple[Exchange, HaltBook]:
    """An exchange paused at t=1 (last trade at ``last`` when given) with ``reference``."""
    halts = HaltBook()
    ex = Exchange("v1", [GPU], halts=halts, collars=collars, linger_ms=0)
    if last is not None:
        ex.submit(order("s0", "sell", 1, "s0", last), ts=0.5)
        ex.submit(order("b0", "buy", 1, "b0", last), ts=0.6)
    halts.apply(halt(1.0, "PAUSED", reference))
    ex.tick(1.0)
    assert ex.books[GPU].phase == "AUCTION"
    return ex, halts


def resume(ex: Exchange, halts: HaltBook, ts: float, reference: float | None = 10.0
           ) -> list[Trade]:
    halts.apply(halt(ts, "TRADING", reference))
    return ex.tick(ts)


def kinds(ex: Exchange) -> list[str]:
    return [e.kind for e in ex.auction_log]


#: An honest reopening: two-sided interest around the reference 10.0.
HONEST = [("buy", 10.05, 3), ("buy", 9.98, 4), ("buy", 9.9, 5),
          ("sell", 9.97, 2), ("sell", 10.02, 4), ("sell", 10.1, 5)]


# ---------------------------------------------------------------------- the policy
def test_collar_tiers_and_widening() -> None:
    p = CollarPolicy()
    assert p.width(0.12) == p.width(3.0) == 0.10
    assert p.width(3.01) == p.width(1e9) == 0.05
    assert p.bounds(2.0, up=3) == pytest.approx((1.8, 2.5))
    assert p.bounds(20.0, down=1) == pytest.approx((18.0, 21.0))
    assert p.bounds(1.0, down=30)[0] == 0.0  # never a negative collar
    for bad in ({"tiers": ()}, {"tiers": ((3.0, 1.5),)}, {"tiers": ((9.0, 0.1), (3.0, 0.05))},
                {"step": -0.01}, {"max_extensions": -1}):
        with pytest.raises(ValueError, match="tiers|must be"):
            CollarPolicy(**bad)  # type: ignore[arg-type]


def test_reopening_decisions_follow_event_time() -> None:
    r = Reopening(CollarPolicy(max_extensions=2), reference=10.0, ts=100.0)
    assert r.decide(None, 100.0) == "uncross"  # nothing would trade
    assert r.decide(12.0, 100.0) == "extend"
    assert (r.up, r.down, r.deadline, r.bounds) == (1, 0, 130.0, pytest.approx((9.5, 11.0)))
    assert r.decide(12.0, 129.9) == "wait"
    assert r.decide(7.0, 130.0) == "extend"  # the other side breached: it widens instead
    assert r.bounds == pytest.approx((9.0, 11.0))
    assert r.decide(12.0, 160.0) == "bounded"  # extensions used up


# ---------------------------------------------------------------------- the exchange
def test_indicative_inside_the_collars_uncrosses_at_once() -> None:
    ex, halts = paused()
    queue(ex, HONEST, ts=2.0)
    trades = resume(ex, halts, 300.0)
    assert trades
    assert {t.price for t in trades} == {10.02}
    assert ex.books[GPU].phase == "CONTINUOUS"
    c = ex.counters
    assert (c.auctions, c.auction_extensions, c.bounded_auctions) == (1, 0, 0)
    assert list(ex.auction_log) == [AuctionEvent(300.0, GPU, "uncrossed", 10.0, 9.5, 10.5,
                                                 10.02, 10.02, 3.0, 0)]


def test_outside_the_collars_extends_then_uncrosses_within_widened_collars() -> None:
    ex, halts = paused()
    queue(ex, [("buy", 11.2, 5), ("sell", 10.9, 5)], ts=2.0)  # equilibrium 10.9-11.2
    assert resume(ex, halts, 300.0) == []
    assert ex.books[GPU].phase == "AUCTION"
    assert kinds(ex) == ["extended"]
    event = ex.auction_log[-1]
    assert (event.indicative, event.low, event.high, event.extensions) == (
        10.9, 9.5, pytest.approx(11.0), 1)
    # the call phase goes on: limits queue, market orders are refused
    assert ex.submit(order("m", "buy", 1, "m", None), ts=310.0) == Reject(
        "m", "market_order_during_halt")
    assert ex.tick(329.9) == []  # the extension runs 30 s of event time
    trades = ex.tick(330.0)
    assert [(t.price, t.qty) for t in trades] == [(10.9, 5)]
    assert ex.books[GPU].phase == "CONTINUOUS"
    c = ex.counters
    assert (c.auctions, c.auction_extensions, c.bounded_auctions) == (1, 1, 0)
    assert kinds(ex) == ["extended", "uncrossed"]


def test_new_orders_during_an_extension_can_bring_the_price_home() -> None:
    ex, halts = paused()
    queue(ex, [("buy", 12.0, 5), ("sell", 12.0, 5)], ts=2.0)
    resume(ex, halts, 300.0)
    queue(ex, [("sell", 10.1, 20)], ts=310.0)  # contra-side interest arrives
    trades = ex.tick(330.0)
    assert {t.price for t in trades} == {10.1}
    assert ex.counters.auction_extensions == 1


def test_a_pump_cannot_reopen_beyond_the_collar() -> None:
    """Bids 5x the reference and only thin asks up there: without collars the auction prints
    at the pump's price; with them it extends three times and prints at the widened collar."""
    pump = [("buy", 12.0, 50), ("buy", 11.0, 20), ("buy", 2.5, 10),
            ("sell", 2.45, 5), ("sell", 2.6, 5), ("sell", 3.0, 5), ("sell", 11.5, 30)]
    free, halts = paused(2.4, collars=None)
    queue(free, pump, ts=2.0)
    assert {t.price for t in resume(free, halts, 300.0, 2.4)} == {11.5}  # +379 %

    ex, halts = paused(2.4)
    queue(ex, pump, ts=2.0)
    assert resume(ex, halts, 300.0, 2.4) == []
    for ts in (330.0, 360.0):
        assert ex.tick(ts) == []
    trades = ex.tick(390.0)
    high = 2.4 * (1 + 0.10 + 3 * 0.05)
    # +25 %: the widened collar, no more
    assert [t.price for t in trades] == pytest.approx([high] * len(trades))
    assert sum(t.qty for t in trades) == 15  # every ask within the collar, none beyond
    book = ex.books[GPU]
    assert book.phase == "CONTINUOUS"
    assert not book.crossed
    assert book.best_bid() == pytest.approx(high)  # the pump's bids slid down to the collar
    assert book.best_ask() == 11.5
    c = ex.counters
    assert (c.auctions, c.auction_extensions, c.bounded_auctions) == (1, 3, 1)
    assert kinds(ex) == ["extended"] * 3 + ["bounded"]
    assert ex.auction_log[-1].indicative == 11.5


def test_a_crash_is_bounded_below_the_same_way() -> None:
    ex, halts = paused(collars=CollarPolicy(max_extensions=1))
    queue(ex, [("sell", 5.0, 10), ("buy", 6.0, 4), ("buy", 9.7, 2)], ts=2.0)
    resume(ex, halts, 300.0)
    trades = ex.tick(330.0)
    # 10 - 5 % - one 5 % step
    assert [t.price for t in trades] == pytest.approx([9.0] * len(trades))
    assert [(t.buyer, t.qty) for t in trades] == [("agent-2", 2)]
    assert ex.books[GPU].best_ask() == pytest.approx(9.0)
    assert ex.auction_log[-1].low == pytest.approx(9.0)


@pytest.mark.parametrize("shift", [-0.03, 0.0, 0.02, 0.045])
def test_ordinary_reopenings_are_unaffected(shift: float) -> None:
    """An honest book around the reference reopens exactly as it did without collars."""
    book = [(side, round(price * (1 + shift), 4), qty) for side, price, qty in HONEST]
    results = []
    for collars in (CollarPolicy(), None):
        ex, halts = paused(collars=collars)
        queue(ex, book, ts=2.0)
        trades = resume(ex, halts, 300.0)
        results.append([(t.price, t.qty, t.buyer, t.seller) for t in trades])
        assert ex.counters.auction_extensions == ex.counters.bounded_auctions == 0
    assert results[0] == results[1]
    assert results[0]


def test_reference_falls_back_to_the_last_trade_before_the_pause() -> None:
    ex, halts = paused(None, last=2.0)
    queue(ex, [("buy", 2.5, 3), ("sell", 2.5, 3)], ts=2.0)
    assert resume(ex, halts, 300.0, None) == []
    event = ex.auction_log[-1]
    assert (event.kind, event.reference, event.high) == ("extended", 2.0, pytest.approx(2.3))


def test_no_reference_at_all_uncrosses_at_once() -> None:
    ex, halts = paused(None)
    queue(ex, [("buy", 50.0, 3), ("sell", 40.0, 3)], ts=2.0)
    assert [t.qty for t in resume(ex, halts, 300.0, None)] == [3]
    assert kinds(ex) == ["uncrossed"]


def test_a_new_halt_during_an_extension_restarts_the_reopening() -> None:
    ex, halts = paused()
    queue(ex, [("buy", 12.0, 5), ("sell", 12.0, 5)], ts=2.0)
    resume(ex, halts, 300.0)
    halts.apply(halt(310.0, "HALTED", 10.0))
    assert ex.tick(330.0) == []  # halted again: no uncross at the extension's end
    assert ex.counters.halts_obeyed == 2
    assert resume(ex, halts, 600.0) == []  # a fresh reopening: collars from the start
    event = ex.auction_log[-1]
    assert (event.kind, event.extensions, event.high) == ("extended", 1, pytest.approx(11.0))


def test_a_bounded_uncross_keeps_every_order_accounted_for() -> None:
    book = OrderBook(GPU)
    book.halt()
    for n, (side, price, qty) in enumerate([("buy", 20.0, 4), ("buy", 15.0, 3),
                                            ("sell", 9.0, 2), ("sell", 14.0, 6)]):
        assert isinstance(book.submit(order(f"o{n}", side, qty, f"a{n}", price), 0.0), Ack)
    auction = book.reopen(1.0, 10.0, collars=(9.5, 10.5))
    assert auction.bounded
    assert auction.price == 10.5
    assert [(t.buyer, t.qty) for t in auction.trades] == [("a0", 2)]  # price priority kept
    assert (book.remaining("o0"), book.remaining("o1"), book.remaining("o3")) == (2, 3, 6)
    assert book.depth() == ([(10.5, 5.0)], [(14.0, 6.0)])
