"""Bodies of the smaller ``surveil`` commands: replay, simulate, live feed."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from threading import Event

import click
import msgspec
from tqdm import tqdm

from replay.publish import BatchPublisher, pace
from replay.synthetic import Episode, Feed, FeedSpec
from streams.settings import Settings
from streams.topics import ensure_topics

__all__ = ["live_feed", "planted_episode", "replay_tape"]

log = logging.getLogger("surveil.feed")


def replay_tape(settings: Settings, tape: Path, *, agents: Path | None, speed: float | None,
                loop: bool, batch: int) -> None:
    """Publish a tape (event-time order, batched) at ``speed``× event time (None = max)."""
    from replay.backtest import event_order
    from replay.tape import TapeError, read_agents, read_tape

    try:
        read = read_tape(tape)
    except TapeError as exc:
        raise click.ClickException(str(exc)) from None
    for r in read.rejects[:10]:
        click.echo(f"row {r.row}: {r.reason}", err=True)
    if read.rejects:
        click.echo(f"{len(read.rejects)} of {read.rows} rows rejected (not published)", err=True)
    trades = event_order(read.trades)
    ensure_topics(settings.brokers, settings.topics.all(), partitions=settings.partitions)
    if agents is not None:
        registry = read_agents(agents)
        pub = BatchPublisher(settings.brokers, settings.topics.agents)
        for a in registry.agents:
            pub.send_raw(msgspec.json.encode(a), a.agent_id.encode())
        pub.close()
        click.echo(f"published {len(registry.agents)} agents ({len(registry.rejects)} rejected)")
    pub = BatchPublisher(settings.brokers, settings.topics.trades, max_batch=batch)
    try:
        while True:
            with tqdm(total=len(trades), unit="trade", unit_scale=True, desc=tape.name) as bar:
                for chunk in pace(trades, speed, max_batch=max(batch, 1)):
                    pub.send(chunk, bar.update)
            if not loop:
                break
    except KeyboardInterrupt:
        pass
    finally:
        pub.close()
    click.echo(f"published {pub.sent_trades} trades in {pub.sent_messages} messages")


def planted_episode(scenario: str, *, at_s: float, instrument: str) -> Episode | None:
    """The simple planted events of the synthetic feed."""
    if scenario == "flash_crash":
        return Episode(instrument=instrument, start_s=at_s, depth=-0.30, ramp_s=20, hold_s=40)
    if scenario == "spike":
        return Episode(instrument=instrument, start_s=at_s, depth=2.0, ramp_s=10, hold_s=30)
    return None


def live_feed(settings: Settings, *, rate: float, seed: int, crash_every: float,
              stop: Event | None = None, tick_s: float = 0.25) -> None:
    """Publish a live synthetic market whose event time is the wall clock."""
    ensure_topics(settings.brokers, settings.topics.all(), partitions=settings.partitions)
    spec = FeedSpec(seed=seed, rate=rate)
    start = time.time()
    feed = Feed(spec, start=start)
    pub = BatchPublisher(settings.brokers, settings.topics.trades)
    n_events = 0
    log.info("live feed: %d instruments at %.0f trades/s each", len(spec.instruments), rate)
    try:
        while stop is None or not stop.is_set():
            # keep one planted event ahead (after a warm-up of one crash period)
            if crash_every > 0 and feed.elapsed >= (n_events + 1) * crash_every - 60:
                inst = spec.instruments[n_events % len(spec.instruments)].name
                scenario = "flash_crash" if n_events % 2 == 0 else "spike"
                ep = planted_episode(scenario, at_s=(n_events + 1) * crash_every, instrument=inst)
                if ep is not None:
                    feed.episodes.append(ep)
                    log.info("planting %s on %s at +%.0f s", scenario, inst, ep.start_s)
                n_events += 1
            feed.episodes = [e for e in feed.episodes
                             if e.start_s + 2 * e.ramp_s + e.hold_s > feed.elapsed]
            pub.send(feed.next(tick_s))
            pub.flush()
            delay = start + feed.elapsed - time.time()
            if delay > 0:
                time.sleep(delay)
    except KeyboardInterrupt:
        pass
    finally:
        pub.close()
