"""``surveil config get|set``: runtime-tunable thresholds on the ``config`` topic.

``set`` merges the new values into the scope's current settings (the topic is compacted by
scope, so every record carries the scope's full settings), validates the result exactly as the
workers will, and publishes it with an effective time (default: 30 s from now, so every worker
has it before it applies). ``get`` prints the settings in force per scope; ``--history`` prints
every change with who, when and why (the audit trail), and ``--export FILE`` writes the timeline
that ``surveil backtest --config FILE`` replays.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import click
import msgspec

from streams.contracts import iso
from streams.settings import Settings

__all__ = ["config_get", "config_set", "read_config_topic"]


def read_config_topic(settings: Settings, timeout_s: float = 3.0) -> list[dict[str, Any]]:
    """Every record of the ``config`` topic, in (partition, offset) order."""
    from kafka import KafkaConsumer, TopicPartition

    topic = settings.topics.config
    consumer = KafkaConsumer(bootstrap_servers=settings.brokers, enable_auto_commit=False,
                             auto_offset_reset="earliest",
                             consumer_timeout_ms=int(timeout_s * 1000))
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        consumer.assign([TopicPartition(topic, p) for p in sorted(parts)])
        consumer.seek_to_beginning()
        out = []
        for r in consumer:
            try:
                doc = msgspec.json.decode(r.value)
            except msgspec.DecodeError:
                continue
            if isinstance(doc, dict):
                out.append(doc)
        return sorted(out, key=lambda d: (str(d.get("effective_ts")), str(d.get("change_id"))))
    finally:
        consumer.close()


def config_get(settings: Settings, scope: str | None, *, history: bool,
               export: Path | None) -> None:
    from detectors.market import MarketConfig
    from streams.runtime_config import ConfigError, validate

    cfg = MarketConfig()
    records = [d for d in read_config_topic(settings) if scope is None or d.get("scope") == scope]
    valid: list[dict[str, Any]] = []
    for d in records:
        try:
            d["effective_ts"] = validate(d, cfg).effective_ts
        except ConfigError as exc:
            if history:
                click.echo(f"rejected {d.get('change_id')}: {exc}")
            continue
        valid.append(d)
    if export is not None:
        export.write_bytes(b"".join(msgspec.json.encode(d) + b"\n" for d in valid))
        click.echo(f"{len(valid)} changes -> {export}")
    if history:
        for d in valid:
            click.echo(f"{iso(d['effective_ts'])}  {d['scope']:<28} {d['settings']}  by "
                       f"{d['user']} ({d.get('issued_at', '?')}): {d['note']}")
        return
    latest: dict[str, dict[str, Any]] = {}
    for d in valid:
        latest[d["scope"]] = d
    for s, d in sorted(latest.items()):
        click.echo(f"{s:<28} {d['settings']}  (from {iso(d['effective_ts'])}, {d['user']}: "
                   f"{d['note']})")
    if not latest:
        click.echo("no runtime settings: every worker uses its defaults")


def config_set(settings: Settings, scope: str, values: tuple[str, ...], *, note: str,
               user: str, at: str | None, lead_s: float) -> dict[str, Any]:
    """Validate and publish; returns the record."""
    from detectors.market import MarketConfig
    from streams.runtime_config import ConfigError, validate

    current: dict[str, float] = {}
    for d in read_config_topic(settings):
        if d.get("scope") == scope and isinstance(d.get("settings"), dict):
            current = dict(d["settings"])
    for item in values:
        key, sep, raw = item.partition("=")
        if not sep:
            raise click.BadParameter(f"{item!r}: use KEY=VALUE")
        if raw.lower() in ("", "default", "none"):
            current.pop(key, None)
            continue
        try:
            current[key] = float(raw)
        except ValueError:
            raise click.BadParameter(f"{item!r}: {raw!r} is not a number") from None
    when: str | float = time.time() + lead_s if at is None else at
    try:
        when = float(when)  # epoch seconds, or ISO-8601
    except ValueError:
        pass
    doc = {"schema": "config/1", "change_id": uuid.uuid4().hex, "scope": scope,
           "settings": current, "effective_ts": when,
           "user": user, "note": note, "issued_at": iso(time.time())}
    try:
        change = validate(doc, MarketConfig())
    except ConfigError as exc:
        raise click.ClickException(f"refused: {exc}") from None
    doc["effective_ts"] = change.effective_ts
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=settings.brokers, acks="all")
    producer.send(settings.topics.config, key=scope.encode(), value=msgspec.json.encode(doc))
    producer.flush()
    producer.close()
    return doc
