"""Message contracts (DESIGN §3, FIXED): trades in; alerts, halts, bars and dead letters out.

Decoding is strict and batch-first: a ``trades`` message is one JSON trade object or a JSON array
of them. The whole message is decoded and validated in C by msgspec; only when that fails is it
re-read element by element, so the valid trades of a batch flow on while each invalid one becomes
a :class:`Rejected` with a reason (it goes to ``trades.dlq``).

>>> ok, bad = decode_message(b'[{"ts": 1700000000, "trade_id": "t1", "instrument": "GPU-H100-1H",'
...     b' "price": 2.5, "qty": 1, "buyer": "a", "seller": "b"}, {"trade_id": "t2"}]')
>>> [(t.trade_id, t.ts, t.venue) for t in ok]
[('t1', 1700000000.0, 'default')]
>>> bad[0].index, bad[0].reason
(1, 'invalid_trade: Object missing required field `ts`')
"""

from __future__ import annotations

import base64
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any, Final, Literal

import msgspec

__all__ = [
    "ALERT_KINDS",
    "HALT_REASONS",
    "HALT_STATES",
    "MAX_EPOCH_S",
    "Agent",
    "Alert",
    "Bar",
    "Halt",
    "HaltAck",
    "Heartbeat",
    "Rejected",
    "Trade",
    "decode_message",
    "encode",
    "iso",
    "parse_ts",
    "validate_row",
]

ALERT_KINDS: Final = (
    "wash_trade",
    "circular_trading",
    "price_collusion",
    "sybil_cluster",
    "flash_crash",
    "price_spike",
    "contagion",
    "anomaly",
)
HALT_STATES: Final = ("TRADING", "HALTED", "PAUSED", "QUOTE_ONLY")
HALT_REASONS: Final = ("LUDP", "VELOCITY", "SPIKE", "MWC1", "MWC2", "MWC3", "CONTAGION", "MANUAL",
                       "RESUME")
#: Epoch seconds accepted for ``ts``: 1970 up to year ~5138; a larger number is almost surely
#: milliseconds and is rejected with that hint rather than read as a date far in the future.
MAX_EPOCH_S: Final = 1e11

#: The range of ``price`` and ``qty``: [MIN_VALUE, MAX_VALUE]. Far beyond any real unit either
#: way (a million ether in wei is 1e24), and narrow enough that every sum, product, ratio and
#: square the detectors form stays a normal float. Valid trades outside it used to stop the
#: worker on every restart: two at 1.7e308 overflowed ``math.fsum``; one at 5e-324 after one at
#: 1e30 made a price ratio 0 and its logarithm raise.
MIN_VALUE: Final = 1e-30
MAX_VALUE: Final = 1e30

NonEmpty = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
Positive = Annotated[float, msgspec.Meta(ge=MIN_VALUE, le=MAX_VALUE)]


class Trade(msgspec.Struct, kw_only=True, gc=False):
    """One trade (DESIGN §3.1). After decoding, ``ts`` is always epoch seconds (float)."""

    ts: float | str
    trade_id: NonEmpty
    instrument: NonEmpty
    price: Positive
    qty: Positive
    buyer: NonEmpty
    seller: NonEmpty
    venue: NonEmpty = "default"
    asset_class: str | None = None
    aggressor: Literal["buy", "sell"] | None = None


class Agent(msgspec.Struct, kw_only=True, gc=False):
    """One entry of the optional agent registry (DESIGN §3.2)."""

    agent_id: NonEmpty
    owner: str | None = None
    funded_by: str | None = None
    created_ts: float | str | None = None
    kind: str | None = None
    venue: str | None = None


class Alert(msgspec.Struct, kw_only=True):
    """A scored, explained alert (DESIGN §3.5)."""

    alert_id: str
    ts: str
    kind: str
    score: float
    instrument: str | None
    agents: list[str]
    venue: str
    detector: str
    summary: str
    evidence: dict[str, Any]
    schema: str = "alert/1"


class Halt(msgspec.Struct, kw_only=True):
    """A halt or resumption signal (DESIGN §3.6).

    ``seq`` strictly increases per (venue, instrument): it is the decision's event time in
    microseconds (bumped by one when two decisions share a microsecond), so a replay of the same
    input reproduces it and subscribers can drop duplicates by comparing ``seq``.
    """

    seq: int
    ts: str
    emitted_at: str
    venue: str
    instrument: str
    state: str
    reason: str
    resume_at: str | None
    reference_price: float | None
    band_low: float | None
    band_high: float | None
    alert_ids: list[str]
    schema: str = "halt/1"


