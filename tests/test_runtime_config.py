"""Runtime-tunable thresholds: validated whole, applied from their effective time in event order
whatever the batching, and the same live (through the broker) as in the backtest."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest

from detectors.market import MarketConfig
from replay.backtest import run_backtest
from replay.synthetic import Episode, FeedSpec, generate
from replay.tape import write_tape
from streams.pipeline import EngineOutput, Surveillance
from streams.runtime_config import TUNABLE, ConfigBook, ConfigError, validate

T0 = 1_767_225_600.0
CRASH_AT = 900.0
LOOSE = {k: v for k, v in {
    "band_floor": 0.45, "band_cap": 0.6, "velocity_floor": 0.5, "velocity_cap": 0.6,
    "spike_floor": 0.9, "spike_cap": 1.0, "dynamic_floor": 0.6, "dynamic_cap": 0.7,
    "cold_band": 0.5, "cold_spike": 0.9}.items() if k in TUNABLE}


def change(scope: str = "instrument:GPU-H100-1H", settings: dict[str, Any] | None = None,
           at: float = T0 + 600, cid: str = "c1", **extra: Any) -> dict[str, Any]:
    return {"schema": "config/1", "change_id": cid, "scope": scope,
            "settings": LOOSE if settings is None else settings, "effective_ts": at,
            "user": "supervisor-1", "note": "loosen for the test", **extra}


@pytest.mark.parametrize(("doc", "reason"), [
    (change(settings={"ref_window_s": 60}), "not tunable at runtime: ref_window_s"),
    (change(settings={"band_floor": float("nan")}), "need a finite number"),
    (change(settings={"band_floor": -0.1}), "need a finite number >= 0"),
    (change(settings={"band_floor": "0.1"}), "need a finite number"),
    (change(settings={"band_floor": 0.5}), "band_floor 0.5 is above band_cap 0.3"),
    (change(scope="planet:mars"), "scope 'planet:mars'"),
    (change(user=""), "user must be a non-empty string"),
    (change(at="yesterday"), "effective_ts"),
    ({**change(), "schema": "config/2"}, "schema"),
])
def test_a_bad_change_is_refused_whole_with_its_reason(doc: dict[str, Any], reason: str) -> None:
    with pytest.raises(ConfigError, match=reason.replace("(", r"\(")):
        validate(doc, MarketConfig())


def test_the_most_specific_scope_wins_from_its_effective_time() -> None:
    book = ConfigBook(MarketConfig())
    for doc in (change("*", {"band_floor": 0.07}, at=100.0, cid="a"),
                change("class:energy", {"band_floor": 0.03}, at=200.0, cid="b"),
                change("instrument:v/KWH", {"band_floor": 0.02}, at=300.0, cid="c"),
                change("class:energy", {"band_floor": 0.04}, at=400.0, cid="d")):
        book.add(validate(doc, MarketConfig()))
    floor = [book.resolve("v", "KWH", "energy", t).band_floor for t in (50, 150, 250, 350, 450)]
    assert floor == [0.05, 0.07, 0.03, 0.02, 0.02]
    assert book.resolve("w", "KWH", "energy", 450).band_floor == 0.04  # other venue
    assert book.resolve("v", "GPU", "compute", 450).band_floor == 0.07
    book.add(validate(change("*", {"band_floor": 0.07}, at=100.0, cid="a"), MarketConfig()))
    assert book.stats["duplicates"] == 1


def tape() -> list[Any]:
    return generate(FeedSpec(seed=5, rate=6, episodes=(
        Episode(instrument="GPU-H100-1H", start_s=CRASH_AT, depth=-0.3),)),
        start=T0, duration_s=1500)


def judged(batch: int, changes: list[dict[str, Any]]) -> EngineOutput:
    engine = Surveillance(emit_bars=False)
    for doc in changes:
        engine.configure(validate(doc, engine.config))
    trades, out = tape(), EngineOutput()
    for i in range(0, len(trades), batch):
        out.extend(engine.process(trades[i:i + batch]))
    out.extend(engine.flush())
    return out


def keys(out: EngineOutput) -> list[tuple[Any, ...]]:
    return sorted((h.instrument, h.seq, h.state, h.reason) for h in out.halts)


def test_a_change_applies_from_its_effective_time_whatever_the_batching() -> None:
    plain = judged(500, [])
    assert any(h.instrument == "GPU-H100-1H" for h in plain.halts)
    loose = [judged(b, [change()]) for b in (1, 37, 500, 5000)]
    assert all(keys(o) == keys(loose[0]) for o in loose[1:])
    assert keys(loose[0]) != keys(plain)  # the loosened instrument is judged otherwise
    others = [k for k in keys(plain) if k[0] != "GPU-H100-1H"]
    assert [k for k in keys(loose[0]) if k[0] != "GPU-H100-1H"] == others
    late = judged(500, [change(at=T0 + CRASH_AT + 3600)])  # effective after the tape
    assert keys(late) == keys(plain)


def test_backtest_takes_a_timeline_file_and_names_a_bad_line(tmp_path: Path) -> None:
    write_tape(tape(), tmp_path / "t.parquet")
    timeline = tmp_path / "config.jsonl"
    timeline.write_bytes(msgspec.json.encode(change()) + b"\n")
    with_cfg = run_backtest(tmp_path / "t.parquet", out_dir=tmp_path / "a",
                            settings_timeline=timeline).out
    assert keys(with_cfg) == keys(judged(500, [change()]))
    timeline.write_bytes(msgspec.json.encode(change(settings={"nope": 1})) + b"\n")
    with pytest.raises(ConfigError, match="config.jsonl:1: not tunable"):
        run_backtest(tmp_path / "t.parquet", out_dir=tmp_path / "b", settings_timeline=timeline)


@pytest.mark.integration
def test_live_worker_applies_a_change_at_its_effective_time_like_the_backtest(
        broker: str, topic_prefix: str, tmp_path: Path) -> None:
    from kafka_helpers import read_topics, run_surveil
    from test_recovery import STAGE1_STARTED, halt_key, paced, start_worker, stop, wait_log

    from streams.topics import Topics, ensure_topics

    topics = Topics(topic_prefix)
    ensure_topics(broker, topics.all(), partitions=4)
    out = run_surveil(broker, topic_prefix, "config", "set", "instrument:GPU-H100-1H",
                      *(f"{k}={v}" for k, v in LOOSE.items()), "--note", "loosen for the test",
                      "--user", "supervisor-1", "--at", str(T0 + 600))
    assert '"scope": "instrument:GPU-H100-1H"' in out
    bad = run_surveil(broker, topic_prefix, "config", "get", "--history",
                      "--export", str(tmp_path / "timeline.jsonl"))
    assert "supervisor-1" in bad
    # a forged record straight onto the topic: refused whole, with its reason, in the DLQ
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=broker)
    producer.send(topics.config, key=b"*", value=msgspec.json.encode(
        change("*", {"band_floor": 5.0}, cid="forged")))
    producer.flush()
    producer.close()

    trades = tape()
    write_tape(trades, tmp_path / "t.parquet")
    want = {halt_key(msgspec.to_builtins(h)) for h in run_backtest(
        tmp_path / "t.parquet", out_dir=tmp_path / "bt",
        settings_timeline=tmp_path / "timeline.jsonl").out.halts}
    worker = start_worker(broker, topic_prefix, tmp_path / "w.log")
    try:
        wait_log(tmp_path / "w.log", STAGE1_STARTED)
        paced(broker, topics.trades, trades, chunk_s=30.0, pause=0.1)

        def done(records: list[tuple[str, Any]]) -> bool:
            got = {halt_key(v) for t, v in records if t == topics.halts and "seq" in v}
            dlq = [v for t, v in records if t == topics.dlq]
            return got >= want and any("bad_config" in str(v.get("reason")) for v in dlq)

        records = read_topics(broker, [topics.halts, topics.dlq], until=done, timeout=120,
                              settle=2)
    finally:
        stop(worker)
    got = {halt_key(v) for t, v in records if t == topics.halts and "seq" in v}
    assert got == want
    reasons = [v["reason"] for t, v in records if t == topics.dlq]
    assert any(r.startswith("bad_config: band_floor 5 is above band_cap") for r in reasons)
