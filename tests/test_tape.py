"""Tape files (DESIGN §3.3): every format round-trips, bad rows are named, bad files raise.

The bulk (polars) judge of CSV and Parquet rows must be indistinguishable from the per-row
contract, :func:`streams.contracts.validate_row`: property tests feed both the same rows and
compare the trades kept and the reasons given.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import polars as pl
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from replay import tape
from replay.tape import (
    TRADE_COLUMNS,
    AgentsRead,
    RowReject,
    TapeError,
    dedupe,
    iter_tape,
    read_agents,
    read_labels,
    read_tape,
    write_labels,
    write_tape,
)
from streams.contracts import MAX_VALUE, MIN_VALUE, Agent, Trade, validate_row

FORMATS = ["csv", "csv.gz", "parquet", "jsonl", "jsonl.gz"]
T0 = 1767225600.0  # 2026-01-01T00:00:00Z
HEADER = "ts,trade_id,venue,instrument,asset_class,price,qty,buyer,seller,aggressor"


def trade(i: int, **changes: Any) -> Trade:
    fields: dict[str, Any] = {"ts": T0 + i * 0.25, "trade_id": f"t{i}", "instrument": "GPU-H100-1H",
                              "price": 2.5 + i, "qty": 1.0 + i, "buyer": f"a{i % 3}",
                              "seller": f"b{i % 2}"}
    return Trade(**{**fields, **changes})


SAMPLE = [
    trade(0),
    trade(1, venue="v2", asset_class="compute", aggressor="buy"),
    trade(2, buyer='a "quoted", comma', seller="line\nbreak", venue="cr\rlf\r\n", aggressor="sell"),
    trade(3, instrument="代理-😀", price=1e-7, qty=1e30, ts=T0 + 0.000001),
    trade(4, ts=0.0, trade_id=" padded ", asset_class="x" * 300),
]


@pytest.fixture
def tmp(tmp_path: Path) -> Path:
    return tmp_path


def write_text(path: Path, text: str | bytes) -> Path:
    data = text.encode() if isinstance(text, str) else text
    if path.name.endswith(".gz"):
        data = gzip.compress(data)
    path.write_bytes(data)
    return path


def raw_file(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_public_surface() -> None:
    assert set(tape.__all__) == {
        "FRAME_SCHEMA", "TRADE_COLUMNS", "AgentsRead", "RowReject", "TapeChunk", "TapeError",
        "TapeRead", "dedupe", "iter_tape", "read_agents", "read_labels", "read_tape",
        "tape_format", "write_labels", "write_tape"}
    assert set(TRADE_COLUMNS) == set(Trade.__struct_fields__)
    assert issubclass(TapeError, ValueError)


# --- round trips -------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_round_trip(tmp: Path, fmt: str) -> None:
    path = tmp / f"tape.{fmt}"
    write_tape(SAMPLE, path)
    read = read_tape(path)
    assert read.trades == SAMPLE
    assert (read.rejects, read.rows, read.format) == ([], len(SAMPLE), fmt)
    assert not list(tmp.glob(".*part"))  # no temporary file left behind


@pytest.mark.parametrize("fmt", FORMATS)
def test_empty_tape_round_trip(tmp: Path, fmt: str) -> None:
    path = tmp / f"empty.{fmt}"
    write_tape([], path)
    read = read_tape(path)
    assert (read.trades, read.rejects, read.rows) == ([], [], 0)


def test_written_files_look_as_documented(tmp: Path) -> None:
    write_tape(SAMPLE[:2], tmp / "t.csv")
    lines = (tmp / "t.csv").read_text().splitlines()
    assert lines[0] == HEADER
    assert lines[2].startswith("2026-01-01T00:00:00.250000Z,t1,v2,")
    write_tape(SAMPLE[:1], tmp / "t.jsonl")
    assert json.loads((tmp / "t.jsonl").read_text())["ts"] == "2026-01-01T00:00:00.000000Z"
    write_tape(SAMPLE, tmp / "t.parquet")
    schema = pq.read_schema(tmp / "t.parquet")
    assert str(schema.field("ts").type) == "timestamp[us, tz=UTC]"
    assert schema.names == list(TRADE_COLUMNS)


names = st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=8)
valid_trades = st.builds(
    Trade,
    # microseconds, below 2**53 us (year 2255) so a float holds every microsecond exactly
    ts=st.integers(0, 2**53 - 1).map(lambda us: us / 1e6),
    trade_id=names, instrument=names, buyer=names, seller=names, venue=names,
    price=st.floats(min_value=MIN_VALUE, max_value=MAX_VALUE),
    qty=st.floats(min_value=MIN_VALUE, max_value=MAX_VALUE),
    asset_class=st.none() | names,
    aggressor=st.sampled_from([None, "buy", "sell"]),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(valid_trades, max_size=12), st.sampled_from(FORMATS))
def test_round_trip_property(trades: list[Trade], fmt: str) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / f"tape.{fmt}"
        write_tape(trades, path)
        read = read_tape(path)
    assert read.rejects == []
    assert read.trades == trades


def test_write_accepts_a_frame(tmp: Path) -> None:
    expected = [trade(0), trade(1, venue="v", aggressor="sell")]
    base = {"trade_id": ["t0", "t1"], "instrument": ["GPU-H100-1H"] * 2, "price": [2.5, 3.5],
            "qty": [1, 2], "buyer": ["a0", "a1"], "seller": ["b0", "b1"],
            "venue": [None, "v"], "aggressor": [None, "sell"], "extra": [1, 2]}
    stamps = [datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 1, 0, 0, 0, 250000, tzinfo=UTC)]
    for ts in ([T0, T0 + 0.25], ["2026-01-01T00:00:00Z", "2026-01-01T01:00:00.25+01:00"],
               pl.Series(stamps).dt.convert_time_zone("Asia/Tokyo")):
        write_tape(pl.DataFrame({"ts": ts, **base}), tmp / "f.parquet")
        assert read_tape(tmp / "f.parquet").trades == expected


def test_write_refuses_invalid_trades_and_leaves_nothing(tmp: Path) -> None:
    path = tmp / "t.csv"
    path.write_text("old")
    with pytest.raises(TapeError, match=r"refusing to write 1 invalid trade.*#2:.*>= 1e-30"):
        write_tape([trade(0), trade(1, price=-1.0), trade(2)], path)
    with pytest.raises(TapeError, match="no time zone"):
        write_tape([trade(0, ts="2026-01-01T00:00:00")], path)
    frame = pl.DataFrame({"ts": [datetime(2026, 1, 1)], "trade_id": ["x"], "instrument": ["I"],
                          "price": [1.0], "qty": [1.0], "buyer": ["a"], "seller": ["b"]})
    with pytest.raises(TapeError, match="no time zone"):
        write_tape(frame, path)
    with pytest.raises(TapeError, match="missing column.*price"):
        write_tape(frame.drop("price"), path)
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp.iterdir()) == ["t.csv"]


# --- bad rows ----------------------------------------------------------------------------------


def test_bad_csv_rows_are_named_and_good_rows_kept(tmp: Path) -> None:
    good = "2026-01-01T00:00:00Z,{},v,I,,2.5,1,a,b,buy"
    text = "\n".join([
        HEADER,
        good.format("g1"),                                     # row 1
        "2026-01-01T00:00:00Z,x2,v,I,,,1,a,b,",                # row 2: price empty
        "2026-01-01T00:00:00Z,x3,v,I,,abc,1,a,b,",             # row 3
        "2026-01-01T00:00:00,x4,v,I,,2.5,1,a,b,",              # row 4: no zone
        "2026-01-01T00:00:00Z,x5,v,I,,2.5,1,a,b",              # row 5: a field short
        "",                                                    # blank: not a row
        good.format("g6"),                                     # row 6
        "2026-01-01T00:00:00Z,x7,v,I,,2.5,1,a,b,BUY",          # row 7
        "1767225600000,x8,v,I,,2.5,1,a,b,",                    # row 8: milliseconds
        good.format("g9"),                                     # row 9
    ]) + "\n"
    path = write_text(tmp / "t.csv", text.encode().replace(b"g6,v", b"g6,v\xff"))
    read = read_tape(path)
    assert [t.trade_id for t in read.trades] == ["g1", "g9"]
    assert read.rows == 9
    got = {r.row: r.reason for r in read.rejects}
    assert sorted(got) == [2, 3, 4, 5, 6, 7, 8]
    assert got[2] == "invalid_trade: Object missing required field `price`"
    assert got[3] == "invalid_trade: Expected `float`, got `str` - at `$.price`"
    assert got[4] == "invalid_trade: ts has no time zone: '2026-01-01T00:00:00'"
    assert got[5] == "bad_csv: 9 fields where the header has 10"
    assert got[6] == "bad_encoding: not UTF-8"
    assert got[7] == "invalid_trade: Invalid enum value 'BUY' - at `$.aggressor`"
    assert got[8].startswith("invalid_trade: ts out of range: 1767225600000.0 (milliseconds?")
    raws = {r.row: r.raw for r in read.rejects}
    assert raws[3] == "2026-01-01T00:00:00Z,x3,v,I,,abc,1,a,b,"
    assert raws[6] == "2026-01-01T00:00:00Z,g6,v\\xff,I,,2.5,1,a,b,buy"


def test_bad_jsonl_lines_are_named_by_line(tmp: Path) -> None:
    good = msgspec.json.encode(trade(0)).decode()
    lines = [good, '{"ts": 1767225600, "trade_id": ', "", json.dumps([json.loads(good)]),
             '{"trade_id": "x"}', "   ", good.replace('"a0"', '"a\\u00e9"'),
             good.replace('"qty":1.0', '"qty":true'), good]
    path = write_text(tmp / "t.jsonl", "\n".join(lines).encode().replace(b'"b0"', b'"b\xff"', 1))
    read = read_tape(path)
    assert read.rows == 7
    assert [t.buyer for t in read.trades] == ["aé", "a0"]
    got = {r.row: r.reason for r in read.rejects}
    assert sorted(got) == [1, 2, 4, 5, 8]
    assert got[1].startswith("bad_encoding: not UTF-8")
    assert got[2].startswith("bad_json: ")
    assert got[4] == "invalid_trade: a tape line holds one trade object, not a JSON array"
    assert got[5] == "invalid_trade: Object missing required field `ts`"
    assert got[8] == "invalid_trade: Expected `float`, got `bool` - at `$.qty`"


def test_jsonl_tolerates_a_byte_order_mark(tmp: Path) -> None:
    path = write_text(tmp / "t.jsonl", b"\xef\xbb\xbf" + msgspec.json.encode(trade(0)) + b"\r\n")
    assert read_tape(path).trades == [trade(0)]


def test_csv_numbers_as_strings(tmp: Path) -> None:
    text = "\n".join([
        "trade_id,ts,instrument,price,qty,buyer,seller,note",
        'q1,"1767225600","I","2.5","1",a,b,extra columns are ignored',
        "q2,1767225600.25,I,2.5e0,1E+2,a,b,",
        "q3,2026-01-01 00:00:00+00:00,I,2,3,a,b,",
        'q4,1767225600,I," 2.5",1,a,b,',
        "q5,1.7e9,I,-0,1,a,b,",
    ])
    read = read_tape(write_text(tmp / "t.csv", text))
    assert [(t.trade_id, t.ts, t.price, t.qty) for t in read.trades] == [
        ("q1", T0, 2.5, 1.0), ("q2", T0 + 0.25, 2.5, 100.0), ("q3", T0, 2.0, 3.0)]
    assert [(r.row, r.reason) for r in read.rejects] == [
        (4, "invalid_trade: Expected `float`, got `str` - at `$.price`"),
        (5, "invalid_trade: Expected `float` >= 1e-30 - at `$.price`")]


def test_parquet_timestamps_with_a_zone_and_epoch_numbers(tmp: Path) -> None:
    cols = {"trade_id": ["p0", "p1"], "instrument": ["I", "I"], "price": [1.0, 2.0],
            "qty": [1, 2], "buyer": ["a", "a"], "seller": ["b", "b"]}
    utc = [datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 1, 0, 0, 0, 1, tzinfo=UTC)]
    expected = [T0, T0 + 0.000001]
    for ts in (pl.Series(utc), pl.Series(utc).dt.convert_time_zone("America/New_York"),
               pl.Series(utc).cast(pl.Datetime("ns", "UTC")), pl.Series(expected),
               pl.Series([int(T0), int(T0)])):
        pl.DataFrame({"ts": ts, **cols}).write_parquet(tmp / "t.parquet")
        read = read_tape(tmp / "t.parquet")
        assert read.rejects == []
        assert [t.ts for t in read.trades] == (expected if ts.dtype != pl.Int64 else [T0, T0])


def test_parquet_naive_timestamps_are_rejected_row_by_row(tmp: Path) -> None:
    frame = pl.DataFrame({"ts": [datetime(2026, 1, 1), None], "trade_id": ["p0", "p1"],
                          "instrument": ["I", "I"], "price": [1.0, -1.0], "qty": [1.0, 1.0],
                          "buyer": ["a", "a"], "seller": ["b", "b"]})
    frame.write_parquet(tmp / "t.parquet")
    read = read_tape(tmp / "t.parquet")
    assert read.trades == []
    assert [(r.row, r.reason) for r in read.rejects] == [
        (1, "invalid_trade: ts has no time zone: '2026-01-01T00:00:00.000000'"),
        (2, "invalid_trade: Expected `float` >= 1e-30 - at `$.price`")]
    assert json.loads(read.rejects[1].raw)["price"] == -1.0


def test_parquet_typed_columns(tmp: Path) -> None:
    frame = pl.DataFrame({
        "ts": [T0, T0, T0, T0],
        "trade_id": ["p0", "p1", "p2", "p3"],
        "instrument": pl.Series(["I", "I", "J", "J"], dtype=pl.Categorical),
        "price": pl.Series([Decimal("2.50"), Decimal("3"), Decimal("1"), Decimal("0")],
                           dtype=pl.Decimal(10, 2)),
        "qty": pl.Series([1, 2, 3, 4], dtype=pl.Int32),
        "buyer": ["a", "a", "", None], "seller": ["b"] * 4,
        "venue": ["v", None, "v", "v"],
    })
    frame.write_parquet(tmp / "t.parquet")
    read = read_tape(tmp / "t.parquet")
    assert [(t.trade_id, t.instrument, t.price, t.qty, t.venue) for t in read.trades] == [
        ("p0", "I", 2.5, 1.0, "v"), ("p1", "I", 3.0, 2.0, "default")]
    assert [(r.row, r.reason) for r in read.rejects] == [
        (3, "invalid_trade: Object missing required field `buyer`"),
        (4, "invalid_trade: Expected `float` >= 1e-30 - at `$.price`")]
    frame.with_columns(pl.col("price").cast(pl.String)).write_parquet(tmp / "s.parquet")
    strict = read_tape(tmp / "s.parquet")  # typed format: a number held as text is an error
    assert {r.reason for r in strict.rejects} == {
        "invalid_trade: Expected `float`, got `str` - at `$.price`"}


@pytest.mark.parametrize("fmt", FORMATS)
def test_rows_out_of_order_stay_in_file_order(tmp: Path, fmt: str) -> None:
    trades = [trade(3), trade(1), trade(2), trade(0, ts=T0 - 60)]
    write_tape(trades, tmp / f"t.{fmt}")
    assert read_tape(tmp / f"t.{fmt}").trades == trades


def test_dedupe(tmp: Path) -> None:
    trades = [trade(0), trade(1), trade(0, price=99.0), trade(0, venue="v2"), trade(1)]
    write_tape(trades, tmp / "t.jsonl")
    kept, dropped = dedupe(read_tape(tmp / "t.jsonl").trades)
    assert kept == [trade(0), trade(1), trade(0, venue="v2")]
    assert dropped == 2
    assert dedupe([]) == ([], 0)


# --- unreadable files --------------------------------------------------------------------------


def _unreadable(tmp: Path) -> Iterator[tuple[str, Path, str]]:
    yield "missing", tmp / "nope.csv", "no such file"
    (tmp / "dir.csv").mkdir()
    yield "directory", tmp / "dir.csv", "cannot read"
    yield "unknown suffix", write_text(tmp / "t.txt", HEADER), "unknown tape format"
    yield "json is not jsonl", write_text(tmp / "t.json", "[]"), "unknown tape format"
    yield "parquet.gz", write_text(tmp / "t.parquet.gz", "x"), "unknown tape format"
    yield "empty csv", write_text(tmp / "e.csv", ""), "empty: no header"
    yield "agents as a tape", write_text(tmp / "a.csv", "agent_id,owner\nx,y\n"), \
        "not a trade tape: missing column.*ts, trade_id"
    yield "csv missing a column", write_text(tmp / "m.csv", HEADER.replace(",qty", "")), \
        "missing column.*qty"
    yield "repeated column", write_text(tmp / "r.csv", HEADER + ",price"), "repeated column"
    yield "header not utf-8", write_text(tmp / "h.csv", b"ts\xff,x\n"), "not UTF-8"
    yield "not gzip", raw_file(tmp / "n.csv.gz", b"ts,x\n"), "not gzip-compressed"
    yield "gzip named csv", raw_file(tmp / "g.csv", gzip.compress(b"ts")), \
        "gzip-compressed; name it g.csv.gz"
    yield "corrupt parquet", write_text(tmp / "c.parquet", b"PAR1" + b"\0" * 100), \
        "not a readable Parquet"
    yield "text as parquet", write_text(tmp / "x.parquet", HEADER), "not a readable Parquet"
    write_tape(SAMPLE, tmp / "good.parquet")
    yield "parquet as jsonl", write_text(tmp / "p.jsonl", (tmp / "good.parquet").read_bytes()), \
        "a Parquet file"
    pl.DataFrame({"agent_id": ["x"]}).write_parquet(tmp / "agents.parquet")
    yield "parquet without trade columns", tmp / "agents.parquet", "not a trade tape"


def test_unreadable_files_raise(tmp: Path) -> None:
    cases = list(_unreadable(tmp))
    assert len(cases) >= 15
    for _name, path, message in cases:
        with pytest.raises(TapeError, match=message):
            iter_tape(path)  # raised at once, before any row is read
        with pytest.raises(TapeError, match=message):
            read_tape(path)


@pytest.mark.parametrize("fmt", ["csv.gz", "jsonl.gz"])
def test_truncated_gzip_raises_while_reading(tmp: Path, fmt: str) -> None:
    write_tape([trade(i) for i in range(5000)], tmp / f"t.{fmt}")
    data = (tmp / f"t.{fmt}").read_bytes()
    (tmp / f"cut.{fmt}").write_bytes(data[: len(data) // 2])
    with pytest.raises(TapeError, match="cannot read"):
        read_tape(tmp / f"cut.{fmt}")


def test_truncated_parquet_raises(tmp: Path) -> None:
    write_tape([trade(i) for i in range(100)], tmp / "t.parquet")
    data = (tmp / "t.parquet").read_bytes()
    (tmp / "cut.parquet").write_bytes(data[: len(data) // 2])
    with pytest.raises(TapeError, match="Parquet"):
        read_tape(tmp / "cut.parquet")


def test_chunk_rows_must_be_positive(tmp: Path) -> None:
    write_tape(SAMPLE, tmp / "t.csv")
    with pytest.raises(ValueError, match="chunk_rows"):
        iter_tape(tmp / "t.csv", chunk_rows=0)


# --- the bulk judge is the per-row judge ---------------------------------------------------------

zones = st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30)),
                         timezone(-timedelta(hours=23, minutes=59))])
iso_cells = st.builds(
    lambda d, z, sep, digits: d.isoformat(sep=sep, timespec=digits).replace(
        "+00:00", "Z" if z else "+00:00"),
    st.datetimes(min_value=datetime(1960, 1, 1), max_value=datetime(5200, 1, 1),
                 timezones=st.one_of(st.none(), zones)),
    st.booleans(), st.sampled_from(["T", "T", " ", "t"]),
    st.sampled_from(["auto", "seconds", "milliseconds", "microseconds", "minutes", "hours"]))
odd_numbers = st.sampled_from(["-0", "0", "00012", "1.", ".5", "+1", " 1", "1 ", "1_000", "0x10",
                               "nan", "NaN", "inf", "-inf", "Infinity", "1e400", "1e-400",
                               "5e-324", "1E+5", "١٢", "", "true", "null"])
number_cells = st.one_of(
    st.floats(allow_nan=False).map(repr), st.integers(-5, 10**14).map(str),
    st.floats(min_value=0, max_value=2e11).map(lambda f: f"{f:.6e}"), odd_numbers)
text_cells = st.one_of(st.text(st.characters(exclude_categories=["Cs"]), max_size=6),
                       st.just("x" * 257), st.just("x" * 256), st.sampled_from(["", " "]))
cells = {  # anything, for the columns
    "ts": st.one_of(iso_cells, number_cells,
                    st.sampled_from(["2026-02-30T00:00:00Z", "2026-01-01T23:59:60Z",
                                     "2026-01-01T00:00:00.1234567Z", "2026-W01-4T00:00Z",
                                     " 2026-01-01T00:00:00Z", "2026-01-01T00:00:00+24:00",
                                     "0000-01-01T00:00:00Z", "2026-01-01T00:00:00.Z"])),
    "price": number_cells, "qty": number_cells,
    "aggressor": st.sampled_from(["buy", "sell", "", "BUY", "null", "None", "b"]),
    **{c: text_cells for c in ("trade_id", "venue", "instrument", "asset_class", "buyer",
                               "seller")},
}
good_text = st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=6)
good_numbers = st.one_of(st.floats(min_value=MIN_VALUE, max_value=MAX_VALUE).map(repr),
                         st.integers(1, 10**15).map(str),
                         st.floats(min_value=1e-9, max_value=1e9).map(lambda f: f"{f:.4e}"))
good_cells = {  # what valid rows hold, in the spellings tapes use
    "ts": st.one_of(
        st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(5000, 1, 1),
                     timezones=zones).map(lambda d: d.isoformat().replace("+00:00", "Z")),
        st.floats(min_value=0, max_value=9e10).map(repr), st.integers(0, 9 * 10**10).map(str)),
    "price": good_numbers, "qty": good_numbers,
    "aggressor": st.sampled_from(["buy", "sell", ""]),
    **{c: good_text for c in ("trade_id", "venue", "instrument", "asset_class", "buyer",
                              "seller")},
}
# valid rows with up to two cells replaced by anything
csv_rows = st.builds(
    lambda row, changes: {**row, **changes},
    st.fixed_dictionaries(good_cells),
    st.lists(st.sampled_from(list(cells)), max_size=2, unique=True).flatmap(
        lambda keys: st.fixed_dictionaries({k: cells[k] for k in keys})))


def expected_verdicts(rows: list[dict[str, Any]], *, strict: bool,
                      first: int = 1) -> tuple[list[Trade], list[tuple[int, str]]]:
    """What validate_row says of each row, its fields in file order (msgspec names the first
    problem in the order it meets the fields)."""
    trades: list[Trade] = []
    rejects: list[tuple[int, str]] = []
    for i, row in enumerate(rows, first):
        try:
            trades.append(validate_row(row, strict=strict))
        except ValueError as exc:
            rejects.append((i, str(exc)))
    return trades, rejects


def as_csv(rows: list[dict[str, Any]], *, ragged_at: int = -1) -> str:
    """CSV text (``\r\n`` line ends, so a lone ``\r`` in a cell gets quoted); the row at
    ``ragged_at`` gets one field too many."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerow(cells)
    for i, row in enumerate(rows):
        writer.writerow([row[c] for c in cells] + ["surplus"] * (i == ragged_at))
    return buf.getvalue()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(csv_rows, max_size=15))
