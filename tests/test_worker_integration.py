"""The worker for real: embedded broker, ``surveil worker`` process, independent Kafka client."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest
from kafka_helpers import read_topics, run_surveil, running_worker

from replay.backtest import run_backtest
from replay.publish import BatchPublisher
from replay.synthetic import Episode, FeedSpec, generate
from replay.tape import write_tape
from streams.contracts import encode, parse_ts
from streams.topics import Topics, ensure_topics

pytestmark = [pytest.mark.integration, pytest.mark.slow]

T0 = 1_767_225_600.0


def crash_tape(venue: str, seed: int = 11) -> FeedSpec:
    return FeedSpec(seed=seed, rate=15, venue=venue, episodes=(
        Episode(instrument="GPU-H100-1H", start_s=500, depth=-0.3),
        Episode(instrument="BW-10G-1H", start_s=900, depth=2.0, ramp_s=10),
        Episode(instrument="KWH-SA-GRID", start_s=1300, depth=-0.12, ramp_s=120, hold_s=120)))


def test_a_crash_on_trades_becomes_a_halt_on_halts(broker: str, topic_prefix: str,
                                                   tmp_path: Path) -> None:
    topics = Topics(topic_prefix)
    ensure_topics(broker, topics.all())
    trades = generate(FeedSpec(seed=3, rate=20, venue="v1", episodes=(
        Episode(instrument="GPU-H100-1H", start_s=400, depth=-0.3),)), start=T0, duration_s=600)
    with running_worker(broker, topic_prefix, tmp_path / "worker.log"):
        pub = BatchPublisher(broker, topics.trades)
        pub.send(trades)
        pub.close()
        records = read_topics(broker, [topics.halts, topics.alerts],
                              until=lambda r: any(t == topics.halts for t, _ in r), settle=2)
    halts = [v for t, v in records if t == topics.halts]
    alerts = {v["alert_id"]: v for t, v in records if t == topics.alerts}
    first = halts[0]
    assert (first["instrument"], first["state"], first["reason"]) == (
        "GPU-H100-1H", "PAUSED", "VELOCITY")
    assert first["schema"] == "halt/1"
    assert first["venue"] == "v1"
    assert T0 + 400 < parse_ts(first["ts"]) < T0 + 460  # inside the planted crash
    assert set(first["alert_ids"]) <= set(alerts)
    assert alerts[first["alert_ids"][0]]["kind"] == "flash_crash"


def test_malformed_messages_go_to_the_dead_letter_topic(broker: str, topic_prefix: str,
                                                        tmp_path: Path) -> None:
    topics = Topics(topic_prefix)
    ensure_topics(broker, topics.all())
    good = generate(FeedSpec(seed=4, rate=5, venue="v2"), start=T0, duration_s=3)
    mixed = b"[" + encode(good[0]) + b', {"ts": 1, "price": -1}, ' + encode(good[1]) + b"]"
    pub = BatchPublisher(broker, topics.trades)
    for value in (b"{not json", b"\xff\xfe\x00", mixed, b'{"ts": "yesterday"}', b"[]"):
        pub.send_raw(value, b"k")
    pub.send(good[2:])
    pub.close()
    with running_worker(broker, topic_prefix, tmp_path / "worker.log"):
        records = read_topics(broker, [topics.dlq, topics.bars],
                              until=lambda r: sum(t == topics.dlq for t, _ in r) >= 4, settle=3)
    dlq = [v for t, v in records if t == topics.dlq]
    reasons = sorted((d["source"]["offset"], d["index"], d["reason"].split(":")[0]) for d in dlq)
    assert reasons == [(0, None, "bad_json"), (1, None, "bad_encoding"), (2, 1, "invalid_trade"),
                       (3, None, "invalid_trade")]
    assert all(d["source"]["topic"] == topics.trades and d["source"]["key"] == "k" for d in dlq)
    assert next(d for d in dlq if d["raw_encoding"] == "base64")["raw"] == "//4A"
    # the valid trades around the bad one were judged: they are counted in the bars
    counted = sum(b["trades"] for t, v in records if t == topics.bars for b in v)
    assert counted >= 2


def test_live_worker_and_backtest_agree(broker: str, topic_prefix: str, tmp_path: Path) -> None:
    """Parity: the same tape through ``surveil replay`` + ``surveil worker`` and through
    ``surveil backtest`` gives the same alerts and halts."""
    topics = Topics(topic_prefix)
    ensure_topics(broker, topics.all())
    tape = tmp_path / "tape.parquet"
    write_tape(generate(crash_tape("v3"), start=T0, duration_s=1900), tape)
    offline = run_backtest(tape, out_dir=tmp_path / "bt").out
    assert {h.reason for h in offline.halts} >= {"VELOCITY", "SPIKE", "LUDP", "RESUME"}
    expected = len(offline.alerts) + len(offline.halts)

    with running_worker(broker, topic_prefix, tmp_path / "worker.log"):
        run_surveil(broker, topic_prefix, "replay", str(tape), "--speed", "max")
        records = read_topics(broker, [topics.alerts, topics.halts],
                              until=lambda r: len(r) >= expected, settle=3)

    def alert_key(a: dict[str, object]) -> tuple[object, ...]:
        return (a["alert_id"], a["kind"], a["instrument"], a["ts"], a["score"], a["summary"])

    def halt_key(h: dict[str, object]) -> tuple[object, ...]:
        return (h["venue"], h["instrument"], h["seq"], h["ts"], h["state"], h["reason"],
                h["resume_at"], tuple(h["alert_ids"]))  # type: ignore[arg-type]

    live_alerts = sorted(alert_key(v) for t, v in records if t == topics.alerts)
    live_halts = sorted(halt_key(v) for t, v in records if t == topics.halts)
    assert live_alerts == sorted(alert_key(msgspec.to_builtins(a)) for a in offline.alerts)
    assert live_halts == sorted(halt_key(msgspec.to_builtins(h)) for h in offline.halts)
