"""The worker's wiring: decoding, records under a size limit, confirmed delivery and rollback."""

from __future__ import annotations

import asyncio
from pathlib import Path

import msgspec
import pytest
from test_recovery import alert_key, expected, halt_key, publish, tape_spec

from replay.synthetic import Episode, FeedSpec, generate
from streams.app import MemorySink, RawMessage, decode_messages
from streams.contracts import Bar, Rejected, encode
from streams.outputs import to_records
from streams.pipeline import EngineOutput
from streams.settings import Settings
from streams.topics import Topics, ensure_topics
from streams.worker import Worker

SETTINGS = Settings(brokers="127.0.0.1:1", topic_prefix="t.")
T0 = 1_767_225_600.0


def crash_messages() -> list[bytes]:
    spec = FeedSpec(seed=5, rate=10, episodes=(Episode(instrument="GPU-H100-1H", start_s=400,
                                                       depth=-0.3),))
    trades = generate(spec, start=1_700_000_000.0, duration_s=600)
    return [encode(trades[i:i + 500]) for i in range(0, len(trades), 500)]


def test_decode_messages_reports_empty_values_and_keeps_good_trades() -> None:
    good = crash_messages()[0]
    trades, rejected, sources = decode_messages([
        RawMessage(None, "trades", 0, 1, b"k"), RawMessage(good, "trades", 0, 2, None),
        RawMessage(b"\xff", "trades", 1, 3, None)], with_sources=True)
    assert len(trades) == 500 == len(sources)
    assert {s["offset"] for s in sources} == {2}
    assert [(r.reason.split(":")[0], r.source["offset"]) for r in rejected] == [
        ("bad_json", 1), ("bad_encoding", 3)]


def test_outputs_are_split_under_the_message_size_limit() -> None:
    """Arrays of 500 trades over 1,000 instruments once made a 5.6 MB bars message."""
    bars = [Bar(venue="v", instrument=f"I{i:04d}", ts="2026-01-01T00:00:00Z", open=1.0,
                high=1.0, low=1.0, close=1.0, volume=1.0, notional=1.0, trades=1)
            for i in range(40_000)]
    huge = Rejected("bad_json: x", b"\xff" * 3_000_000, None, {"key": "k"})
    records = to_records(SETTINGS, EngineOutput(bars=bars), [huge])
    assert max(len(v) for _, _, v in records) <= SETTINGS.max_message_bytes
    sent = sum(len(msgspec.json.decode(v)) for t, _, v in records if t == "t.bars")
    assert sent == len(bars)
    dead = next(msgspec.json.decode(v) for t, _, v in records if t == "t.trades.dlq")
    assert dead["raw_truncated"] is True
    assert dead["raw_size"] == 3_000_000
    assert len(dead["raw_sha256"]) == 64


@pytest.mark.integration
@pytest.mark.slow
def test_a_sink_failing_mid_batch_rolls_back_and_loses_nothing(broker: str, topic_prefix: str,
                                                               tmp_path: Path) -> None:
    topics = Topics(topic_prefix)
    ensure_topics(broker, topics.all(), partitions=4)
    tape = generate(tape_spec("sink"), start=T0, duration_s=1500)
    want_alerts, want_halts = expected(tape, tmp_path)
    settings = Settings(brokers=broker, topic_prefix=topic_prefix, data_dir=tmp_path,
                        session_timeout_s=6, checkpoint_interval_s=0.5, batch_messages=8)
    sink = MemorySink()

    async def main() -> Worker:
        worker = Worker(settings, sink=sink)
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run(stop))
        await asyncio.wait_for(worker.ready.wait(), 60)
        publish(broker, topics.trades, tape[: len(tape) // 3])
        await asyncio.sleep(2)  # checkpoints happen; then deliveries start failing mid-batch
        sink.fail_after = 1
        publish(broker, topics.trades, tape[len(tape) // 3:])
        for _ in range(600):
            got_h = {halt_key(v) for v in sink.decoded(topics.halts)}
            if got_h >= want_halts and sink.failures:
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(1)
        stop.set()
        await task
        return worker

    worker = asyncio.run(main())
    assert sink.failures == 1
    assert worker.counters.rollbacks >= 1
    assert {alert_key(v) for v in sink.decoded(topics.alerts)} == want_alerts
    assert {halt_key(v) for v in sink.decoded(topics.halts)} == want_halts
