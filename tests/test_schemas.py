"""The JSON Schemas in ``streams/schemas`` against the code that enforces the same contracts.

The trade corpus below is judged twice, element by element: by the decoder the pipeline runs
(:func:`streams.contracts.decode_message`) and by ``trades-message.schema.json``. The schema side
first parses the bytes as strict I-JSON (UTF-8 without BOM, no NaN/Infinity literals, no lone
surrogates); that is the JSON layer, which a schema cannot describe.

``price`` and ``qty`` lie in [1e-30, 1e30] on both sides (``MIN_VALUE``, ``MAX_VALUE``), so a
literal such as ``1e400`` (infinity, once parsed) is refused by both.

Rules only the code enforces (asserted separately in ``CODE_ONLY``):

- a ``ts`` string must be a real calendar instant in the epoch range: the pattern checks the
  shape and the zone, not that February has no 30th or that 1969 is before 1970.

Leniencies only the code has (``CODE_LENIENT``, accepted by the decoder, rejected by the
schema, which states the contract producers should follow): ISO-8601 spellings that Python's
``datetime.fromisoformat`` tolerates beyond the pattern (surrounding whitespace, week dates, any
date/time separator, an empty fraction, seconds in the offset).
"""

from __future__ import annotations

import base64
import json
import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from streams import contracts
from streams.contracts import Alert, Bar, Halt, Rejected, Trade, decode_message, encode, parse_ts
from streams.schema_files import SCHEMA_NAMES, load_schema, schema_registry

REGISTRY = schema_registry()
TRADE = Draft202012Validator(load_schema("trade"), registry=REGISTRY)
MESSAGE = Draft202012Validator(load_schema("trades-message"), registry=REGISTRY)
TS_PATTERN = load_schema("trade")["properties"]["ts"]["anyOf"][1]["pattern"]


def validator(name: str) -> Draft202012Validator:
    return Draft202012Validator(load_schema(name), registry=REGISTRY,
                                format_checker=Draft202012Validator.FORMAT_CHECKER)


# --- the schemas themselves -------------------------------------------------------------------


@pytest.mark.parametrize("name", SCHEMA_NAMES)
def test_schema_is_valid_draft_2020_12(name: str) -> None:
    schema = load_schema(name)
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"].endswith(f"/{name}.schema.json")
    assert schema["title"]
    assert schema["description"]
    for field, spec in schema.get("properties", {}).items():
        assert spec.get("description"), f"{name}.{field} has no description"


def test_load_schema_gives_fresh_copies_and_rejects_unknown_names() -> None:
    load_schema("trade")["required"].clear()
    assert load_schema("trade")["required"]
    with pytest.raises(KeyError, match="no schema"):
        load_schema("trades")


def test_schema_files_public_surface() -> None:
    from streams import schema_files

    assert set(schema_files.__all__) == {"SCHEMA_NAMES", "load_schema", "schema_registry"}


def _struct_fields(struct: type[msgspec.Struct]) -> tuple[set[str], set[str]]:
    fields = msgspec.structs.fields(struct)
    return {f.name for f in fields}, {f.name for f in fields if f.required}


def test_trade_schema_required_fields_are_the_structs() -> None:
    """Code and schema cannot drift: same fields, same required ones."""
    names, required = _struct_fields(Trade)
    schema = load_schema("trade")
    assert set(schema["required"]) == required
    assert set(schema["properties"]) == names
    venue = next(f for f in msgspec.structs.fields(Trade) if f.name == "venue")
    assert schema["properties"]["venue"]["default"] == venue.default


def test_agent_schema_fields_are_the_structs() -> None:
    names, required = _struct_fields(contracts.Agent)
    schema = load_schema("agent")
    assert set(schema["required"]) == required == {"agent_id"}
    assert set(schema["properties"]) == names


@pytest.mark.parametrize(("name", "struct"), [("alert", Alert), ("halt", Halt), ("bar", Bar)])
def test_output_schemas_list_every_field_as_required(name: str,
                                                     struct: type[msgspec.Struct]) -> None:
    """Encoded outputs always carry every field (defaults included), so all are required."""
    names, _ = _struct_fields(struct)
    schema = load_schema(name)
    assert set(schema["properties"]) == names == set(schema["required"])