class HaltAck(msgspec.Struct, kw_only=True):
    """An exchange's acknowledgement that it applied a halt signal (topic ``halt_acks``).

    ``venue``, ``instrument``, ``seq``, ``state``, ``reason`` and ``ts`` repeat the halt applied;
    ``exchange`` names the exchange, ``applied_at`` is its wall clock when it applied it and
    ``effective`` the state it enforces for the key afterwards (its layers, the fail-safe).
    Key = ``exchange/venue/instrument/seq``: a re-sent acknowledgement is the same record.
    """

    exchange: NonEmpty
    venue: NonEmpty
    instrument: NonEmpty
    seq: int
    state: str
    reason: str
    ts: str
    applied_at: str
    effective: str | None = None
    schema: str = "halt_ack/1"


class Heartbeat(msgspec.Struct, kw_only=True):
    """A stage-1 worker's liveness record on ``halts`` (:mod:`streams.heartbeat`)."""

    worker: NonEmpty
    seq: int
    emitted_at: str
    watermarks: dict[str, str] = msgspec.field(default_factory=dict)
    partitions: list[int] = msgspec.field(default_factory=list)
    kid: str | None = None
    schema: str = "heartbeat/1"


class Bar(msgspec.Struct, kw_only=True, gc=False):
    """One-second OHLCV bar of one instrument (topic ``bars``; what the store keeps of trades)."""

    venue: str
    instrument: str
    ts: str
    open: float
    high: float
    low: float
    close: float
    volume: float
    notional: float
    trades: int
    schema: str = "bar/1"


@dataclass(frozen=True, slots=True)
class Rejected:
    """Input that broke the trade contract: the reason, the original bytes, where it came from."""

    reason: str
    raw: bytes
    index: int | None = None
    source: dict[str, Any] = field(default_factory=dict)

    def to_record(self, received_at: str | None = None) -> dict[str, Any]:
        """The dead-letter record written to ``trades.dlq``."""
        try:
            raw, encoding = self.raw.decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            raw, encoding = base64.b64encode(self.raw).decode("ascii"), "base64"
        return {
            "schema": "dlq/1",
            "reason": self.reason,
            "index": self.index,
            "source": self.source,
            "raw": raw,
            "raw_encoding": encoding,
            "received_at": received_at or iso(datetime.now(UTC).timestamp()),
        }


_batch_decoder = msgspec.json.Decoder(list[Trade] | Trade)
_raw_list_decoder = msgspec.json.Decoder(list[msgspec.Raw])
_one_decoder = msgspec.json.Decoder(Trade)
_encoder = msgspec.json.Encoder()


def encode(obj: Any) -> bytes:
    """JSON bytes of a contract object (or any msgspec-encodable value)."""
    return _encoder.encode(obj)


def iso(ts: float) -> str:
    """ISO-8601 UTC with microseconds and a ``Z`` zone.

    >>> iso(1700000000.25)
    '2023-11-14T22:13:20.250000Z'
    """
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def parse_ts(value: Any) -> float:
    """Event time as epoch seconds; raises ``ValueError`` with a readable reason.

    >>> parse_ts("2023-11-14T22:13:20.25Z"), parse_ts(1700000000)
    (1700000000.25, 1700000000.0)
    >>> parse_ts("2023-11-14T22:13:20")
    Traceback (most recent call last):
    ...
    ValueError: ts has no time zone: '2023-11-14T22:13:20'
    """
    if isinstance(value, bool):
        raise ValueError(f"ts must be an ISO-8601 string or epoch seconds, got {value!r}")
    if isinstance(value, int | float):
        ts = float(value)
        if not math.isfinite(ts) or not 0 <= ts < MAX_EPOCH_S:
            hint = " (milliseconds? ts is epoch seconds)" if math.isfinite(ts) and ts > 0 else ""
            raise ValueError(f"ts out of range: {value!r}{hint}")
        return ts
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError(f"ts has no time zone: {value.isoformat()!r}")
        return value.timestamp()
    if isinstance(value, str):
        try:
            dt = datetime.fromisoformat(value.strip())
        except ValueError:
            raise ValueError(f"ts is not ISO-8601: {value[:64]!r}") from None
        if dt.tzinfo is None:
            raise ValueError(f"ts has no time zone: {value[:64]!r}")
        return parse_ts(dt.timestamp())
    raise ValueError(f"ts must be an ISO-8601 string or epoch seconds, got {type(value).__name__}")