def test_csv_bulk_judge_is_validate_row(rows: list[dict[str, Any]]) -> None:
    with tempfile.TemporaryDirectory() as d:
        read = read_tape(write_text(Path(d) / "t.csv", as_csv(rows)))
    trades, rejects = expected_verdicts([{c: row[c] for c in cells} for row in rows],
                                        strict=False)
    assert read.trades == trades
    assert [(r.row, r.reason) for r in read.rejects] == rejects
    assert read.rows == len(rows)


floats = st.one_of(st.floats(), st.integers(-10, 10**12).map(float), st.none())
parquet_columns = st.fixed_dictionaries({
    "ts": st.one_of(st.lists(floats, min_size=6, max_size=6),
                    st.lists(st.one_of(iso_cells, text_cells, st.none()), min_size=6,
                             max_size=6)),
    "price": st.lists(floats, min_size=6, max_size=6),
    "qty": st.lists(st.one_of(st.integers(-3, 3), st.none()), min_size=6, max_size=6),
    **{c: st.lists(st.one_of(text_cells, st.none()), min_size=6, max_size=6)
       for c in ("trade_id", "instrument", "buyer", "seller", "venue", "asset_class")},
    "aggressor": st.lists(st.sampled_from(["buy", "sell", "", "BUY", "null", None]),
                          min_size=6, max_size=6),
})


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(parquet_columns)
def test_parquet_bulk_judge_is_validate_row(columns: dict[str, list[Any]]) -> None:
    frame = pl.DataFrame(columns, strict=False)
    with tempfile.TemporaryDirectory() as d:
        frame.write_parquet(Path(d) / "t.parquet")
        read = read_tape(Path(d) / "t.parquet")
    trades, rejects = expected_verdicts(list(frame.iter_rows(named=True)), strict=True)
    assert read.trades == trades
    assert [(r.row, r.reason) for r in read.rejects] == rejects


