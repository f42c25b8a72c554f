"""Faust agent tests (``agent.test_context()``): the wiring without a broker."""

from __future__ import annotations

import msgspec
import pytest

from replay.synthetic import Episode, FeedSpec, generate
from streams.app import MemorySink, RawMessage, create_app, decode_messages
from streams.contracts import encode
from streams.settings import Settings

SETTINGS = Settings(brokers="127.0.0.1:1", topic_prefix="t.")


def crash_messages() -> list[bytes]:
    spec = FeedSpec(seed=5, rate=10, episodes=(Episode(instrument="GPU-H100-1H", start_s=400,
                                                       depth=-0.3),))
    trades = generate(spec, start=1_700_000_000.0, duration_s=600)
    return [encode(trades[i:i + 500]) for i in range(0, len(trades), 500)]


async def test_agent_turns_a_crash_into_alerts_halts_and_bars() -> None:
    sink = MemorySink()
    app = create_app(SETTINGS, sink=sink)
    app.finalize()
    async with app.judge.test_context() as agent:
        messages = crash_messages()
        for value in messages:
            await agent.put(value, key=b"GPU-H100-1H", partition=0, wait=False)
        await agent.put(b'[{"ts": 1}, 7]', key=b"bad", partition=0, wait=False)
        # the agent batches with take_events(within=...): wait until the last batch is out
        for _ in range(200):
            if any(t == "t.trades.dlq" for t, _, _ in sink.sent):
                break
            await app.judge.sleep(0.05)
    by_topic: dict[str, list[bytes]] = {}
    for topic, _, value in sink.sent:
        by_topic.setdefault(topic, []).append(value)
    halts = [msgspec.json.decode(v) for v in by_topic["t.halts"]]
    assert [(h["state"], h["reason"]) for h in halts][:1] == [("PAUSED", "VELOCITY")]
    alerts = [msgspec.json.decode(v) for v in by_topic["t.alerts"]]
    assert alerts[0]["kind"] == "flash_crash"
    assert halts[0]["alert_ids"] == [alerts[0]["alert_id"]]
    assert sum(len(msgspec.json.decode(v)) for v in by_topic["t.bars"]) > 300
    dlq = [msgspec.json.decode(v) for v in by_topic["t.trades.dlq"]]
    assert [(d["index"], d["reason"].split(":")[0]) for d in dlq] == [
        (0, "invalid_trade"), (1, "invalid_trade")]
    assert dlq[0]["source"]["offset"] == len(messages)  # the test channel numbers puts from 0
    assert dlq[0]["source"]["key"] == "bad"


def test_decode_messages_reports_empty_values_and_keeps_good_trades() -> None:
    good = crash_messages()[0]
    trades, rejected = decode_messages([
        RawMessage(None, "trades", 0, 1, b"k"), RawMessage(good, "trades", 0, 2, None),
        RawMessage(b"\xff", "trades", 1, 3, None)])
    assert len(trades) == 500
    assert [(r.reason.split(":")[0], r.source["offset"]) for r in rejected] == [
        ("bad_json", 1), ("bad_encoding", 3)]


@pytest.mark.parametrize("brokers", ["a:1", "a:1,b:2"])
def test_app_takes_every_bootstrap_server(brokers: str) -> None:
    app = create_app(Settings(brokers=brokers))
    assert [str(u) for u in app.conf.broker] == [f"kafka://{b}" for b in brokers.split(",")]
