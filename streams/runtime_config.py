"""Runtime-tunable thresholds: per venue, asset class or instrument, on a compacted topic.

A change (``config/1``) names a **scope** and the **full** settings of that scope from its
``effective_ts`` (event time) on::

    {"schema": "config/1", "change_id": "...", "scope": "class:energy",
     "settings": {"band_floor": 0.04, "velocity_floor": 0.08},
     "effective_ts": 1767229200.0, "user": "alice", "note": "winter peak"}

The topic is keyed by scope and compacted: the latest record of a scope is its whole state, so
``surveil config set`` merges the new values into the scope's current settings before it
publishes. Scopes, most specific last: ``*`` (every instrument), ``venue:V``, ``class:C``
(the trades' ``asset_class``), ``instrument:NAME`` (on every venue) and
``instrument:V/NAME``. A setting comes from the most specific scope that sets it, else from the
worker's own :class:`~detectors.market.MarketConfig`.

Validation (:func:`validate`): only the thresholds in :data:`TUNABLE` (numbers the monitor reads
at every trade, never window lengths that size its state), finite numbers, and the whole
resolved :class:`MarketConfig` must still be valid (e.g. ``band_floor <= band_cap``). A bad
change is rejected as a whole with its reason (dead-letter topic): never half-applied.

When a change applies (:class:`ConfigBook`): to an instrument's trades in arrival order from
its first trade stamped at or after ``effective_ts``. Each instrument's trades reach one
partition in one order, live and in the backtest alike, so a backtest given the same timeline
(``surveil backtest --config FILE``) judges every trade under the same settings as the live run.
A change that reaches a worker after its ``effective_ts`` has passed applies from the next
trade on (and is counted ``late``): schedule changes ahead (``surveil config set`` defaults to
30 s ahead of now).

>>> from detectors.market import MarketConfig
>>> book = ConfigBook(MarketConfig())
>>> book.add(validate({"schema": "config/1", "change_id": "c1", "scope": "class:energy",
...                    "settings": {"band_floor": 0.03}, "effective_ts": 100.0,
...                    "user": "ops", "note": "test"}, MarketConfig()))
>>> book.resolve("v", "KWH", "energy", 99.0).band_floor, book.resolve("v", "KWH", "energy",
...                                                                    100.0).band_floor
(0.05, 0.03)
"""

from __future__ import annotations

import bisect
import dataclasses
import math
from collections.abc import Mapping
from typing import Any, Final

import msgspec

from detectors.market import MarketConfig
from streams.contracts import parse_ts

__all__ = ["TUNABLE", "ConfigBook", "ConfigChange", "ConfigError", "scope_rank", "validate"]

#: Thresholds read at every trade (never window lengths, which size a monitor's state).
TUNABLE: Final = frozenset({
    "band_floor", "band_k", "band_cap", "velocity_floor", "velocity_k", "velocity_cap",
    "spike_floor", "spike_mult", "spike_cap", "dynamic_floor", "dynamic_k", "dynamic_cap",
    "cold_band", "cold_spike", "wake_k", "anchor_cap", "vol_clip_k"} & {
    f.name for f in dataclasses.fields(MarketConfig)})
_MAX_SCOPES: Final = 100_000


class ConfigError(ValueError):
    """A change that cannot be applied; the message is the reason."""


class ConfigChange(msgspec.Struct, kw_only=True, frozen=True):
    """A validated ``config/1`` record."""

    change_id: str
    scope: str
    settings: dict[str, float]
    effective_ts: float
    user: str
    note: str
    schema: str = "config/1"


def scope_rank(scope: str) -> int:
    """0 for ``*`` up to 4 for ``instrument:V/NAME``; :class:`ConfigError` if malformed."""
    if scope == "*":
        return 0
    kind, _, name = scope.partition(":")
    if not name or kind not in ("venue", "class", "instrument"):
        raise ConfigError(f"scope {scope!r}: use '*', venue:V, class:C, instrument:NAME or "
                          "instrument:VENUE/NAME")
    return {"venue": 1, "class": 2, "instrument": 3 + ("/" in name)}[kind]