def test_iso_timestamps_in_bulk_match_python_to_the_last_bit(tmp: Path) -> None:
    stamps = [T0 + k * 0.000001 for k in range(0, 5000, 7)] + [1e9 + 0.1, 99999999999.999]
    write_tape([trade(i, ts=ts) for i, ts in enumerate(stamps)], tmp / "t.csv")
    for fmt in ("csv", "jsonl", "parquet"):
        write_tape(read_tape(tmp / "t.csv").trades, tmp / f"u.{fmt}")
        assert [t.ts for t in read_tape(tmp / f"u.{fmt}").trades] == [
            validate_row({"ts": iso, "trade_id": "x", "instrument": "I", "price": 1,
                          "qty": 1, "buyer": "a", "seller": "b"}).ts
            for iso in pl.read_csv(tmp / "t.csv", infer_schema=False)["ts"]]


# --- chunks ------------------------------------------------------------------------------------

mixed_rows = st.lists(st.one_of(csv_rows, st.builds(
    lambda i: {c: getattr(trade(i), c) or "" for c in cells}, st.integers(0, 50))), max_size=25)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mixed_rows, st.integers(1, 7), st.sampled_from(["csv", "parquet", "jsonl"]),
       st.integers(-1, 30))
def test_chunks_equal_the_whole_file(rows: list[dict[str, Any]], chunk_rows: int, fmt: str,
                                     ragged_at: int) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / f"t.{fmt}"
        if fmt == "csv":  # a ragged row: pyarrow refuses it, the csv module takes over
            write_text(path, as_csv(rows, ragged_at=ragged_at))
        elif fmt == "parquet":
            pl.DataFrame(rows, schema=dict.fromkeys(cells, pl.String)).write_parquet(path)
        else:
            write_text(path, "".join(json.dumps(r) + "\n" for r in rows))
        whole = read_tape(path)
        chunks = list(iter_tape(path, chunk_rows=chunk_rows))
    assert all(0 < c.rows <= chunk_rows for c in chunks)
    assert sum(c.rows for c in chunks) == whole.rows == len(rows)
    assert [t for c in chunks for t in c.trades] == whole.trades
    assert [r for c in chunks for r in c.rejects] == whole.rejects
    for c in chunks:
        assert c.frame.height == len(c.trades)
        assert tape._trades_of(c.frame) == c.trades