def test_enums_match_the_code() -> None:
    assert load_schema("alert")["properties"]["kind"]["enum"] == list(contracts.ALERT_KINDS)
    assert load_schema("label")["properties"]["kind"]["enum"] == list(contracts.ALERT_KINDS)
    halt = load_schema("halt")["properties"]
    assert halt["state"]["enum"] == list(contracts.HALT_STATES)
    assert halt["reason"]["enum"] == list(contracts.HALT_REASONS)
    assert load_schema("trade")["properties"]["aggressor"]["enum"] == ["buy", "sell", None]


def test_dlq_schema_fields_are_the_record() -> None:
    record = Rejected("bad_json: x", b"{", None, {"topic": "trades"}).to_record()
    schema = load_schema("dlq")
    assert set(schema["properties"]) == set(record) == set(schema["required"])


# --- the trade corpus: code and schema agree element by element -------------------------------

OK: dict[str, Any] = {"ts": 1767225600, "trade_id": "t1", "instrument": "GPU-H100-1H",
                      "price": 2.5, "qty": 1, "buyer": "a", "seller": "b"}


def msg(*elements: Any, **changes: Any) -> bytes:
    """One trade (OK with ``changes``; a value of ... drops the field), or an array."""
    if elements:
        return json.dumps(list(elements)).encode()
    trade = {k: v for k, v in {**OK, **changes}.items() if v is not ...}
    return json.dumps(trade).encode()


def t(trade_id: str, **changes: Any) -> dict[str, Any]:
    return {k: v for k, v in {**OK, "trade_id": trade_id, **changes}.items() if v is not ...}


CORPUS: dict[str, bytes] = {
    # valid
    "minimal": msg(),
    "all fields, ISO Z": msg(ts="2026-01-01T00:00:00.250Z", venue="x", asset_class="compute",
                            aggressor="sell"),
    "ISO offset": msg(ts="2026-01-01T05:30:00.123456+05:30"),
    "ISO basic format": msg(ts="20260101T000000Z"),
    "ISO space, hour-only offset": msg(ts="2026-01-01 00:00:00+01"),
    "epoch float": msg(ts=1767225600.123),
    "epoch zero": msg(ts=0),
    "nulls for optional": msg(asset_class=None, aggressor=None),
    "extra fields": msg(extra={"nested": [1, 2]}, note="hi", n=None),
    "int price, tiny qty": msg(price=3, qty=1e-9),
    "subnormal qty (below the minimum)": msg(qty=5e-324),
    "qty at the minimum": msg(price=1e-30, qty=1e-30),
    "unicode strings": msg(buyer="agent-é-😀", seller="代理", trade_id="😀" * 256),
    "whitespace around JSON": b"  \n" + msg() + b"\r\n ",
    "duplicate key, last wins (valid)": msg()[:-1] + b', "price": 7}',
    "duplicate key, last wins (invalid)": msg()[:-1] + b', "price": -7}',
    "array of two": msg(t("a"), t("b")),
    "empty array": b"[]",
    # whole message rejected
    "bad JSON": b'{"ts": 1767225600, "trade_id": ',
    "not UTF-8": msg(buyer="ab").replace(b"ab", b"a\xffb"),
    "NaN literal": msg()[:-1] + b', "price": NaN}',
    "Infinity literal": msg()[:-1] + b', "qty": Infinity}',
    "-Infinity in array": b'[' + msg()[:-1] + b', "qty": -Infinity}]',
    "UTF-8 BOM": b"\xef\xbb\xbf" + msg(),
    "trailing garbage": msg() + b"x",
    "trailing comma": msg()[:-1] + b",}",
    "lone surrogate": msg()[:-1] + b', "buyer": "\\ud800"}',
    "raw control character": msg(buyer="a").replace(b'"a"', b'"a\x01"'),
    "number message": b"5",
    "string message": b'"trade"',
    "null message": b"null",
    "empty message": b"",
    # one trade rejected
    **{f"missing {f}": msg(**{f: ...}) for f in ("ts", "trade_id", "instrument", "price", "qty",
                                                  "buyer", "seller")},
    "bool price": msg(price=True),
    "bool qty": msg(qty=False),
    "bool ts": msg(ts=True),
    "price as string": msg(price="2.5"),
    "qty as string": msg(qty="1"),
    "epoch ts as string": msg(ts="1767225600"),
    "price zero": msg(price=0),
    "price negative": msg(price=-1.5),
    "price at the maximum": msg(price=1e30, qty=1e30),
    "price above the maximum": msg(price=1.7e308),
    "qty above the maximum": msg(qty=1.0000001e30),
    "price overflows to infinity": msg()[:-1] + b', "price": 1e400}',
    "integer qty beyond a double": msg()[:-1] + b', "qty": 1' + b"0" * 400 + b"}",
    "qty zero": msg(qty=0.0),
    "qty negative zero": msg(qty=-0.0),
    "ts without zone": msg(ts="2026-01-01T00:00:00"),
    "ts date only": msg(ts="2026-01-01"),
    "ts not a date": msg(ts="yesterday"),
    "ts negative": msg(ts=-1),
    "ts in milliseconds": msg(ts=1767225600000),
    "ts overflows (infinity is out of range for both)": msg()[:-1] + b', "ts": 1e400}',
    "ts lowercase z": msg(ts="2026-01-01T00:00:00z"),
    "ts hour 24": msg(ts="2026-01-01T24:00:00Z"),
    "ts offset +24:00": msg(ts="2026-01-01T00:00:00+24:00"),
    "ts null": msg(ts=None),
    "aggressor upper case": msg(aggressor="BUY"),
    "aggressor other": msg(aggressor="both"),
    "aggressor number": msg(aggressor=1),
    "empty trade_id": msg(trade_id=""),
    "empty instrument": msg(instrument=""),
    "empty buyer": msg(buyer=""),
    "empty venue": msg(venue=""),
    "null venue": msg(venue=None),
    "null price": msg(price=None),
    "trade_id too long": msg(trade_id="x" * 257),
    "trade_id number": msg(trade_id=123),
    "asset_class number": msg(asset_class=5),
    "price object": msg(price={"value": 1}),
    "price array": msg(price=[1]),
    # arrays judged element by element
    "array mixing good and bad": msg(t("a"), t("b", price=...), t("c"), t("d", qty=True), "x", 5,
                                     [], None, t("e", ts="2026-01-01T00:00:00"), t("f")),
    "array of arrays": msg([t("a")]),
    "array of one bad": msg(t("a", price=0)),
    "array with null venue": msg(t("a"), t("b", venue=None)),
}


