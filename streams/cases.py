"""Regulator case actions (topic ``cases``, schema ``case/1``): the desk's event-sourced record.

Every action a regulator takes at the desk — open an alert as a case, assign it, move its
disposition, add a note, link related alerts, request a manual halt or resumption — is one
immutable :class:`CaseAction` published to the ``cases`` topic. The store writer persists them
(kind ``cases``, key ``action_id``); nothing ever updates or deletes one, so the store holds an
append-only audit trail (who, when, what, why), and the current state of a case is a fold of
its actions (:func:`dashboard.cases.fold`). The dashboard never writes store files itself.

>>> a = new_action("open", case_id="a-1", actor="alice", role="analyst", alert_ids=["a-1"],
...                reason="score 91 on a halted instrument")
>>> a.schema, a.action, a.disposition, len(a.action_id)
('case/1', 'open', 'new', 32)
>>> allowed("new", "confirmed"), allowed("investigating", "confirmed")
(False, True)
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Final, Literal

import msgspec

__all__ = ["ACTIONS", "DISPOSITIONS", "TRANSITIONS", "CaseAction", "allowed", "new_action",
           "publish"]

SCHEMA: Final = "case/1"
ActionKind = Literal["open", "assign", "disposition", "note", "link", "halt_request",
                     "resume_request"]
ACTIONS: Final[tuple[str, ...]] = ("open", "assign", "disposition", "note", "link",
                                   "halt_request", "resume_request")
DISPOSITIONS: Final[tuple[str, ...]] = ("new", "investigating", "escalated", "dismissed",
                                        "confirmed")
#: Dispositions reachable from each one (a closed case may be reopened for investigation).
TRANSITIONS: Final[Mapping[str, tuple[str, ...]]] = {
    "new": ("investigating", "dismissed"),
    "investigating": ("escalated", "dismissed", "confirmed"),
    "escalated": ("investigating", "dismissed", "confirmed"),
    "dismissed": ("investigating",),
    "confirmed": ("investigating",),
}


class CaseAction(msgspec.Struct, kw_only=True):
    """One regulator action. ``ts`` is the wall-clock time it was taken (ISO-8601, UTC)."""

    action_id: str
    ts: str
    case_id: str
    action: ActionKind
    actor: str
    role: str
    reason: str = ""
    alert_ids: list[str] = msgspec.field(default_factory=list)
    assignee: str | None = None
    disposition: str | None = None
    note: str | None = None
    venue: str | None = None
    instrument: str | None = None
    state: str | None = None
    schema: str = SCHEMA


def allowed(current: str, target: str) -> bool:
    """Whether a case may move from disposition ``current`` to ``target``."""
    return target in TRANSITIONS.get(current, ())


def new_action(action: str, *, case_id: str, actor: str, role: str, **fields: Any) -> CaseAction:
    """A new action stamped with a fresh id and the wall clock; ``open`` starts at ``new``."""
    if action not in ACTIONS:
        raise ValueError(f"unknown case action {action!r}; expected one of {ACTIONS}")
    if action == "open":
        fields.setdefault("disposition", "new")
    disposition = fields.get("disposition")
    if disposition is not None and disposition not in DISPOSITIONS:
        raise ValueError(f"unknown disposition {disposition!r}")
    ts = datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
    return msgspec.convert({"action_id": uuid.uuid4().hex, "ts": ts, "case_id": case_id,
                            "action": action, "actor": actor, "role": role, **fields},
                           CaseAction)


def publish(brokers: str, topic: str, actions: Iterable[CaseAction], *,
            timeout_s: float = 10.0) -> None:
    """Send the actions to ``topic`` (key = case id) and wait until the broker has them all.

    Raises ``kafka.errors.KafkaError`` (or ``TimeoutError``) when they were not acknowledged:
    the caller must then tell the regulator that the action was *not* recorded.
    """
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=brokers.split(","), acks="all",
                             client_id="surveil-desk", request_timeout_ms=int(timeout_s * 1000),
                             max_block_ms=int(timeout_s * 1000))
    try:
        futures = [producer.send(topic, key=a.case_id.encode(), value=msgspec.json.encode(a))
                   for a in actions]
        for future in futures:
            future.get(timeout=timeout_s)
    finally:
        producer.close(timeout=timeout_s)
