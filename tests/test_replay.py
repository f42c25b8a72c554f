"""``surveil replay``: event-time order, batching, count — read back by an independent client."""

from __future__ import annotations

import random
from pathlib import Path

import msgspec
import pytest
from kafka_helpers import read_topics, run_surveil

from replay.backtest import event_order
from replay.publish import MAX_SPAN_S, pace, pace_stream, to_messages
from replay.reorder import OrderedTape
from replay.synthetic import FeedSpec, generate
from replay.tape import write_tape
from streams.contracts import Trade
from streams.topics import Topics, ensure_topics

T0 = 1_767_225_600.0


def shuffled_tape(n_seconds: float = 120) -> list[Trade]:
    """A tape whose rows are slightly out of order, as exchange tapes can be."""
    trades = generate(FeedSpec(seed=9, rate=10), start=T0, duration_s=n_seconds)
    rng = random.Random(1)
    for i in range(0, len(trades) - 3, 7):  # swap neighbours here and there
        j = i + rng.randint(1, 3)
        trades[i], trades[j] = trades[j], trades[i]
    return trades


def test_pace_keeps_order_and_count_and_batches() -> None:
    trades = event_order(shuffled_tape())
    chunks = list(pace(trades, None, max_batch=300))
    assert [t.trade_id for c in chunks for t in c] == [t.trade_id for t in trades]
    assert max(len(c) for c in chunks) <= 300
    # as fast as possible, a chunk still spans at most MAX_SPAN_S of event time
    assert max(float(c[-1].ts) - float(c[0].ts) for c in chunks) <= MAX_SPAN_S  # type: ignore[arg-type]
    assert len(list(pace(trades[:2000], None, max_batch=10_000))) > 1
    dense = [msgspec.structs.replace(t, ts=T0) for t in trades[:1000]]
    assert max(len(c) for c in pace(dense, None, max_batch=300)) == 300
    messages = to_messages(trades[:1000], max_batch=100)
    per_key: dict[bytes, list[str]] = {}
    for key, value in messages:
        per_key.setdefault(key, []).extend(t["trade_id"] for t in msgspec.json.decode(value))
    for key, ids in per_key.items():
        assert ids == [t.trade_id for t in trades[:1000] if t.instrument.encode() == key]


def test_pace_stream_is_pace_for_a_lazy_stream() -> None:
    trades = event_order(shuffled_tape(20))
    for speed in (None, 1e6):
        expected = [[t.trade_id for t in c] for c in pace(trades, speed, max_batch=70)]
        got = [[t.trade_id for t in c] for c in pace_stream(iter(trades), speed, max_batch=70)]
        assert got == expected
    assert list(pace_stream(iter([]), 1.0)) == list(pace([], None)) == []


def test_replay_order_is_the_backtest_order(tmp_path: Path) -> None:
    """Both commands read a tape through :class:`OrderedTape`: for a tape disordered within
    the horizon that is the stable sort by ``ts``."""
    trades = shuffled_tape()
    write_tape(trades, tmp_path / "t.parquet")
    tape = OrderedTape(tmp_path / "t.parquet", batch_size=128)
    assert [t.trade_id for c in tape for t in c.trades] == [t.trade_id for t in
                                                            event_order(trades)]


@pytest.mark.integration
def test_replay_publishes_every_row_once_in_event_time_order(broker: str, topic_prefix: str,
                                                             tmp_path: Path) -> None:
    topics = Topics(topic_prefix)
    ensure_topics(broker, topics.all())
    trades = shuffled_tape()
    tape = tmp_path / "tape.csv"
    write_tape(trades, tape)
    bad = tmp_path / "bad.csv"
    lines = tape.read_text().splitlines()
    bad.write_text("\n".join([*lines[:5], lines[5].replace(",", ",,", 1), *lines[6:]]) + "\n")
    out = run_surveil(broker, topic_prefix, "replay", str(bad), "--speed", "max",
                      "--batch", "200")
    assert "1 of" in out  # the broken row is counted and reported, the rest published
    records = read_topics(broker, [topics.trades],
                          until=lambda r: sum(len(v) for _, v in r) >= len(trades) - 1,
                          settle=2)
    got = [t for _, batch in records for t in batch]
    assert len(got) == len(trades) - 1
    assert all(len(batch) <= 200 for _, batch in records)
    expected = [t for t in event_order(trades) if t.trade_id != trades[4].trade_id]
    for instrument in {t.instrument for t in trades}:  # Kafka orders per key = per instrument
        assert [t["trade_id"] for t in got if t["instrument"] == instrument] == [
            t.trade_id for t in expected if t.instrument == instrument]


@pytest.mark.integration
def test_replay_publishes_a_late_row_where_the_backtest_judges_it(broker: str, topic_prefix: str,
                                                                  tmp_path: Path) -> None:
    """A row far behind the tape is published late, at the place the backtest judges it."""
    topics = Topics(topic_prefix)
    ensure_topics(broker, topics.all())
    trades = generate(FeedSpec(seed=2, rate=1), start=T0, duration_s=700)
    trades.insert(len(trades) - 5, msgspec.structs.replace(trades[0], trade_id="straggler"))
    tape = tmp_path / "tape.jsonl"
    write_tape(trades, tape)
    out = run_surveil(broker, topic_prefix, "replay", str(tape), "--speed", "max")
    assert "1 rows more than 300 s out of event-time order published late" in out
    assert f"published {len(trades)} trades" in out
    records = read_topics(broker, [topics.trades],
                          until=lambda r: sum(len(v) for _, v in r) >= len(trades), settle=1)
    got = [t for _, batch in records for t in batch]
    expected = [t for c in OrderedTape(tape) for t in c.trades]
    assert [t.trade_id for t in expected] != [t.trade_id for t in event_order(trades)]
    instrument = trades[0].instrument
    assert [t["trade_id"] for t in got if t["instrument"] == instrument] == [
        t.trade_id for t in expected if t.instrument == instrument]