class NotIJson(ValueError):
    pass


def _reject_constant(name: str) -> Any:
    raise NotIJson(f"{name} is not JSON")


def _strings_ok(doc: Any) -> bool:
    """No lone surrogates (I-JSON, RFC 7493 §2.1) anywhere in the document."""
    if isinstance(doc, str):
        try:
            doc.encode("utf-8")
        except UnicodeEncodeError:
            return False
        return True
    if isinstance(doc, list):
        return all(map(_strings_ok, doc))
    if isinstance(doc, dict):
        return all(_strings_ok(k) and _strings_ok(v) for k, v in doc.items())
    return True


Verdict = tuple[list[str], set[int | None]]


def schema_verdict(raw: bytes) -> Verdict:
    """(trade_ids accepted, in order; positions rejected, None = the whole message)."""
    try:
        doc = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError):
        return [], {None}
    if not _strings_ok(doc):
        return [], {None}
    if isinstance(doc, list):
        verdicts = [TRADE.is_valid(e) for e in doc]
        assert MESSAGE.is_valid(doc) == all(verdicts)
        return ([e["trade_id"] for e, ok in zip(doc, verdicts, strict=True) if ok],
                {i for i, ok in enumerate(verdicts) if not ok})
    if isinstance(doc, dict) and TRADE.is_valid(doc):
        assert MESSAGE.is_valid(doc)
        return [doc["trade_id"]], set()
    assert not MESSAGE.is_valid(doc)
    return [], {None}


def code_verdict(raw: bytes) -> Verdict:
    ok, bad = decode_message(raw)
    return [trade.trade_id for trade in ok], {b.index for b in bad}


def test_corpus_is_big_and_varied() -> None:
    verdicts = [schema_verdict(raw) for raw in CORPUS.values()]
    assert len(CORPUS) >= 30
    assert sum(1 for ok, bad in verdicts if ok and not bad) >= 10
    assert sum(1 for ok, bad in verdicts if bad == {None}) >= 30
    assert any(ok and bad for ok, bad in verdicts)


@pytest.mark.parametrize("raw", [pytest.param(raw, id=name) for name, raw in CORPUS.items()])
def test_code_and_schema_agree(raw: bytes) -> None:
    assert code_verdict(raw) == schema_verdict(raw)


