"""A minimal Kafka wire-protocol probe: is a broker answering at this bootstrap address?

It speaks the Kafka protocol directly (one Metadata v4 request, encoded by hand), so it needs
no client library and creates no topics. :func:`wait_for_broker` works against any
Kafka-protocol cluster with a PLAINTEXT listener (Kafka 1.0 to 4.x, Tansu, Redpanda);
:class:`streams.broker.EmbeddedBroker` uses the same probe to tell its own broker from another
process's. Import the public names from :mod:`streams.broker`.

>>> _parse_bootstrap("PLAINTEXT://h1:9093, [::1]:9094,h2")
[('h1', 9093), ('::1', 9094), ('h2', 9092)]
"""

from __future__ import annotations

import random
import socket
import struct
import time

__all__ = ["BrokerError", "wait_for_broker"]

#: Metadata v4 (Kafka 1.0+) is the oldest version Kafka 4.x still accepts (KIP-896) and is
#: not a "flexible" version, so it can be encoded by hand.
_METADATA_API_KEY = 3
_METADATA_VERSION = 4
_MAX_RESPONSE_BYTES = 64 * 1024 * 1024


class BrokerError(RuntimeError):
    """The broker could not be started, reached or stopped."""


# Its public home (and the name tracebacks show) stays ``streams.broker.BrokerError``.
BrokerError.__module__ = "streams.broker"


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
