"""``surveil exchange``: the reference exchange with a live agent-based market, closing the loop.

Honest agents (market makers, noise, fundamental traders, arbitrageurs; :mod:`replay.market`)
trade through :class:`exchange.venue.Exchange`, which publishes every trade to ``trades`` in
batches and obeys ``halts`` through a :class:`exchange.halts.HaltSubscriber`. Every
``crash_every`` seconds a sell program (flash crash, spilling into energy through the
arbitrageurs) or a buying frenzy (spike) is planted, so the demo shows detectors halting an
instrument, the exchange stopping its matching, and the reopening auction on resumption.
Event time is the wall clock.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from threading import Event

import numpy as np

from streams.settings import Settings
from streams.topics import ensure_topics

__all__ = ["run_exchange"]

log = logging.getLogger("surveil.exchange")


def run_exchange(settings: Settings, *, seed: int = 0, crash_every: float = 120.0,
                 stop: Event | None = None, dt: float = 0.5) -> None:
    """Run until ``stop`` is set, Ctrl-C or SIGTERM (then close cleanly)."""
    from exchange.halts import HaltSubscriber
    from exchange.venue import Exchange, KafkaSink
    from replay.market.agents import INSTRUMENTS, Market
    from replay.market.scenarios import BuyingFrenzy, Episode, SellProgram
    from replay.market.sim import People, populate

    stop = stop or Event()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    ensure_topics(settings.brokers, settings.topics.all(), partitions=settings.partitions)
    halts = HaltSubscriber.from_settings(settings).start()
    sink = KafkaSink(settings.brokers, settings.topics.trades)
    names = [i.name for i in INSTRUMENTS]
    ex = Exchange("m2m-sim", names, halts=halts, sink=sink, clock=time.time,
                  asset_classes={i.name: i.asset_class for i in INSTRUMENTS})
    rng = np.random.default_rng(seed)
    market = Market(rng, start=time.time(), dt=dt, instruments=INSTRUMENTS, exchange=ex)
    people = People(market)
    arbs = populate(market, people, names)
    lots = {k: v.lot for k, v in market.specs.items()}
    first = market.t + max(crash_every, 90.0)  # let the detectors warm up first
    planted = 0
    log.info("exchange m2m-sim: %d instruments, %d agents; an event every %.0f s",
             len(names), len(market.registry), crash_every)
    try:
        while not stop.is_set():
            market.t = max(market.t, time.time())
            if crash_every > 0 and market.t >= first + planted * crash_every:
                t0 = market.t + 2.0
                if planted % 2 == 0:
                    seller = people.add("trading-bot")
                    market.traders.append(SellProgram(
                        seller, "GPU-H100-1H", t0, t0 + 60.0, chunk=6 * lots["GPU-H100-1H"],
                        related="KWH-SA-GRID", watchers=arbs))
                    log.info("planted a sell program on GPU-H100-1H by %s", seller)
                else:
                    ids = [people.add("trading-bot") for _ in range(5)]
                    market.traders.append(BuyingFrenzy(
                        ids, "BW-10G-1H", t0, t0 + 25.0, rng, lots["BW-10G-1H"], peak=4.0))
                    log.info("planted a buying frenzy on BW-10G-1H")
                planted += 1
                market.traders = [x for x in market.traders  # forget finished episodes
                                  if not (isinstance(x, Episode) and x.t1 + 600 < market.t)]
            ex.tick()  # obey halt changes, run due reopening auctions
            market.step()
            ex.flush()
            delay = market.t + dt - time.time()
            if delay > 0:
                time.sleep(delay)
    except KeyboardInterrupt:
        pass
    finally:
        c = ex.counters
        log.info("exchange stopping: %d trades, %d halts obeyed, %d auctions, rejects %s",
                 c.trades, c.halts_obeyed, c.auctions, dict(c.rejects))
        sink.close()
        halts.stop()