def test_bad_utf8_inside_one_element_spares_its_batch_mates() -> None:
    good = msg(buyer="ab")
    ok, bad = decode_message(b"[" + CORPUS["not UTF-8"] + b"," + good + b"]")
    assert len(ok) == 1
    assert [(b.index, b.reason.split(":")[0]) for b in bad] == [(0, "bad_encoding")]


def test_mixed_array_keeps_the_good_and_names_the_bad() -> None:
    ok, bad = decode_message(CORPUS["array mixing good and bad"])
    assert [trade.trade_id for trade in ok] == ["a", "c", "f"]
    reasons = {b.index: b.reason for b in bad}
    assert set(reasons) == {1, 3, 4, 5, 6, 7, 8}
    assert "missing required field `price`" in reasons[1]
    assert "got `bool`" in reasons[3]
    assert "no time zone" in reasons[8]


CODE_ONLY: dict[str, tuple[bytes, str]] = {
    "February 30th": (msg(ts="2026-02-30T00:00:00Z"), "ts is not ISO-8601"),
    "before 1970": (msg(ts="1969-12-31T23:59:59Z"), "ts out of range"),
    "before 1970 by the offset": (msg(ts="1970-01-01T00:30:00+01:00"), "ts out of range"),
    "year 0": (msg(ts="0000-01-01T00:00:00Z"), "ts is not ISO-8601"),
}


@pytest.mark.parametrize(("raw", "reason"), CODE_ONLY.values(), ids=CODE_ONLY.keys())
def test_code_only_rules(raw: bytes, reason: str) -> None:
    """Valid for the schema, rejected by the code (with the reason given)."""
    assert schema_verdict(raw) == (["t1"], set())
    ok, bad = decode_message(raw)
    assert not ok
    assert [b.index for b in bad] == [None]
    assert reason in bad[0].reason


def test_code_only_rule_judges_array_elements_alone() -> None:
    raw = b"[" + CODE_ONLY["February 30th"][0] + b", " + msg(trade_id="t2") + b"]"
    assert schema_verdict(raw) == (["t1", "t2"], set())
    assert code_verdict(raw) == (["t2"], {0})


CODE_LENIENT = {
    "whitespace around ts": " 2026-01-01T00:00:00Z ",
    "week date": "2026-W01-4T00:00Z",
    "any separator": "2026-01-01X00:00:00Z",
    "empty fraction": "2026-01-01T00:00:00.Z",
    "seconds in the offset": "2026-01-01T00:00:00+05:30:15",
    "fraction after minutes": "2026-01-01T00:00.5Z",
}


@pytest.mark.parametrize("ts", CODE_LENIENT.values(), ids=CODE_LENIENT.keys())
def test_code_leniencies(ts: str) -> None:
    """Accepted by the decoder, rejected by the schema (the contract producers should follow)."""
    raw = msg(ts=ts)
    assert code_verdict(raw) == (["t1"], set())
    assert schema_verdict(raw) == ([], {None})


@settings(max_examples=300)
@given(st.from_regex(TS_PATTERN, fullmatch=True))
def test_every_pattern_match_parses_unless_the_calendar_says_no(ts: str) -> None:
    """Schema ⊂ code for ts strings, up to the code-only calendar and range rules."""
    try:
        when = datetime.fromisoformat(ts)
    except ValueError as exc:
        problem = str(exc)
    else:
        problem = ""
    if problem:
        assert "out of range" in problem  # day out of range for month; year 0
        return
    assert when.tzinfo is not None
    if 0 <= when.timestamp() < contracts.MAX_EPOCH_S:
        assert parse_ts(ts) == when.timestamp()


# --- generated trade messages ------------------------------------------------------------------

FIELDS = ("ts", "trade_id", "instrument", "price", "qty", "buyer", "seller", "venue",
          "asset_class", "aggressor")
text = st.text(st.characters(exclude_categories=["Cs"]), max_size=12)
numbers = st.one_of(st.floats(allow_nan=False, allow_infinity=False),
                    st.integers(-(10**20), 10**20))
scalars = st.one_of(st.none(), st.booleans(), numbers, text)
json_values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(text, inner, max_size=3)), max_leaves=6)
zones = st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30)),
                         timezone(-timedelta(hours=8))])
