"""Bodies of ``surveil keys``, ``surveil halt`` and ``surveil resume``: the regulator's hand on
the halt channel.

A manual action is two records, both signed with the **regulator** key (:mod:`streams.signing`):

1. the audit record on ``cases`` (``case/1``, :mod:`streams.cases`): action ``halt_request`` or
   ``resume_request``, ``actor`` (who), ``ts`` (when), ``note`` (why), ``reason`` ``MANUAL``,
   venue, instrument and state, plus ``halt_seq`` linking it to the halt; the store writer
   persists it (store kind ``cases``), so the trail survives the topic's retention;
2. the halt itself on ``halts`` (``halt/1``, reason ``MANUAL``, ``seq`` = wall-clock µs), which
   every exchange applies like any halt, on a layer of its own (a detector's resumption does not
   lift it; a manual resumption lifts the detectors' halt of the key too; it never expires).

The audit record goes first and both must be acknowledged, so no halt is in force without its
record; a failure is reported and the command exits non-zero.
"""

from __future__ import annotations

import time
from typing import Any

import click
import msgspec

from streams.contracts import Halt, iso
from streams.settings import Settings
from streams.signing import (
    DEFAULT_GRACE_S,
    PUBLIC_FILE,
    ROLES,
    KeyRing,
    ensure_keys,
    keys_dir,
    load_signer,
    rotate,
)

__all__ = ["manage_keys", "manual_action"]


def manage_keys(settings: Settings, *, rotate_roles: tuple[str, ...] = (),
                grace_s: float = DEFAULT_GRACE_S) -> list[str]:
    """Create missing keys, rotate those of ``rotate_roles``; lines describing the key ring."""
    folder = keys_dir(settings)
    for role in rotate_roles:
        rotate(folder, role, grace_s=grace_s)
    ensure_keys(folder)
    ring = KeyRing.load(folder / PUBLIC_FILE)
    current = {role: signer.kid for role in ROLES
               if (signer := load_signer(folder, role)) is not None}
    lines = [f"keys: {folder} (public keys: {folder / PUBLIC_FILE})"]
    for kid, key in sorted(ring.keys.items(), key=lambda kv: (kv[1].role, kv[0])):
        until = "current" if current.get(key.role) == kid else (
            f"valid until {iso(key.not_after)}" if key.not_after is not None else "retired")
        lines.append(f"  {key.role:<9} {kid}  {until}")
    return lines


def manual_action(settings: Settings, instrument: str, *, state: str, note: str, venue: str,
                  user: str, case_id: str | None = None, timeout_s: float = 15.0
                  ) -> dict[str, Any]:
    """Publish a signed manual halt (``state`` != TRADING) or resumption and its audit record;
    returns the halt as sent. Raises ``click.ClickException`` when it was not acknowledged."""
    from kafka import KafkaProducer
    from kafka.errors import KafkaError

    from streams.cases import new_action
    from streams.topics import ensure_topics

    signer = load_signer(keys_dir(settings), "regulator")
    if signer is None:
        raise click.ClickException(f"no regulator key in {keys_dir(settings)}; run `surveil "
                                   "keys` first (and give exchanges its public keys file)")
    if not note.strip():
        raise click.ClickException("--note is required: say why")
    now = time.time()
    halt = Halt(seq=round(now * 1e6), ts=iso(now), emitted_at=iso(now), venue=venue,
                instrument=instrument, state=state, reason="MANUAL", resume_at=None,
                reference_price=None, band_low=None, band_high=None, alert_ids=[])
    action = new_action("resume_request" if state == "TRADING" else "halt_request",
                        case_id=case_id or f"manual:{venue}:{instrument}", actor=user,
                        role="regulator", reason="MANUAL", note=note, venue=venue,
                        instrument=instrument, state=state)
    audit = signer.sign({**msgspec.to_builtins(action), "halt_seq": halt.seq})
    signed = signer.sign(msgspec.to_builtins(halt))
    topics = settings.topics
    ensure_topics(settings.brokers, [topics.halts, topics.cases], partitions=settings.partitions)
    producer = KafkaProducer(bootstrap_servers=settings.brokers.split(","), acks="all",
                             client_id="surveil-regulator",
                             request_timeout_ms=int(timeout_s * 1000),
                             max_block_ms=int(timeout_s * 1000))
    try:
        producer.send(topics.cases, key=action.case_id.encode(),
                      value=msgspec.json.encode(audit)).get(timeout=timeout_s)
        producer.send(topics.halts, key=instrument.encode(),
                      value=msgspec.json.encode(signed)).get(timeout=timeout_s)
    except (KafkaError, TimeoutError) as exc:
        raise click.ClickException(f"the action was NOT recorded/published: {exc!r}") from None
    finally:
        producer.close(timeout=timeout_s)
    return signed
