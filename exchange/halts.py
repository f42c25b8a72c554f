"""Obeying the ``halts`` topic (DESIGN §3.6): :class:`HaltSubscriber`, a client any exchange embeds.

The rules live in the Kafka-free :class:`~exchange.haltbook.HaltBook` (re-exported here); this
module feeds it from Kafka with kafka-python and watches the feed's health.

Consuming
---------
State must reflect the latest signal of every key, so the subscriber reads the **whole topic from
the beginning** on every start, with manual assignment of all its partitions, no consumer group
and no committed offsets (a group would resume after its last commit and miss the halts in
force). The topic is small, but its retention must outlast the longest halt (an MWC3 halt lasts
the rest of the day); log compaction is only safe with one venue per topic, since the key is the
instrument alone.
After an interruption (a failed probe or fetch) the subscriber re-reads the topic from the
beginning and stays silent until caught up again: the broker may have lost the log (the embedded
broker keeps it in memory), so offsets cannot be trusted; re-read halts are stale and change
nothing. A position beyond a partition's high watermark triggers the same re-read.

Fail-safe when the feed goes silent
-----------------------------------
The detectors publish no heartbeats yet, so an empty feed is normal. *Silence* is therefore
defined as: no message **and** no successful fetch/metadata round trip for more than
``silence_s`` seconds of wall clock. A quiet feed is proved alive with a ListOffsets request to
the partition leaders every ``probe_interval_s`` without messages; a dead broker fails those.
Until the subscriber has read the topic up to its end once, it is silent too (it cannot know
the halts in force).

While silent every instrument of every venue is at least ``QUOTE_ONLY`` (``fail_safe``;
``"HALTED"`` can be chosen): orders are accepted and queued but nothing matches; when the feed is
back, each book reopens by auction unless a halt read meanwhile keeps it closed. Why neither
halt-all nor "keep trading" (DESIGN §4):

- Continuous matching is only safe while each trade can be stopped by the monitor (Vega
  pre-checks every trade), and M2M prices jump 500 % in seconds: no blind matching.
- Losing the monitor is treated the way Vega treats a breach and CME its velocity logic: stop
  continuous trading, keep collecting orders, reopen by a single-price (protective) auction; a
  LULD trading pause also ends in a reopening auction. A halt-all that rejects orders would
  empty the book on every broker hiccup of a 24x7 market and make the reopening disorderly.
- ``silence_s`` defaults to 5 s: a few seconds like CME's velocity pre-open, well under the
  15 s LULD limit state, and long enough to ride out a reconnect.

Heartbeats and signatures
-------------------------
A live broker with dead detectors looks like a quiet market; so the stage-1 workers publish a
signed ``heartbeat/1`` every second on the topic (key ``~heartbeat``, :mod:`streams.heartbeat`)
and, with ``heartbeat_timeout_s``, no fresh heartbeat for that long is a silence too: every
instrument goes ``fail_safe`` and reopens by auction when heartbeats return. With public keys
(:mod:`streams.signing`), unsigned, forged, replayed and implausible messages are rejected and
counted per reason (``counters.rejected``; :mod:`exchange.haltbook` lists the reasons).
:meth:`HaltSubscriber.from_settings` wires both from the settings.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any

from exchange.haltbook import (
    MARKET_WIDE,
    HaltBook,
    HaltCounters,
    HaltSource,
    KeyRing,
    StateChange,
    validate_halt,
)

__all__ = [
    "MARKET_WIDE",
    "HaltBook",
    "HaltCounters",
    "HaltSource",
    "HaltSubscriber",
    "KeyRing",
    "StateChange",
    "validate_halt",
]

log = logging.getLogger(__name__)


class HaltSubscriber:
    """Consumes ``halts`` into a :class:`HaltBook`; single-threaded :meth:`poll` or a thread.

    Parameters
    ----------
    brokers
        Bootstrap servers, ``"host:port[,host:port]"``.
    topic
        The halts topic (``Topics(prefix).halts``).
    silence_s
        Fail-safe threshold (see the module notes); ``None`` disables the fail-safe.
    fail_safe
        State while silent: ``"QUOTE_ONLY"`` (default) or ``"HALTED"``/``"PAUSED"``.
    on_change
        Callback for every :class:`StateChange` (called on the polling thread).
    probe_interval_s
        Seconds without messages before a liveness probe; default ``silence_s / 5``.
    consumer_config
        Extra kafka-python ``KafkaConsumer`` settings (override the defaults).
    clock
        Monotonic wall clock (seconds), injectable.
    **book_options
        Passed to :class:`HaltBook`: ``keys``, ``require_signatures``, ``heartbeat_timeout_s``,
        ``max_seq_lead_s``, ``max_future_s``, ``expiry_grace_s``, ``wall_clock``…
    """

    def __init__(
        self,
        brokers: str,
        topic: str = "halts",
        *,
        silence_s: float | None = 5.0,
        fail_safe: str = "QUOTE_ONLY",
        on_change: Callable[[StateChange], None] | None = None,
        probe_interval_s: float | None = None,
        consumer_config: Mapping[str, Any] | None = None,
        clock: Callable[[], float] = time.monotonic,
        **book_options: Any,
    ) -> None:
        self.brokers, self.topic = brokers, topic
        self.book = HaltBook(silence_s=silence_s, fail_safe=fail_safe, clock=clock,
                             on_change=on_change, **book_options)
        base = silence_s if silence_s is not None else 5.0
        self.probe_interval_s = probe_interval_s if probe_interval_s is not None else base / 5
        self._timeout_ms = max(500, min(5000, int(base * 500)))
        self._consumer_config = dict(consumer_config or {})
        self._clock = clock
        self._consumer: Any = None
        self._partitions: list[Any] = []
        self._retry_at = 0.0
        self._next_probe = 0.0
        self._interrupted = False
        self.ready = False
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    @classmethod
    def from_settings(cls, settings: Any, **options: Any) -> HaltSubscriber:
        """A subscriber for ``settings``: its brokers and halts topic, the public keys file
        (``halt_public_keys``, else ``<keys folder>/public.json`` when it exists), signatures
        required per ``require_signed_halts`` and heartbeats watched for ``heartbeat_timeout_s``
        (per ``heartbeats``: ``auto`` watches them when there are keys). Raises ``ValueError``
        when a named keys file is unreadable or signatures are required without keys."""
        from streams.signing import public_keys

        keys, path = public_keys(settings)
        require = {"auto": None, "yes": True, "no": False}[settings.require_signed_halts]
        beats = settings.heartbeats == "on" or (settings.heartbeats == "auto" and keys)
        timeout = (settings.heartbeat_timeout_s or None) if beats else None
        options = {"keys": keys, "require_signatures": require, "heartbeat_timeout_s": timeout,
                   **options}
        log.info("halt feed %s: %s keys from %s, signatures %s, heartbeat timeout %s s",
                 settings.topics.halts, len(keys) if keys else 0, path if keys else "-",
                 "required" if (require if require is not None else bool(keys)) else "optional",
                 timeout)
        return cls(settings.brokers, settings.topics.halts, **options)

    # ------------------------------------------------------------------ HaltSource
    @property
    def counters(self) -> HaltCounters:
        return self.book.counters

    def state(self, venue: str, instrument: str) -> str:
        """Effective state of the instrument (see :meth:`HaltBook.state`)."""
        return self.book.state(venue, instrument)

    def is_open(self, venue: str, instrument: str) -> bool:
        return self.book.is_open(venue, instrument)

    def reference_price(self, venue: str, instrument: str) -> float | None:
        return self.book.reference_price(venue, instrument)

    # ------------------------------------------------------------------ polling
    def poll(self, timeout: float = 0.1) -> int:
        """Fetch and apply what has arrived (waits up to ``timeout`` s); never raises Kafka errors.

        Returns the number of messages applied. While the broker is unreachable a call may take
        up to the request timeout (``silence_s / 2``, 0.5-5 s). Not to be mixed with
        :meth:`start`.
        """
        if self._thread is not None and threading.current_thread() is not self._thread:
            raise RuntimeError("HaltSubscriber is running in its own thread; do not poll()")
        applied = 0
        try:
            applied = self._poll_once(timeout)
        except Exception:  # a bug or an unexpected client error must not stop the exchange
            self.counters.errors += 1
            log.exception("halt subscriber poll failed")
            time.sleep(min(timeout, 0.5))
        self.book.check()
        return applied

    def _poll_once(self, timeout: float) -> int:
        if not self._connected():
            time.sleep(max(0.0, min(timeout, self._retry_at - self._clock())))
            return 0
        from kafka.errors import KafkaError

        try:
            batches = self._consumer.poll(timeout_ms=int(timeout * 1000))
        except KafkaError as exc:
            log.warning("halt feed fetch failed: %s", exc)
            self._interrupted = True
            batches = {}
        applied = 0
        for records in batches.values():
            for record in records:
                if record.value is not None and self.book.apply(record.value) is not None:
                    applied += 1
                elif record.value is None:
                    self.counters.received += 1
                    self.counters.invalid += 1
        now = self._clock()
        if batches:
            self._next_probe = now + self.probe_interval_s
            if self.ready:
                self.book.mark_alive()
        if now >= self._next_probe or not self.ready:
            self._probe()
        return applied

    def _connected(self) -> bool:
        """Create the consumer and assign the topic's partitions, with retry back-off."""
        if self._consumer is not None and self._partitions:
            return True
        if self._clock() < self._retry_at:
            return False
        from kafka import KafkaConsumer, TopicPartition
        from kafka.errors import KafkaError

        try:
            if self._consumer is None:
                self._consumer = KafkaConsumer(**self._settings(KafkaConsumer.DEFAULT_CONFIG))
            ids = self._consumer.partitions_for_topic(self.topic)
        except KafkaError as exc:
            self.counters.connect_failures += 1
            self._retry_at = self._clock() + 1.0
            log.warning("halt feed: cannot reach %s: %s", self.brokers, exc)
            return False
        if not ids:
            self._retry_at = self._clock() + 1.0
            log.warning("halt feed: topic %s does not exist (yet)", self.topic)
            return False
        self._partitions = [TopicPartition(self.topic, i) for i in sorted(ids)]
        self._consumer.assign(self._partitions)
        self._consumer.seek_to_beginning(*self._partitions)
        log.info("halt feed: reading %s (%d partitions) from the beginning", self.topic, len(ids))
        return True

    def _settings(self, known: Mapping[str, Any]) -> dict[str, Any]:
        wanted: dict[str, Any] = {
            "bootstrap_servers": self.brokers.split(","),
            "client_id": "halt-subscriber",
            "group_id": None,
            "enable_auto_commit": False,
            "auto_offset_reset": "earliest",
            "allow_auto_create_topics": False,  # Tansu would create it with its own partitions
            "fetch_max_wait_ms": 50,  # Tansu answers a fetch only when this wait expires
            "request_timeout_ms": max(self._timeout_ms, 1000),
            "bootstrap_timeout_ms": self._timeout_ms,  # kafka-python >= 3
            "api_version_auto_timeout_ms": self._timeout_ms,  # kafka-python 2.x
            "reconnect_backoff_max_ms": 1000,
        }
        wanted.update(self._consumer_config)
        return {key: value for key, value in wanted.items() if key in known}

    def _probe(self) -> None:
        """ListOffsets to the leaders: proves the feed alive; detects catch-up and a lost log."""
        from kafka.errors import KafkaError

        self.counters.probes += 1
        self._next_probe = self._clock() + self.probe_interval_s
        consumer = self._consumer
        try:
            ends = consumer.end_offsets(self._partitions, timeout_ms=self._timeout_ms)
            positions = {tp: consumer.position(tp, timeout_ms=self._timeout_ms)
                         for tp in self._partitions}
        except KafkaError as exc:
            self.counters.probe_failures += 1
            self._interrupted = True
            log.debug("halt feed probe failed: %s", exc)
            return
        if self._interrupted:
            self._reread("the feed was interrupted")
            return
        caught_up = True
        for tp in self._partitions:
            position, high = positions[tp], consumer.highwater(tp)
            if position is None:
                caught_up = False
            elif high is not None and position > high:
                self._reread(f"{tp.topic}[{tp.partition}] position {position} is beyond the "
                             f"log end {high}")
                return
            elif position < max(ends.get(tp, 0), high or 0):
                caught_up = False
        if caught_up and not self.ready:
            self.ready = True
            log.info("halt feed: caught up with %s", self.topic)
        if self.ready:
            self.book.mark_alive()

    def _reread(self, why: str) -> None:
        """Read the topic again from the beginning and be silent until caught up.

        After an interruption the broker may have lost or truncated the log (the embedded broker
        keeps it in memory; real Kafka after an unclean leader election), so offsets cannot be
        trusted: halts already applied come back as stale and change nothing.
        """
        self._interrupted = False
        self.counters.resets += 1
        self.ready = False
        self._consumer.seek_to_beginning(*self._partitions)
        log.warning("halt feed: %s; re-reading %s from the beginning", why, self.topic)

    # ------------------------------------------------------------------ thread
    def start(self, poll_timeout: float = 0.1) -> HaltSubscriber:
        """Poll in a daemon thread until :meth:`stop`."""
        if self._thread is not None:
            raise RuntimeError("HaltSubscriber already started")
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, args=(poll_timeout,),
                                        name="halt-subscriber", daemon=True)
        self._thread.start()
        return self

    def _run(self, poll_timeout: float) -> None:
        while not self._stop.is_set():
            self.poll(poll_timeout)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the thread (if any) and close the consumer. The book keeps its state."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                log.warning("halt subscriber thread did not stop within %s s", timeout)
                return
        consumer, self._consumer, self._partitions = self._consumer, None, []
        if consumer is not None:
            try:
                consumer.close()
            except Exception:
                log.exception("closing the halt consumer failed")

    close = stop

    def __enter__(self) -> HaltSubscriber:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