iso = st.builds(
    lambda d, z: d.isoformat().replace("+00:00", "Z") if z else d.isoformat(),
    st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2999, 12, 31),
                 timezones=zones),
    st.booleans())
naive = st.datetimes(min_value=datetime(1971, 1, 1)).map(datetime.isoformat)
ts_values = st.one_of(iso, naive, st.floats(-10, 2e11, allow_nan=False),
                      st.integers(-5, 10**12), scalars)
text_values = st.one_of(text.filter(bool), st.just(""), st.text(min_size=255, max_size=258),
                        scalars)
price_values = st.one_of(st.floats(min_value=-1, max_value=1e12, allow_nan=False), scalars)
values = {"ts": ts_values, "price": price_values, "qty": price_values,
          "aggressor": st.one_of(st.sampled_from(["buy", "sell", "BUY", "", None]), scalars),
          **{f: text_values for f in ("trade_id", "instrument", "buyer", "seller", "venue",
                                      "asset_class")}}


@st.composite
def trades(draw: st.DrawFn) -> Any:
    if draw(st.integers(0, 20)) == 0:
        return draw(json_values)  # not even an object
    trade = {f: draw(values[f]) for f in FIELDS if draw(st.integers(0, 9))}
    trade.update(draw(st.dictionaries(text.filter(lambda k: k not in FIELDS), json_values,
                                      max_size=2)))
    if "trade_id" in trade and draw(st.booleans()):
        trade["trade_id"] = draw(text.filter(bool))  # keep many valid
    return trade


messages = st.one_of(trades(), st.lists(trades(), max_size=5))


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(messages, st.booleans())
def test_generated_messages_agree(message: Any, ascii_only: bool) -> None:
    raw = json.dumps(message, ensure_ascii=ascii_only, allow_nan=False).encode()
    assert code_verdict(raw) == schema_verdict(raw)


@settings(max_examples=300)
@given(trades().filter(lambda d: isinstance(d, dict)))
def test_validate_row_is_decode_message_on_the_present_fields(row: dict[str, Any]) -> None:
    """The tape path's judge is the Kafka path's, once null and "" (empty cells) mean absent."""
    present = {k: v for k, v in row.items() if not (k in FIELDS and v in (None, ""))}
    ok, bad = decode_message(json.dumps(present).encode())
    reasons: list[str] = []
    try:
        trade: Trade | None = contracts.validate_row(row)
    except ValueError as exc:
        trade, reasons = None, [str(exc)]
    assert (ok[0] if ok else None) == trade
    # same category; the wording may differ (an int beyond int64 is "float" to msgspec's JSON)
    assert [b.reason.split(":")[0] for b in bad] == [r.split(":")[0] for r in reasons]


# --- outputs encoded from the structs ---------------------------------------------------------


def _valid(name: str, obj: Any) -> None:
    doc = json.loads(encode(obj))
    errors = [e.message for e in validator(name).iter_errors(doc)]
    assert not errors, errors


ALERT = Alert(alert_id="a1b2", ts=contracts.iso(1767225600.25), kind="flash_crash", score=87.5,
              instrument="GPU-H100-1H", agents=["bot-1"], venue="default",
              detector="market/1", summary="GPU-H100-1H fell 12% in 40 s",
              evidence={"drop": -0.12, "trade_ids": ["t1", "t2"]})
HALT = Halt(seq=1767225600250000, ts=contracts.iso(1767225600.25),
            emitted_at=contracts.iso(1767225601.0), venue="default", instrument="GPU-H100-1H",
            state="PAUSED", reason="LUDP", resume_at=contracts.iso(1767225900.25),
            reference_price=2.5, band_low=2.25, band_high=2.75, alert_ids=["a1b2"])
BAR = Bar(venue="default", instrument="GPU-H100-1H", ts=contracts.iso(1767225600.0), open=2.5,
          high=2.6, low=2.4, close=2.55, volume=10.0, notional=25.3, trades=4)


