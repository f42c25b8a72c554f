"""``surveil broker``: run an embedded broker in the foreground until SIGINT or SIGTERM.

Import :func:`serve` from :mod:`streams.broker`.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from streams.kafka_probe import BrokerError
from streams.topics import TopicError, ensure_topics

__all__ = ["serve"]

# Same logger as before the split out of streams.broker, so logging configuration still applies.
log = logging.getLogger("streams.broker")

_Handler = Callable[[int, FrameType | None], Any] | int | None


def serve(
    *,
    port: int,
    topics: Sequence[str],
    partitions: int = 1,
    ready: Callable[[str], None] | None = None,
    host: str = "127.0.0.1",
    log_path: Path | None = None,
    stop: threading.Event | None = None,
) -> int:
    """Run an embedded broker until SIGINT or SIGTERM (the body of ``surveil broker``).

    Starts the broker, creates ``topics``, calls ``ready(bootstrap)``, then blocks. On SIGINT
    (Ctrl-C) or SIGTERM it stops the broker and returns. Signal handlers are installed only when
    called from the main thread and are restored on return.

    Parameters
    ----------
    port
        TCP port (``0`` = any free port; ``ready`` receives the address).
    topics
        Topic names to create (see :func:`streams.topics.ensure_topics`).
    partitions
        Partitions per created topic.
    ready
        Called once with the bootstrap address when the broker and topics are ready.
    host
        IPv4 address to listen on.
    log_path
        Broker log file (``None`` discards the broker's output).
    stop
        Optional event that stops the broker when set (for callers in other threads).

    Returns
    -------
    int
        ``0`` after a requested stop, ``1`` when the broker could not start, could not create
        the topics or died (the reason is printed on stderr).
    """
    # Imported here: streams.broker re-exports this function, so a module-level import would
    # be circular.
    from streams.broker import EmbeddedBroker

    stop_event = stop if stop is not None else threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("received %s; stopping the embedded broker", signal.Signals(signum).name)
        stop_event.set()

    previous: dict[signal.Signals, _Handler] = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, _on_signal)
    try:
        broker = EmbeddedBroker(host=host, port=port, log_path=log_path)
        try:
            broker.start()
            if not stop_event.is_set():
                ensure_topics(broker.bootstrap, topics, partitions=partitions)
            if ready is not None and not stop_event.is_set():
                ready(broker.bootstrap)
            while not stop_event.wait(0.2):
                if not broker.running:
                    print(
                        f"surveil broker: the embedded broker at {broker.bootstrap} exited "
                        f"unexpectedly{broker._log_hint()}",
                        file=sys.stderr,
                    )
                    return 1
        finally:
            broker.stop()
    except (BrokerError, TopicError) as exc:
        print(f"surveil broker: {exc}", file=sys.stderr)
        return 1
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
