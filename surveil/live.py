"""``surveil exchange``: the reference exchange with a live agent-based market, closing the loop.

Honest agents (market makers, noise, fundamental traders, arbitrageurs; :mod:`replay.market`)
trade through :class:`exchange.venue.Exchange`, which publishes every trade to ``trades`` in
batches and obeys ``halts`` through a :class:`exchange.halts.HaltSubscriber`. About every
``crash_every`` seconds the :class:`~replay.market.live.Planter` plants an episode — a sell
program (flash crash, spilling into energy through the arbitrageurs), a buying frenzy (spike), a
wash ring, a circular ring or a Sybil burst, rotating over kinds and instruments — never on an
instrument that is halted, paused or quote-only, just reopened, cooling down from its previous
episode or not yet back at its fair value. So the demo shows detectors halting an instrument,
the exchange stopping its matching, the reopening auction on resumption, and the price going back
to fundamentals. Event time is the wall clock, one step every ``dt`` seconds. Every halt signal
the exchange applies is acknowledged on ``halt_acks`` (:mod:`exchange.acks`), so the desk shows
the exchange's own word that it obeys.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from threading import Event

from streams.settings import Settings
from streams.topics import ensure_topics

__all__ = ["run_exchange"]

log = logging.getLogger("surveil.exchange")


def run_exchange(settings: Settings, *, seed: int = 0, crash_every: float = 120.0,
                 stop: Event | None = None, dt: float = 0.5, warmup: float = 90.0) -> None:
    """Run until ``stop`` is set, Ctrl-C or SIGTERM (then close cleanly)."""
    from exchange.acks import HaltAcks
    from exchange.halts import HaltSubscriber
    from exchange.venue import Exchange, KafkaSink
    from replay.market.agents import INSTRUMENTS
    from replay.market.live import LiveMarket

    stop = stop or Event()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    ensure_topics(settings.brokers, settings.topics.all(), partitions=settings.partitions)
    venue = "m2m-sim"
    acks = HaltAcks.from_settings(settings, exchange=venue, venues=[venue]).start()
    halts = HaltSubscriber.from_settings(settings, on_applied=acks).start()
    sink = KafkaSink(settings.brokers, settings.topics.trades)
    names = [i.name for i in INSTRUMENTS]
    ex = Exchange(venue, names, halts=halts, sink=sink, clock=time.time,
                  asset_classes={i.name: i.asset_class for i in INSTRUMENTS})
    live = LiveMarket(ex, seed=seed, start=time.time(), dt=dt, every=max(crash_every, 0.0),
                      warmup=warmup)
    market = live.m
    log.info("exchange m2m-sim: %d instruments, %d agents; an episode about every %.0f s",
             len(names), len(market.registry), crash_every)
    try:
        while not stop.is_set():
            # one step per dt of wall clock: the step's time is the wall clock, or the next
            # step's when the loop is early (a late loop skips ahead, it does not catch up)
            live.step(time.time())  # obeys halt changes, runs due reopening auctions
            ex.flush()
            delay = market.t - time.time()  # market.t is now the next step's time
            if delay > 0:
                time.sleep(delay)
    except KeyboardInterrupt:
        pass
    finally:
        c = ex.counters
        planted = live.planter.planted if live.planter is not None else []
        log.info("exchange stopping: %d trades, %d halts obeyed, %d auctions, %d episodes, "
                 "rejects %s", c.trades, c.halts_obeyed, c.auctions, len(planted),
                 dict(c.rejects))
        sink.close()
        halts.stop()
        acks.close()