def test_many_blocks_and_a_late_fallback(tmp: Path) -> None:
    trades = [trade(i, asset_class="compute") for i in range(30_000)]
    write_tape(trades, tmp / "t.csv")
    lines = (tmp / "t.csv").read_text().splitlines()
    lines[25_001] += ",surplus"  # data row 25,001
    write_text(tmp / "r.csv", "\n".join(lines) + "\n")
    for chunk_rows in (4_096, 50_000):
        read = read_tape(tmp / "t.csv")
        assert read.trades == trades
        chunks = list(iter_tape(tmp / "r.csv", chunk_rows=chunk_rows))
        got = [t for c in chunks for t in c.trades]
        assert got == trades[:25_000] + trades[25_001:]
        assert [(r.row, r.reason) for c in chunks for r in c.rejects] == [
            (25_001, "bad_csv: 11 fields where the header has 10")]


# --- agents and labels -------------------------------------------------------------------------

AGENTS = [Agent(agent_id="bot-1", owner="acme", funded_by="0xf", created_ts=T0, kind="gpu"),
          Agent(agent_id="bot-2"),
          Agent(agent_id="bot-3", created_ts=T0 + 0.5, venue="v")]


@pytest.mark.parametrize("fmt", FORMATS)
def test_agents_every_format(tmp: Path, fmt: str) -> None:
    rows: list[dict[str, Any]] = [
        {"agent_id": "bot-1", "owner": "acme", "funded_by": "0xf",
         "created_ts": "2026-01-01T00:00:00Z", "kind": "gpu", "venue": None},
        {"agent_id": "bot-2", "owner": "", "funded_by": None, "created_ts": None, "kind": None,
         "venue": None},
        {"agent_id": "", "owner": "x", "funded_by": None, "created_ts": None, "kind": None,
         "venue": None},
        {"agent_id": "bot-4", "owner": None, "funded_by": None,
         "created_ts": "2026-01-01T00:00:00", "kind": None, "venue": None},
        {"agent_id": "bot-3", "owner": None, "funded_by": None,
         "created_ts": {"csv": "1767225600.5", "jsonl": T0 + 0.5,
                        "parquet": "2026-01-01T00:00:00.5Z"}[fmt.removesuffix(".gz")],
         "kind": None, "venue": "v"},
    ]
    path = tmp / f"agents.{fmt}"
    if fmt == "parquet":
        pl.DataFrame(rows, schema=dict.fromkeys(rows[0], pl.String)).write_parquet(path)
    elif fmt.startswith("csv"):
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        write_text(path, buf.getvalue())
    else:
        write_text(path, "".join(json.dumps(r) + "\n" for r in rows))
    read = read_agents(path)
    assert isinstance(read, AgentsRead)
    assert read.rows == 5
    assert read.agents == AGENTS
    assert [r.row for r in read.rejects] == [3, 4]
    assert read.rejects[0].reason.startswith("invalid_agent: Object missing required field")
    assert read.rejects[1].reason == \
        "invalid_agent: created_ts has no time zone: '2026-01-01T00:00:00'"


