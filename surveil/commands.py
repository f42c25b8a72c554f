"""Bodies of the smaller ``surveil`` commands: replay, simulate, live feed."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from threading import Event
from typing import TYPE_CHECKING, Any

import click
import msgspec
from tqdm import tqdm

from replay.publish import BatchPublisher, pace_stream
from replay.synthetic import Episode, Feed, FeedSpec
from streams.settings import Settings
from streams.topics import ensure_topics

if TYPE_CHECKING:
    from replay.reorder import OrderedTape
    from streams.contracts import Trade

__all__ = ["live_feed", "planted_episode", "replay_tape"]

log = logging.getLogger("surveil.feed")


def replay_tape(settings: Settings, tape: Path, *, agents: Path | None, speed: float | None,
                loop: bool, batch: int) -> None:
    """Publish a tape, batched, at ``speed``× event time (None = max), streaming.

    Trades go out in the order ``surveil backtest`` judges them (:class:`replay.reorder.
    OrderedTape`: event time through a bounded reorder buffer), read chunk by chunk, so memory
    does not grow with the tape. Bad rows are reported (the first ten by row number) and not
    published.
    """
    from replay.reorder import OrderedTape
    from replay.tape import TapeError, read_agents

    def open_tape() -> OrderedTape:
        try:
            return OrderedTape(tape)
        except TapeError as exc:
            raise click.ClickException(str(exc)) from None

    ordered = open_tape()
    ensure_topics(settings.brokers, settings.topics.all(), partitions=settings.partitions)
    if agents is not None:
        registry = read_agents(agents)
        pub = BatchPublisher(settings.brokers, settings.topics.agents)
        for a in registry.agents:
            pub.send_raw(msgspec.json.encode(a), a.agent_id.encode())
        pub.close()
        click.echo(f"published {len(registry.agents)} agents ({len(registry.rejects)} rejected)")
    pub = BatchPublisher(settings.brokers, settings.topics.trades, max_batch=batch)
    first = True
    try:
        while True:
            with tqdm(total=ordered.total_rows, unit="trade", unit_scale=True,
                      desc=tape.name) as bar:
                trades = _ordered_trades(ordered, bar, report=first)
                for chunk in pace_stream(trades, speed, max_batch=max(batch, 1)):
                    pub.send(chunk, bar.update)
            if first and ordered.rejected:
                click.echo(f"{ordered.rejected} of {ordered.rows} rows rejected (not published)",
                           err=True)
            if first and ordered.late:
                click.echo(f"{ordered.late} rows more than {ordered.buffer.horizon_s:.0f} s out of "
                           "event-time order published late, where they came", err=True)
            first = False
            if not loop:
                break
            ordered = open_tape()
    except KeyboardInterrupt:
        pass
    finally:
        pub.close()
    click.echo(f"published {pub.sent_trades} trades in {pub.sent_messages} messages")


def _ordered_trades(ordered: OrderedTape, bar: tqdm[Any], *, report: bool,
                    shown: int = 10) -> Iterator[Trade]:
    """The tape's trades in order; bad rows are counted on the bar and the first few shown."""
    for chunk in ordered:
        if chunk.rejects:
            bar.update(len(chunk.rejects))  # rows, not trades: the bar's total is the row count
            if report:
                for r in chunk.rejects[:shown]:
                    tqdm.write(f"row {r.row}: {r.reason}", file=sys.stderr)
                shown -= min(shown, len(chunk.rejects))
        yield from chunk.trades


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