def validate(doc: Mapping[str, Any], base: MarketConfig) -> ConfigChange:
    """A decoded record as a :class:`ConfigChange`, or :class:`ConfigError` with the reason."""
    if doc.get("schema") != "config/1":
        raise ConfigError(f"schema {doc.get('schema')!r} is not 'config/1'")
    for name in ("change_id", "scope", "user", "note"):
        if not isinstance(doc.get(name), str) or not doc[name].strip():
            raise ConfigError(f"{name} must be a non-empty string")
    scope_rank(doc["scope"])
    settings = doc.get("settings")
    if not isinstance(settings, dict):
        raise ConfigError("settings must be an object")
    unknown = sorted(set(settings) - TUNABLE)
    if unknown:
        raise ConfigError(f"not tunable at runtime: {', '.join(unknown)} (tunable: "
                          f"{', '.join(sorted(TUNABLE))})")
    clean: dict[str, float] = {}
    for k, v in settings.items():
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) \
                or v < 0:
            raise ConfigError(f"{k} = {v!r}: need a finite number >= 0")
        clean[k] = float(v)
    try:
        ts = parse_ts(doc.get("effective_ts"))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"effective_ts: {exc}") from None
    check(base, clean)
    return ConfigChange(change_id=doc["change_id"], scope=doc["scope"], settings=clean,
                        effective_ts=ts, user=doc["user"], note=doc["note"])


def check(base: MarketConfig, settings: Mapping[str, float]) -> MarketConfig:
    """``base`` with ``settings``; :class:`ConfigError` when the result is inconsistent."""
    cfg = dataclasses.replace(base, **dict[str, Any](settings))
    for floor, cap in (("band_floor", "band_cap"), ("velocity_floor", "velocity_cap"),
                       ("spike_floor", "spike_cap"), ("dynamic_floor", "dynamic_cap")):
        lo, hi = getattr(cfg, floor, None), getattr(cfg, cap, None)
        if lo is not None and hi is not None and lo > hi:
            raise ConfigError(f"{floor} {lo:g} is above {cap} {hi:g}")
    return cfg


class ConfigBook:
    """Every accepted change, in effective order; resolves an instrument's settings at a time."""

    def __init__(self, base: MarketConfig) -> None:
        self.base = base
        #: scope -> [(effective_ts, change_id, settings)], in effective order
        self._scopes: dict[str, list[tuple[float, str, dict[str, float]]]] = {}
        self.times: list[float] = []  # every effective_ts, sorted (for the fast path)
        self.version = 0
        self._cache: dict[tuple[Any, ...], MarketConfig] = {}
        self.stats = {"accepted": 0, "duplicates": 0, "refused": 0}

    def add(self, change: ConfigChange) -> None:
        entries = self._scopes.get(change.scope)
        if entries is None:
            if len(self._scopes) >= _MAX_SCOPES:
                self.stats["refused"] += 1
                return
            entries = self._scopes[change.scope] = []
        item = (change.effective_ts, change.change_id, change.settings)
        if any(e[1] == change.change_id for e in entries):
            self.stats["duplicates"] += 1
            return
        bisect.insort(entries, item, key=lambda e: (e[0], e[1]))
        bisect.insort(self.times, change.effective_ts)
        self.version += 1
        self._cache.clear()
        self.stats["accepted"] += 1

    def changes_in(self, after: float, until: float) -> list[float]:
        """Effective times in ``(after, until]``."""
        return self.times[bisect.bisect_right(self.times, after):
                          bisect.bisect_right(self.times, until)]

    def resolve(self, venue: str, instrument: str, asset_class: str | None,
                ts: float) -> MarketConfig:
        """The settings of one instrument for a trade stamped ``ts``."""
        if not self._scopes:
            return self.base
        scopes = ["*", f"venue:{venue}", f"class:{asset_class}" if asset_class else None,
                  f"instrument:{instrument}", f"instrument:{venue}/{instrument}"]
        layers: list[tuple[str, int]] = []
        for scope in scopes:
            entries = self._scopes.get(scope) if scope else None
            if entries:
                i = bisect.bisect_right(entries, ts, key=lambda e: e[0])
                if i:
                    layers.append((scope, i))  # type: ignore[arg-type]
        key = tuple(layers)
        cfg = self._cache.get(key)
        if cfg is None:
            merged: dict[str, float] = {}
            for scope, i in layers:
                merged.update(self._scopes[scope][i - 1][2])
            cfg = dataclasses.replace(self.base, **dict[str, Any](merged)) if merged \
                else self.base
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[key] = cfg
        return cfg

    def current(self, scope: str) -> dict[str, float]:
        """The latest settings of ``scope`` (by effective time)."""
        entries = self._scopes.get(scope)
        return dict(entries[-1][2]) if entries else {}
