"""``surveil replay``: event-time order, batching, count — read back by an independent client."""

from __future__ import annotations

import random
from pathlib import Path

import msgspec
import pytest
from kafka_helpers import read_topics, run_surveil

from replay.backtest import event_order
from replay.publish import pace, to_messages
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
    assert max(len(c) for c in chunks) == 300
    messages = to_messages(trades[:1000], max_batch=100)
    per_key: dict[bytes, list[str]] = {}
    for key, value in messages:
        per_key.setdefault(key, []).extend(t["trade_id"] for t in msgspec.json.decode(value))
    for key, ids in per_key.items():
        assert ids == [t.trade_id for t in trades[:1000] if t.instrument.encode() == key]


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