def test_agents_from_typed_parquet(tmp: Path) -> None:
    pl.DataFrame({"agent_id": ["bot-1", "bot-2"],
                  "created_ts": [datetime(2026, 1, 1, tzinfo=UTC), None],
                  "kind": pl.Series(["gpu", None], dtype=pl.Categorical)}
                 ).write_parquet(tmp / "a.parquet")
    assert read_agents(tmp / "a.parquet").agents == [
        Agent(agent_id="bot-1", created_ts=T0, kind="gpu"), Agent(agent_id="bot-2")]


def test_agent_files_need_an_agent_id_column(tmp: Path) -> None:
    with pytest.raises(TapeError, match="not an agent registry: missing column.*agent_id"):
        read_agents(write_text(tmp / "a.csv", HEADER + "\n"))
    pl.DataFrame({"id": [1]}).write_parquet(tmp / "a.parquet")
    with pytest.raises(TapeError, match="agent_id"):
        read_agents(tmp / "a.parquet")
    read = read_agents(write_text(tmp / "a.jsonl", '{"id": 1}\n[1]\nnope\n'))
    assert read.agents == []
    assert [r.reason.split(":")[0] for r in read.rejects] == [
        "invalid_agent", "invalid_agent", "bad_json"]


LABELS: list[dict[str, Any]] = [
    {"kind": "flash_crash", "t_start": "2026-01-01T00:00:30.000000Z",
     "t_end": "2026-01-01T00:01:50.000000Z", "instruments": ["GPU-H100-1H"], "agents": [],
     "note": "planted move of -30% over 20 s"},
    {"kind": "wash_trade", "t_start": "2026-01-01T01:00:00+01:00",
     "t_end": "2026-01-01T00:00:00Z", "instruments": [], "agents": ["bot-1", "bot-2"],
     "seed": 7},
]


