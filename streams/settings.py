"""Settings: one small immutable object, read from the environment in one place."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from streams.topics import Topics

if TYPE_CHECKING:
    from streams.partition import EngineConfig

__all__ = ["Settings"]

ENV_PREFIX = "SURVEIL_"
_TRUE, _FALSE = frozenset({"1", "true", "yes", "on"}), frozenset({"0", "false", "no", "off", ""})


def _bool(name: str, raw: str) -> bool:
    """``1/true/yes/on`` or ``0/false/no/off`` (any case); anything else is refused.

    >>> _bool("store_trades", "Off")
    False
    """
    value = raw.strip().lower()
    if value in _TRUE | _FALSE:
        return value in _TRUE
    raise ValueError(f"{ENV_PREFIX}{name.upper()}={raw!r}: expected 1/0, true/false, yes/no, "
                     "on/off")


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Runtime settings shared by every command.

    Every field can be set from the environment as ``SURVEIL_<FIELD>`` (upper case), e.g.
    ``SURVEIL_BROKERS=kafka:9092`` or ``SURVEIL_TOPIC_PREFIX=venue1.``.

    >>> Settings(topic_prefix="t.").topics.halts
    't.halts'
    """

    brokers: str = "127.0.0.1:9092"
    topic_prefix: str = ""
    data_dir: Path = Path("var")
    app_id: str = "m2m-surveillance"
    #: Partitions per topic when this system creates topics.
    partitions: int = 1
    #: Kafka messages handed to the detectors at once (each may hold many trades) and how long
    #: to wait to fill such a batch.
    batch_messages: int = 64
    batch_within_s: float = 0.05
    #: Consumer-group session timeout (seconds). The embedded broker's first join takes about
    #: half of it, so tests use ~6.
    session_timeout_s: float = 30.0
    #: Largest record the worker sends (outputs are split or trimmed to fit; Kafka's default
    #: ``max.request.size`` is 1 MB).
    max_message_bytes: int = 1_000_000
    #: Wall-clock seconds between checkpoints of each partition's engine state.
    checkpoint_interval_s: float = 10.0
    #: HMAC key for checkpoints (default: ``<data_dir>/checkpoint.key``, made on first use).
    checkpoint_key: str = ""
    #: Event-time rules (see :mod:`streams.partition`): how far ahead of the venue clock (and
    #: of the wall clock, 0 = not checked) a trade may be, disorder tolerated per partition,
    #: lateness allowed behind an instrument's own clock, wall seconds before a silent
    #: partition counts as idle.
    max_future_s: float = 300.0
    #: The largest quiet spell (time jump) the next trades of a venue can confirm.
    max_jump_s: float = 7 * 86_400.0
    wall_future_s: float = 300.0
    out_of_order_s: float = 2.0
    allowed_lateness_s: float = 60.0
    idle_timeout_s: float = 10.0
    #: Instruments per input partition before newcomers are turned away (memory budget).
    max_instruments: int = 20_000
    #: Signed halts (:mod:`streams.signing`): the key folder (default ``<data_dir>/keys``), the
    #: public keys file an exchange trusts (default ``<keys folder>/public.json`` when it
    #: exists) and whether subscribers require signatures (``auto``: when keys are configured;
    #: ``yes``; ``no``).
    keys_dir: str = ""
    halt_public_keys: str = ""
    require_signed_halts: str = "auto"
    #: Stage-1 heartbeats on the halts topic (every ``heartbeat_interval_s``): ``auto`` = when
    #: halts are signed (a detector key exists; an exchange with public keys then watches
    #: them), ``on``, ``off``. An exchange goes QUOTE_ONLY after ``heartbeat_timeout_s``
    #: without one (0 = do not watch heartbeats).
    heartbeats: str = "auto"
    heartbeat_interval_s: float = 1.0
    heartbeat_timeout_s: float = 5.0
    #: The store writer also keeps every trade (topic ``trades``) for the desk's case files and
    #: agent pages; off (``SURVEIL_STORE_TRADES=0``) it keeps bars only.
    store_trades: bool = True
    web_port: int = 6066
    dashboard_port: int = 8501
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def topics(self) -> Topics:
        return Topics(prefix=self.topic_prefix)

    @property
    def group_id(self) -> str:
        """The consumer-group name: namespaced by the topic prefix, like the topics, so two
        deployments (or two tests) sharing a cluster never share a group and its rebalances.

        >>> Settings(topic_prefix="venue1.").group_id
        'venue1.m2m-surveillance'
        """
        return self.topic_prefix + self.app_id

    @property
    def store_dir(self) -> Path:
        return self.data_dir / "store"

    def engine_config(self) -> EngineConfig:
        """The engine's event-time and admission settings."""
        from streams.partition import EngineConfig

        return EngineConfig(max_future_s=self.max_future_s, max_jump_s=self.max_jump_s,
                            wall_future_s=self.wall_future_s or None,
                            out_of_order_s=self.out_of_order_s,
                            allowed_lateness_s=self.allowed_lateness_s,
                            idle_timeout_s=self.idle_timeout_s,
                            max_instruments=self.max_instruments)

    def with_(self, **changes: Any) -> Settings:
        """Copy with some fields changed (``None`` values are ignored)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Settings from ``SURVEIL_*`` variables, then keyword overrides (``None`` = unset)."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for name, f in cls.__dataclass_fields__.items():
            raw = env.get(ENV_PREFIX + name.upper())
            if raw is None or name == "extra":
                continue
            kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", "str")
            if kind == "int":
                values[name] = int(raw)
            elif kind == "float":
                values[name] = float(raw)
            elif kind == "bool":
                values[name] = _bool(name, raw)
            elif kind == "Path":
                values[name] = Path(raw)
            else:
                values[name] = raw
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)
