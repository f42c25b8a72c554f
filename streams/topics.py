"""Topic names (with an optional prefix) and topic creation."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

__all__ = ["TopicError", "Topics", "ensure_topics"]

log = logging.getLogger(__name__)

#: Kafka's rule for topic names (``org.apache.kafka.common.internals.Topic``).
_LEGAL_TOPIC = re.compile(r"[a-zA-Z0-9._-]{1,249}")


@dataclass(frozen=True)
class Topics:
    """The pipeline's topics.

    >>> Topics(prefix="venue1.").all()
    ('venue1.trades', 'venue1.agents', 'venue1.alerts', 'venue1.halts', 'venue1.trades.dlq',
     'venue1.bars', 'venue1.flows', 'venue1.structure', 'venue1.checkpoints', 'venue1.cases',
     'venue1.config', 'venue1.halt_acks')
    """

    prefix: str = ""

    @property
    def trades(self) -> str:
        return f"{self.prefix}trades"

    @property
    def agents(self) -> str:
        return f"{self.prefix}agents"

    @property
    def alerts(self) -> str:
        return f"{self.prefix}alerts"

    @property
    def halts(self) -> str:
        return f"{self.prefix}halts"

    @property
    def dlq(self) -> str:
        return f"{self.prefix}trades.dlq"

    @property
    def bars(self) -> str:
        """One-second OHLCV bars per instrument, written by the worker for the store."""
        return f"{self.prefix}bars"

    @property
    def flows(self) -> str:
        """Internal: stage-1 window summaries and watermarks for stage 2 (key = venue)."""
        return f"{self.prefix}flows"

    @property
    def structure(self) -> str:
        """Stage-2 market-structure metrics per instrument and window (for the store)."""
        return f"{self.prefix}structure"

    @property
    def checkpoints(self) -> str:
        """Internal: engine checkpoints with the input offsets they reflect."""
        return f"{self.prefix}checkpoints"

    @property
    def cases(self) -> str:
        """Regulator case actions (``case/1``: open, assign, disposition, note, link, manual
        halt requests), written by the dashboard and persisted by the store writer."""
        return f"{self.prefix}cases"

    @property
    def config(self) -> str:
        """Runtime-tunable thresholds (``config/1``, key = scope; compacted in production):
        see :mod:`streams.runtime_config`."""
        return f"{self.prefix}config"

    @property
    def halt_acks(self) -> str:
        """Exchanges' acknowledgements of the halts they applied (``halt_ack/1``, key =
        exchange/venue/instrument/seq): see :mod:`exchange.acks`."""
        return f"{self.prefix}halt_acks"

    def all(self) -> tuple[str, ...]:
        return (self.trades, self.agents, self.alerts, self.halts, self.dlq, self.bars,
                self.flows, self.structure, self.checkpoints, self.cases, self.config,
                self.halt_acks)


class TopicError(RuntimeError):
    """Topics could not be created or did not become usable in time."""


def _validate_topic_name(name: str) -> None:
    if not isinstance(name, str) or not _LEGAL_TOPIC.fullmatch(name) or name in {".", ".."}:
        raise ValueError(
            f"illegal Kafka topic name {name!r}: use 1-249 of the characters a-z A-Z 0-9 . _ -"
        )


def _admin_client(bootstrap: str, timeout: float) -> Any:
    """A kafka-python admin client; config keys the installed version lacks are dropped."""
    from kafka.admin import KafkaAdminClient

    timeout_ms = max(1000, int(timeout * 1000))
    wanted = {
        "bootstrap_servers": bootstrap,
        "client_id": "surveil-topics",
        "request_timeout_ms": timeout_ms,
        "bootstrap_timeout_ms": timeout_ms,  # kafka-python >= 3
        "api_version_auto_timeout_ms": timeout_ms,  # kafka-python 2.x
    }
    known = KafkaAdminClient.DEFAULT_CONFIG
    return KafkaAdminClient(**{key: value for key, value in wanted.items() if key in known})


def _not_ready_reason(info: dict[str, Any] | None) -> str | None:
    """Why a ``describe_topics`` row does not describe a usable topic (``None`` = usable).

    Key names differ between kafka-python 3.x (``leader_id``) and 2.x (``leader``).
    """
    if info is None:
        return "missing from metadata"
    if info.get("error_code", 0):
        return f"error code {info['error_code']}"
    partitions = info.get("partitions") or []
    if not partitions:
        return "no partitions"
    for part in partitions:
        leader = part.get("leader_id", part.get("leader", -1))
        if part.get("error_code", 0) or leader is None or leader < 0:
            index = part.get("partition_index", part.get("partition"))
            return f"partition {index} has no leader"
    return None


def ensure_topics(
    bootstrap: str,
    names: Iterable[str],
    *,
    partitions: int = 1,
    timeout: float = 30,
    replication_factor: int = 1,
) -> list[str]:
    """Create the topics among ``names`` that do not exist yet, and wait until all are usable.

    Idempotent and safe to race: a topic created concurrently by another process (the broker
    answers ``TOPIC_ALREADY_EXISTS``) counts as existing. Existing topics are left as they are
    (a warning is logged when their partition count differs from ``partitions``). Uses
    kafka-python's admin client, whose metadata requests never auto-create topics; works
    against Kafka (>= 1.0) and the embedded Tansu broker.

    Parameters
    ----------
    bootstrap
        Comma-separated ``host:port`` list.
    names
        Topic names (duplicates are ignored).
    partitions
        Partitions of each created topic.
    timeout
        Seconds for the whole operation (connect, create, wait for leaders).
    replication_factor
        Replicas of each created topic (1 for a single broker; 3 on a production cluster).

    Returns
    -------
    list[str]
        The topics this call created, in the order given.

    Raises
    ------
    TopicError
        The cluster is unreachable, refused a creation, or a topic had no leader in time.
    ValueError
        A name is not a legal Kafka topic name, or ``partitions`` < 1.

    Examples
    --------
    >>> ensure_topics("127.0.0.1:9092", [])  # nothing to do: no connection is made
    []
    """
    wanted = list(dict.fromkeys(names))
    for name in wanted:
        _validate_topic_name(name)
    if partitions < 1:
        raise ValueError(f"partitions must be >= 1, got {partitions}")
    if replication_factor < 1:
        raise ValueError(f"replication_factor must be >= 1, got {replication_factor}")
    if not wanted:
        return []

    from kafka.admin import NewTopic
    from kafka.errors import KafkaError, TopicAlreadyExistsError

    deadline = time.monotonic() + timeout
    try:
        admin = _admin_client(bootstrap, timeout)
    except KafkaError as exc:
        raise TopicError(f"cannot reach a Kafka broker at {bootstrap}: {exc}") from exc
    created: list[str] = []
    try:
        existing = set(admin.list_topics())
        for name in wanted:
            if name in existing:
                continue
            remaining_ms = max(1000, int((deadline - time.monotonic()) * 1000))
            try:
                # One request per topic: simple per-topic outcome on every kafka-python version.
                admin.create_topics(
                    [NewTopic(name, partitions, replication_factor)], timeout_ms=remaining_ms
                )
            except TopicAlreadyExistsError:
                log.debug("topic %s was created concurrently", name)
                continue
            created.append(name)
        _wait_usable(admin, wanted, partitions, set(created), deadline)
    except KafkaError as exc:
        raise TopicError(f"cannot create topics {wanted} at {bootstrap}: {exc}") from exc
    finally:
        admin.close()
    if created:
        log.info("created topics %s (%d partitions) at %s", created, partitions, bootstrap)
    return created


def _wait_usable(
    admin: Any, names: list[str], partitions: int, created: set[str], deadline: float
) -> None:
    """Poll metadata until every topic in ``names`` has a leader for each partition.

    CreateTopics only says the controller accepted the request; on a real (KRaft) cluster the
    metadata reaches the brokers a little later. Tansu answers immediately.
    """
    while True:
        rows = {row.get("name", row.get("topic")): row for row in admin.describe_topics(names)}
        pending = {name: why for name in names if (why := _not_ready_reason(rows.get(name)))}
        if not pending:
            break
        if time.monotonic() >= deadline:
            raise TopicError(f"topics not usable in time: {pending}")
        time.sleep(0.1)
    for name in names:
        count = len(rows[name]["partitions"])
        if name not in created and count != partitions:
            log.warning(
                "topic %s already exists with %d partitions (wanted %d); leaving it as is",
                name,
                count,
                partitions,
            )