@pytest.mark.parametrize("name", ["labels.jsonl", "labels.jsonl.gz"])
def test_labels_round_trip(tmp: Path, name: str) -> None:
    write_labels(LABELS, tmp / name)
    assert read_labels(tmp / name) == LABELS


def test_invalid_labels_are_refused(tmp: Path) -> None:
    bad = [LABELS[0], {**LABELS[0], "kind": "spoofing"}, {**LABELS[0], "agents": None},
           {**LABELS[0], "t_start": "2026-01-01T00:03:00Z"}]
    path = tmp / "labels.jsonl"
    write_text(path, "\n".join(json.dumps(label) for label in bad) + "\n\n{oops\n")
    with pytest.raises(TapeError) as info:
        read_labels(path)
    message = str(info.value)
    assert "4 invalid label(s)" in message
    assert "line 2: kind: 'spoofing' is not one of" in message
    assert "line 3: agents: None is not of type 'array'" in message
    assert "line 4: t_start 2026-01-01T00:03:00Z is after t_end" in message
    assert "line 6: JSON is malformed" in message
    with pytest.raises(TapeError, match="label 2: .*kind"):
        write_labels(bad[:2], tmp / "new.jsonl")
    assert not (tmp / "new.jsonl").exists()
    with pytest.raises(TapeError, match="labels are JSON lines"):
        write_labels(LABELS, tmp / "labels.csv")


def test_reject_is_a_small_value() -> None:
    r = RowReject(3, "bad_csv: x", "a,b")
    assert (r.row, r.reason, r.raw) == (3, "bad_csv: x", "a,b")
    with pytest.raises(AttributeError):
        r.row = 4  # type: ignore[misc]