def test_alert_halt_bar_validate() -> None:
    _valid("alert", ALERT)
    _valid("alert", msgspec.structs.replace(ALERT, instrument=None, agents=[], evidence={}))
    for kind in contracts.ALERT_KINDS:
        _valid("alert", msgspec.structs.replace(ALERT, kind=kind, score=0.0))
    _valid("halt", HALT)
    _valid("halt", msgspec.structs.replace(HALT, state="TRADING", reason="RESUME",
                                           resume_at=None, reference_price=None, band_low=None,
                                           band_high=None, alert_ids=[], instrument="*"))
    for state in contracts.HALT_STATES:
        for reason in contracts.HALT_REASONS:
            _valid("halt", msgspec.structs.replace(HALT, state=state, reason=reason))
    _valid("bar", BAR)


@pytest.mark.parametrize(("name", "obj"), [
    ("alert", msgspec.structs.replace(ALERT, score=100.5)),
    ("alert", msgspec.structs.replace(ALERT, score=-1.0)),
    ("alert", msgspec.structs.replace(ALERT, kind="spoofing")),
    ("alert", msgspec.structs.replace(ALERT, summary="two\nlines")),
    ("alert", msgspec.structs.replace(ALERT, ts="2026-01-01T00:00:00")),
    ("alert", msgspec.structs.replace(ALERT, schema="alert/2")),
    ("halt", msgspec.structs.replace(HALT, state="OPEN")),
    ("halt", msgspec.structs.replace(HALT, reason="LULD")),
    ("halt", msgspec.structs.replace(HALT, seq=-1)),
    ("halt", msgspec.structs.replace(HALT, emitted_at="yesterday")),
    ("halt", msgspec.structs.replace(HALT, reference_price=0.0)),
    ("bar", msgspec.structs.replace(BAR, low=0.0)),
    ("bar", msgspec.structs.replace(BAR, trades=-1)),
])
def test_broken_outputs_do_not_validate(name: str, obj: Any) -> None:
    assert not validator(name).is_valid(json.loads(encode(obj)))


def test_dead_letters_validate() -> None:
    for raw in CORPUS.values():
        if b"\xff" in raw:
            raw = b"\xff" + raw  # outside a string, so decode_message does not raise (see above)
        ok, bad = decode_message(raw, {"topic": "trades", "partition": 0, "offset": 7})
        for rejected in bad:
            record = rejected.to_record()
            assert validator("dlq").is_valid(record), record
    binary = Rejected("bad_encoding: not UTF-8", b"\xff\xfe", None, {}).to_record()
    assert binary["raw_encoding"] == "base64"
    assert validator("dlq").is_valid(binary)
    assert base64.b64decode(binary["raw"]) == b"\xff\xfe"
    assert not validator("dlq").is_valid({**binary, "raw": "not base64!"})
    assert not validator("dlq").is_valid({**binary, "index": -1})


def test_agent_schema() -> None:
    agent = validator("agent")
    assert agent.is_valid({"agent_id": "bot-1"})
    assert agent.is_valid({"agent_id": "bot-1", "owner": None, "funded_by": "0xabc",
                           "created_ts": "2026-01-01T00:00:00Z", "kind": "gpu-bot",
                           "venue": "v", "extra": 1})
    assert agent.is_valid(json.loads(encode(contracts.Agent(agent_id="x", created_ts=1.7e9))))
    for bad in ({}, {"agent_id": ""}, {"agent_id": 5}, {"agent_id": "x", "created_ts": True},
                {"agent_id": "x", "created_ts": "2026-01-01T00:00:00"}):
        assert not agent.is_valid(bad), bad


def test_label_schema() -> None:
    label = validator("label")
    good = {"kind": "flash_crash", "t_start": "2026-01-01T00:00:00Z",
            "t_end": "2026-01-01T00:02:00.000000Z", "instruments": ["GPU-H100-1H"],
            "agents": [], "note": "planted move of -30% over 20 s"}
    assert label.is_valid(good)
    assert label.is_valid({k: v for k, v in good.items() if k != "note"})
    for field in ("kind", "t_start", "t_end", "instruments", "agents"):
        assert not label.is_valid({k: v for k, v in good.items() if k != field}), field
    assert not label.is_valid({**good, "kind": "spoofing"})
    assert not label.is_valid({**good, "t_start": "2026-01-01T00:00:00"})
    assert not label.is_valid({**good, "agents": "bot-1"})


def test_output_time_pattern_accepts_what_iso_writes() -> None:
    pattern = re.compile(load_schema("alert")["properties"]["ts"]["pattern"])
    for ts in (0.0, 1767225600.25, 99999999999.999):
        assert pattern.search(contracts.iso(ts)), contracts.iso(ts)
