"""Stage-1 heartbeats on the ``halts`` topic, so an exchange can tell a dead worker from a calm one.

Every ``heartbeat_interval_s`` (the worker's 1-s tick) the worker publishes, with key
``~heartbeat`` (no instrument is called that), a signed record::

    {"schema": "heartbeat/1", "worker": "host-pid", "seq": <wall-clock µs, increasing>,
     "emitted_at": "…Z", "watermarks": {"<venue>": "…Z"}, "partitions": [0, 1],
     "kid": "detector-…", "sig": "…"}

``watermarks`` is, per venue, the slowest event-time watermark of the worker's partitions (the
event time up to which every breaker timer has fired, so a halt whose ``resume_at`` is behind it
should have been resumed). Subscribers (:class:`exchange.haltbook.HaltBook`) go ``QUOTE_ONLY``
when no fresh heartbeat has come for ``heartbeat_timeout_s``, and let halts expire at
``resume_at`` by these watermarks. The store writer keeps them as a kind of their own, one row
per worker and second (the desk shows their age).

Heartbeats go with signatures (``settings.heartbeats == "auto"``): a worker that has a detector
key signs its halts and beats; an exchange that has the public keys verifies and watches them.
``on``/``off`` force them either way.

>>> from streams.settings import Settings
>>> beats = Heartbeats(Settings(keys_dir="/nonexistent"), worker_id="w1", clock=lambda: 10.0)
>>> topic, key, value = beats.record({})
>>> topic, key, msgspec.json.decode(value)["seq"]
('halts', b'~heartbeat', 10000000)
"""

from __future__ import annotations

import logging
import math
import os
import socket
import time
from collections.abc import Callable, Mapping
from typing import Any, Final

import msgspec

from streams.contracts import iso
from streams.outputs import DeliveryError, Record
from streams.settings import Settings
from streams.signing import signer_for

__all__ = ["HEARTBEAT_KEY", "HEARTBEAT_SCHEMA", "Heartbeats", "send_heartbeat"]

log = logging.getLogger(__name__)

HEARTBEAT_SCHEMA: Final = "heartbeat/1"
HEARTBEAT_KEY: Final = b"~heartbeat"


class Heartbeats:
    """Builds a worker's heartbeat records (strictly increasing ``seq``, signed when a
    detector key exists)."""

    def __init__(self, settings: Settings, *, worker_id: str | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.worker_id = worker_id or f"{socket.gethostname()}-{os.getpid()}"
        self.clock = clock
        self.seq = 0
        self.sent = 0
        self.failed = 0
        self.next_at = 0.0

    def due(self) -> bool:
        return time.monotonic() >= self.next_at

    def enabled(self) -> bool:
        """Per ``settings.heartbeats``: ``on``, ``off`` or ``auto`` (= halts are signed)."""
        mode = self.settings.heartbeats
        return mode == "on" or (mode == "auto" and signer_for(self.settings) is not None)

    def record(self, partitions: Mapping[int, Any]) -> Record:
        """The heartbeat of a worker holding ``partitions`` (engine partition states)."""
        now = self.clock()
        self.seq = max(self.seq + 1, round(now * 1e6))
        marks: dict[str, float] = {}
        for state in partitions.values():
            for venue, vc in getattr(state, "clocks", {}).items():
                t = float(vc.timer)
                if math.isfinite(t):
                    marks[venue] = min(marks.get(venue, t), t)
        body = {"schema": HEARTBEAT_SCHEMA, "worker": self.worker_id, "seq": self.seq,
                "emitted_at": iso(now),
                "watermarks": {v: iso(max(0.0, t)) for v, t in sorted(marks.items())},
                "partitions": sorted(partitions)}
        signer = signer_for(self.settings)
        value = msgspec.json.encode(signer.sign(body) if signer is not None else body)
        return (self.settings.topics.halts, HEARTBEAT_KEY, value)


async def send_heartbeat(worker: Any) -> None:
    """Publish one heartbeat for a :class:`streams.worker.Worker` if one is due (never raises
    a delivery error: a missed heartbeat is what subscribers watch for)."""
    beats: Heartbeats | None = getattr(worker, "heartbeats", None)
    if beats is None:
        beats = worker.heartbeats = Heartbeats(worker.settings)
    if not beats.due() or worker.sink is None or not beats.enabled():
        return
    beats.next_at = time.monotonic() + max(0.05, worker.settings.heartbeat_interval_s) - 0.05
    try:
        await worker.sink.deliver([beats.record(worker.engine.partitions)])
    except DeliveryError as exc:
        beats.failed += 1
        log.warning("heartbeat not delivered: %s", exc)
        return
    beats.sent += 1
