"""The exchange service: order books per instrument that obey halts and publish their trades.

In-process agents call :meth:`Exchange.submit` / :meth:`Exchange.cancel`; the simulator (or a
live loop) calls :meth:`Exchange.tick` with its clock. Before anything touches a book the
exchange asks its :class:`~exchange.haltbook.HaltSource` (a
:class:`~exchange.halts.HaltSubscriber` on Kafka, or a :class:`~exchange.haltbook.HaltBook` fed
in-process) for the instrument's state:

- not ``TRADING`` (halted, paused, quote-only, or the halt feed is silent): the book enters its
  call phase. With ``on_halt="queue"`` (default) limit orders are queued for the reopening
  auction and market/IOC orders are rejected (``market_order_during_halt``,
  ``ioc_during_halt``); with ``on_halt="reject"`` every new order is rejected (``halted``).
  Cancels always work.
- back to ``TRADING``: the book reopens with a single-price uncross (reference price: the
  signal's ``reference_price``, else the last trade) and continuous trading resumes. The
  reopening obeys price collars around that reference (:class:`~exchange.auction.CollarPolicy`,
  default on): an indicative price outside them *extends* the call phase by 30 s of event time
  (the caller's ``ts``/clock, checked at every call and :meth:`Exchange.tick`) and widens the
  breached collar by 5 %; after 3 extensions the auction prints at the collar-bounded price.
  ``counters.auction_extensions`` / ``counters.bounded_auctions`` count them and
  :attr:`Exchange.auction_log` keeps the last 1,000 :class:`~exchange.auction.AuctionEvent`.

Halt state is re-read at every call, so obeying a halt needs no callback and runs on the
caller's thread with the caller's event time. Trades go to a sink in batches of up to
``batch_size`` trades or ``linger_ms`` of wall clock (DESIGN §2: "up to 1,000 trades or 5 ms"),
checked on every call and, after :meth:`Exchange.start`, by a flusher thread.

>>> sink = MemorySink()
>>> ex = Exchange("v1", ["KWH-SA-GRID"], sink=sink, batch_size=1)
>>> ex.submit(Order("s1", "KWH-SA-GRID", "sell", 2.0, "a", price=0.3), ts=10.0)
[]
>>> [(t.trade_id, t.qty) for t in ex.submit(Order("b1", "KWH-SA-GRID", "buy", 1.0, "b"), ts=11.0)]
[('v1-KWH-SA-GRID-1', 1.0)]
>>> len(sink.trades), ex.counters.trades
(1, 1)
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

from exchange.auction import AuctionEvent, CollarPolicy, Reopening
from exchange.book import Ack, Auction, Order, OrderBook, Reject, StpMode
from exchange.haltbook import HaltSource
from streams.contracts import Trade

__all__ = ["Exchange", "ExchangeCounters", "KafkaSink", "MemorySink", "TradeSink"]

log = logging.getLogger(__name__)


@runtime_checkable
class TradeSink(Protocol):
    """Where published trades go (Kafka in production, memory in tests)."""

    def send(self, trades: Sequence[Trade]) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


class MemorySink:
    """Keeps every published batch in memory."""

    def __init__(self) -> None:
        self.batches: list[list[Trade]] = []

    @property
    def trades(self) -> list[Trade]:
        return [t for batch in self.batches for t in batch]

    def send(self, trades: Sequence[Trade]) -> None:
        self.batches.append(list(trades))

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


class _CallableSink:
    def __init__(self, fn: Callable[[list[Trade]], None]) -> None:
        self.fn = fn

    def send(self, trades: Sequence[Trade]) -> None:
        self.fn(list(trades))

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


class KafkaSink:
    """Publishes to the ``trades`` topic via :class:`replay.publish.BatchPublisher`.

    One JSON array per instrument and batch, key = instrument (DESIGN §3.1).
    """

    def __init__(self, brokers: str, topic: str = "trades", max_batch: int = 1000) -> None:
        from replay.publish import BatchPublisher

        self.publisher = BatchPublisher(brokers, topic, max_batch=max_batch)

    def send(self, trades: Sequence[Trade]) -> None:
        self.publisher.send(trades)

    def flush(self) -> None:
        self.publisher.flush()

    def close(self) -> None:
        self.publisher.close()


@dataclass
class ExchangeCounters:
    """What the exchange did (``rejects`` by reason)."""

    orders: int = 0
    accepted: int = 0
    queued: int = 0
    cancels: int = 0
    stp_cancels: int = 0
    trades: int = 0
    volume: float = 0.0
    rejects: Counter[str] = field(default_factory=Counter)
    halts_obeyed: int = 0
    auctions: int = 0
    auction_trades: int = 0
    auction_extensions: int = 0
    bounded_auctions: int = 0
    published_trades: int = 0
    published_batches: int = 0


class Exchange:
    """A venue with one order book per instrument.

    Parameters
    ----------
    venue
        Venue id (trades' ``venue``; the halts' ``venue`` this exchange obeys).
    instruments
        Instruments to list; more with :meth:`add_instrument`.
    halts
        Halt state source; ``None`` = always trading.
    sink
        A :class:`TradeSink` or a callable taking a list of trades; default a :class:`MemorySink`.
    clock
        Event-time clock used when a call passes no ``ts`` (e.g. the simulator's clock).
    batch_size, linger_ms
        Publish when this many trades are buffered, or the oldest waited this long (wall clock).
    on_halt
        ``"queue"``: queue limit orders for the reopening auction; ``"reject"``: reject orders.
    stp
        Self-trade prevention for the same agent id (see :mod:`exchange.book`).
    asset_classes
        Optional ``asset_class`` per instrument, written into trades.
    wall_clock
        Monotonic clock for batching, injectable.
    collars
        Price collars and extensions of reopening auctions; ``None``: uncross at once, anywhere.
    """

    def __init__(
        self,
        venue: str,
        instruments: Iterable[str] = (),
        *,
        halts: HaltSource | None = None,
        sink: TradeSink | Callable[[list[Trade]], None] | None = None,
        clock: Callable[[], float] | None = None,
        batch_size: int = 1000,
        linger_ms: float = 5.0,
        on_halt: Literal["queue", "reject"] = "queue",
        stp: StpMode = "cancel_resting",
        asset_classes: Mapping[str, str] | None = None,
        wall_clock: Callable[[], float] = time.monotonic,
        collars: CollarPolicy | None = CollarPolicy(),  # noqa: B008 (frozen, immutable)
    ) -> None:
        if on_halt not in ("queue", "reject"):
            raise ValueError(f"on_halt must be 'queue' or 'reject', got {on_halt!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.venue, self.halts, self.clock = venue, halts, clock
        self.sink: TradeSink
        if sink is None:
            self.sink = MemorySink()
        elif isinstance(sink, TradeSink):
            self.sink = sink
        else:
            self.sink = _CallableSink(sink)
        self.batch_size, self.linger_s, self.on_halt, self.stp = (
            batch_size, linger_ms / 1000, on_halt, stp)
        self.wall_clock = wall_clock
        self.counters = ExchangeCounters()
        self.collars = collars
        #: The latest steps of reopening auctions (extensions, uncrosses), oldest first.
        self.auction_log: deque[AuctionEvent] = deque(maxlen=1000)
        self._reopenings: dict[str, Reopening] = {}
        self.books: dict[str, OrderBook] = {}
        self._asset_classes = dict(asset_classes or {})
        self._buffer: list[Trade] = []
        self._buffered_at = 0.0
        self._last_ts = float("-inf")
        self._lock = threading.RLock()
        self._flusher: threading.Thread | None = None
        self._stop = threading.Event()
        for instrument in instruments:
            self.add_instrument(instrument)

    def add_instrument(self, instrument: str, asset_class: str | None = None) -> OrderBook:
        """List an instrument (idempotent); returns its book."""
        with self._lock:
            book = self.books.get(instrument)
            if book is None:
                book = OrderBook(instrument, venue=self.venue, stp=self.stp,
                                 asset_class=asset_class or self._asset_classes.get(instrument))
                self.books[instrument] = book
            return book

    def state(self, instrument: str) -> str:
        """The halt state this exchange obeys for ``instrument``."""
        return self.halts.state(self.venue, instrument) if self.halts is not None else "TRADING"

    # ------------------------------------------------------------------ agents
    def submit(self, order: Order, ts: float | None = None) -> list[Trade] | Reject:
        """Submit an order; returns the trades it made now (possibly none) or a :class:`Reject`."""
        result = self.place(order, ts)
        return result if isinstance(result, Reject) else list(result.trades)

    def place(self, order: Order, ts: float | None = None) -> Ack | Reject:
        """Like :meth:`submit`, with the full :class:`~exchange.book.Ack` (resting, queued...)."""
        with self._lock:
            now = self._event_time(ts)
            self.counters.orders += 1
            book = self.books.get(order.instrument)
            if book is None:
                return self._reject(Reject(order.order_id, "unknown_instrument"))
            if any(order.order_id in other for other in self.books.values()):
                return self._reject(Reject(order.order_id, "duplicate_order_id"))
            self._sync(book, now)
            if book.phase == "AUCTION" and self.on_halt == "reject":
                return self._reject(Reject(order.order_id, "halted"))
            result = book.submit(order, now)
            if isinstance(result, Reject):
                return self._reject(result)
            self.counters.accepted += 1
            self.counters.queued += result.queued
            self.counters.stp_cancels += len(result.stp_cancelled)
            self._emit(result.trades)
            self._flush_due()
            return result

    def cancel(self, order_id: str) -> bool:
        """Cancel a resting or queued order; ``False`` when no book holds it."""
        with self._lock:
            for book in self.books.values():
                if book.cancel(order_id) is not None:
                    self.counters.cancels += 1
                    self._flush_due()
                    return True
            return False

    # ------------------------------------------------------------------ clock
    def tick(self, ts: float | None = None) -> list[Trade]:
        """Obey halt changes now: enter call phases, run due reopening auctions, flush due batches.

        Returns the auction trades made by this call.
        """
        with self._lock:
            now = self._event_time(ts)
            trades: list[Trade] = []
            for book in self.books.values():
                auction = self._sync(book, now)
                if auction is not None:
                    trades.extend(auction.trades)
            self._flush_due()
            return trades

    def _event_time(self, ts: float | None) -> float:
        if ts is None:
            if self.clock is None:
                raise ValueError("pass ts or give the Exchange a clock")
            ts = self.clock()
        self._last_ts = max(self._last_ts, float(ts))  # event time never goes backwards
        return self._last_ts

    def _sync(self, book: OrderBook, ts: float) -> Auction | None:
        state = self.state(book.instrument)
        if state != "TRADING":
            extending = self._reopenings.pop(book.instrument, None) is not None
            if book.halt() or extending:
                self.counters.halts_obeyed += 1
                log.info("%s %s: %s, continuous trading stopped", self.venue, book.instrument,
                         state)
            return None
        if book.phase != "AUCTION":
            return None
        reference = (self.halts.reference_price(self.venue, book.instrument)
                     if self.halts is not None else None)
        if reference is None:
            reference = book.last_price
        collars: tuple[float, float] | None = None
        reopening = self._reopenings.get(book.instrument)
        if self.collars is not None and reference is not None:
            if reopening is None:
                reopening = Reopening(self.collars, reference=reference, ts=ts)
                self._reopenings[book.instrument] = reopening
            reference = reopening.reference
            indicative = book.indicative(reference).price
            decision = reopening.decide(indicative, ts)
            collars = reopening.bounds
            if decision == "wait":
                return None
            if decision == "extend":
                self.counters.auction_extensions += 1
                self._record(ts, book.instrument, "extended", reopening, indicative, None, 0.0)
                log.info("%s %s reopening extended to %g: indicative %s outside collars %s",
                         self.venue, book.instrument, reopening.deadline, indicative, collars)
                return None
        else:
            indicative = None
        self._reopenings.pop(book.instrument, None)
        auction = book.reopen(ts, reference, collars=collars)
        self.counters.auctions += 1
        self.counters.bounded_auctions += auction.bounded
        self.counters.auction_trades += len(auction.trades)
        self.counters.stp_cancels += len(auction.stp_cancelled)
        self._record(ts, book.instrument, "bounded" if auction.bounded else "uncrossed",
                     reopening, indicative, auction.price, auction.volume, reference)
        log.info("%s %s reopened: price %s, volume %g, imbalance %g", self.venue,
                 book.instrument, auction.price, auction.volume, auction.imbalance)
        self._emit(auction.trades)
        return auction

    def _record(self, ts: float, instrument: str, kind: str, reopening: Reopening | None,
                indicative: float | None, price: float | None, volume: float,
                reference: float | None = None) -> None:
        low, high = reopening.bounds if reopening is not None else (None, None)
        self.auction_log.append(AuctionEvent(
            ts, instrument, kind, reopening.reference if reopening is not None else reference,
            low, high, indicative, price, volume,
            reopening.extensions if reopening is not None else 0))

    def _reject(self, reject: Reject) -> Reject:
        self.counters.rejects[reject.reason] += 1
        return reject

    # ------------------------------------------------------------------ publishing
    def _emit(self, trades: Sequence[Trade]) -> None:
        if not trades:
            return
        self.counters.trades += len(trades)
        self.counters.volume += sum(t.qty for t in trades)
        restart = not self._buffer
        self._buffer.extend(trades)
        while len(self._buffer) >= self.batch_size:
            batch, self._buffer = self._buffer[:self.batch_size], self._buffer[self.batch_size:]
            self._publish(batch)
            restart = True
        if self._buffer and restart:
            self._buffered_at = self.wall_clock()

    def _flush_due(self) -> None:
        """Hand the buffer to the sink once its oldest trade waited ``linger_ms``."""
        if self._buffer and self.wall_clock() - self._buffered_at >= self.linger_s:
            batch, self._buffer = self._buffer, []
            self._publish(batch)

    def _publish(self, batch: list[Trade]) -> None:
        self.sink.send(batch)
        self.counters.published_trades += len(batch)
        self.counters.published_batches += 1

    def flush(self) -> int:
        """Publish everything buffered now and flush the sink; returns the trades published."""
        with self._lock:
            batch, self._buffer = self._buffer, []
            if batch:
                self._publish(batch)
            self.sink.flush()
            return len(batch)

    def start(self) -> Exchange:
        """Start a thread that publishes buffered trades once they waited ``linger_ms``."""
        if self._flusher is None:
            self._stop.clear()
            self._flusher = threading.Thread(target=self._flush_loop, name="exchange-flusher",
                                             daemon=True)
            self._flusher.start()
        return self

    def _flush_loop(self) -> None:
        while not self._stop.wait(max(self.linger_s / 2, 0.001)):
            try:
                with self._lock:
                    self._flush_due()
            except Exception:
                log.exception("publishing trades failed")

    def close(self) -> None:
        """Stop the flusher, publish what is buffered and close the sink."""
        self._stop.set()
        if self._flusher is not None:
            self._flusher.join(10)
            self._flusher = None
        self.flush()
        self.sink.close()
