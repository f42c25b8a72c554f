"""The worker process: runs stage 1 (:mod:`streams.worker`) and stage 2 (:mod:`streams.venue`)
until SIGINT/SIGTERM.

The consuming is :class:`streams.worker.Worker`, an aiokafka consumer-group member (the client
Faust wraps). It used to be a Faust agent; Faust was dropped from the worker because the promises
of this pipeline need what its agent model does not give: ``take_events`` acks a batch in a
``finally`` even when the agent raises, its table recovery trusts ``ListOffsets(LATEST)`` (which the
embedded broker answers wrongly), and a Faust app joins a consumer group of its own whose
rebalance after a ``kill -9`` delayed a restarted worker by ~110 s. The worker confirms results
before offsets move, and checkpoints its state *with* the offsets it reflects (see
:mod:`streams.worker`).

Results go to ``alerts`` (key = alert_id), ``halts`` (key = instrument), ``bars`` (JSON arrays),
``trades.dlq`` (the reason, the original bytes and topic/partition/offset) and, for stage 2,
``flows`` (window summaries and watermarks, key = venue).
"""

from __future__ import annotations

import asyncio
import logging
import signal

from streams.app_messages import RawMessage, decode_messages
from streams.outputs import MemorySink, Sink
from streams.pipeline import Surveillance
from streams.settings import Settings
from streams.worker import Worker, WorkerCounters

__all__ = ["MemorySink", "RawMessage", "Sink", "WorkerCounters", "decode_messages", "run_worker"]

log = logging.getLogger("surveil.worker")


def run_worker(settings: Settings, *, engine: Surveillance | None = None,
               sink: Sink | None = None, stages: str = "both") -> int:
    """Run the worker until SIGINT or SIGTERM (then checkpoint and stop); return an exit code.

    ``stages``: ``"1"`` (per partition of ``trades``), ``"2"`` (venue-wide) or ``"both"``. The
    stages share nothing but Kafka; running them as two processes puts them on two cores.
    """
    (settings.data_dir).mkdir(parents=True, exist_ok=True)

    async def main() -> int:
        from streams.venue_worker import VenueWorker

        worker = Worker(settings, engine=engine, sink=sink)
        venue = VenueWorker(settings)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        tasks = []
        if stages in ("1", "both"):
            tasks.append(asyncio.create_task(worker.run(stop), name="stage-1"))
        if stages in ("2", "both"):
            tasks.append(asyncio.create_task(venue.run(stop), name="stage-2"))
        await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        stop.set()
        code = 0
        for task in tasks:
            try:
                await task
            except Exception:
                log.exception("%s failed", task.get_name())
                code = 1
        return code

    return asyncio.run(main())