def _check(trade: Trade) -> str | None:
    """Finish validation msgspec cannot express; normalise ``ts``. Returns a reason or None."""
    try:
        trade.ts = parse_ts(trade.ts)
    except ValueError as exc:
        return f"invalid_trade: {exc}"
    if not math.isfinite(trade.price) or not math.isfinite(trade.qty):
        return "invalid_trade: price and qty must be finite"
    return None


def _all_epoch(trades: list[Trade]) -> bool:
    """True when every ``ts`` is already epoch seconds in range: then :func:`_check` has nothing
    to do (JSON numbers decode finite: msgspec refuses ``NaN``, ``Infinity`` and overflows), and
    the common batch skips the per-trade checks."""
    ts: list[Any] = [t.ts for t in trades]
    return bool(ts) and set(map(type, ts)) == {float} and min(ts) >= 0 and max(ts) < MAX_EPOCH_S


def decode_message(
    raw: bytes, source: dict[str, Any] | None = None
) -> tuple[list[Trade], list[Rejected]]:
    """Decode one ``trades`` message into valid trades and rejected inputs (never raises)."""
    src = source or {}
    try:
        decoded = _batch_decoder.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError):
        return _decode_slowly(raw, src)
    trades = decoded if isinstance(decoded, list) else [decoded]
    if _all_epoch(trades) or all(_check(t) is None for t in trades):
        return trades, []
    return _decode_slowly(raw, src)


def _decode_slowly(raw: bytes, src: dict[str, Any]) -> tuple[list[Trade], list[Rejected]]:
    """Element by element, so one bad trade does not take its batch-mates down with it."""
    try:
        parts: list[msgspec.Raw] = _raw_list_decoder.decode(raw)
        indexed = True
    except (msgspec.DecodeError, UnicodeDecodeError):
        try:
            msgspec.json.decode(raw)
        except msgspec.ValidationError as exc:  # e.g. a number out of range: JSON, but no trade
            return [], [Rejected(f"invalid_trade: {exc}", raw, None, src)]
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            return [], [Rejected(_undecodable(raw, exc), raw, None, src)]
        parts, indexed = [msgspec.Raw(raw)], False
    ok: list[Trade] = []
    bad: list[Rejected] = []
    for i, part in enumerate(parts):
        index = i if indexed else None
        try:
            trade = _one_decoder.decode(part)
        except msgspec.ValidationError as exc:
            bad.append(Rejected(f"invalid_trade: {exc}", bytes(part), index, src))
            continue
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            bad.append(Rejected(_undecodable(bytes(part), exc), bytes(part), index, src))
            continue
        problem = _check(trade)
        if problem:
            bad.append(Rejected(problem, bytes(part), index, src))
        else:
            ok.append(trade)
    return ok, bad


def _undecodable(raw: bytes, exc: Exception) -> str:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as err:
        return f"bad_encoding: not UTF-8 ({err.reason} at byte {err.start})"
    return f"bad_json: {exc}"


_row_converter_fields = frozenset(Trade.__struct_fields__)


def validate_row(row: dict[str, Any], *, strict: bool = True) -> Trade:
    """Validate one tape row (a mapping) against the trade contract.

    ``strict=False`` accepts numbers written as strings, as CSV files hold them. Raises
    ``ValueError`` with a readable reason.

    >>> validate_row({"ts": "2024-01-01T00:00:00Z", "trade_id": "x", "instrument": "I",
    ...               "price": "1.5", "qty": "2", "buyer": "a", "seller": "b"}, strict=False).price
    1.5
    """
    clean = {k: v for k, v in row.items() if k in _row_converter_fields and v is not None
             and v != ""}
    ts = clean.get("ts")
    if not strict and isinstance(ts, str):
        try:
            clean["ts"] = float(ts)
        except ValueError:
            pass
    try:
        trade = msgspec.convert(clean, Trade, strict=strict)
    except msgspec.ValidationError as exc:
        raise ValueError(f"invalid_trade: {exc}") from None
    problem = _check(trade)
    if problem:
        raise ValueError(problem)
    return trade
