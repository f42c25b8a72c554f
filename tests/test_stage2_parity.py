"""Backtest/live parity with the stage-2 detectors on: a simulated day with planted wash trades,
circular trading, a Sybil swarm, a flash crash and colluding sellers, published on ``trades``
with 4 partitions to two real worker processes (both stages each), after forged watermarks on
``flows``; alerts and halts read back with an independent client equal the backtest's."""

from __future__ import annotations

from pathlib import Path

import pytest
from kafka_helpers import surveil_env  # noqa: F401 - the workers' environment (via start_worker)
from test_recovery import (
    STAGE1_STARTED,
    alert_key,
    collect,
    halt_key,
    paced,
    start_worker,
    stop,
    wait_log,
)

from replay.backtest import run_backtest
from replay.market.sim import simulate, write_outputs
from streams.contracts import encode
from streams.topics import Topics, ensure_topics

pytestmark = [pytest.mark.integration, pytest.mark.slow]

AGENT_KINDS = {"wash_trade", "circular_trading", "sybil_cluster", "price_collusion", "anomaly"}


def test_two_workers_on_four_partitions_give_the_backtests_stage2_alerts(
        broker: str, topic_prefix: str, tmp_path: Path) -> None:
    import msgspec
    from kafka import KafkaProducer

    sim = simulate("mixed", seed=3, duration_s=2400)
    paths = write_outputs(sim, tmp_path / "sim")
    out = run_backtest(paths["tape"], out_dir=tmp_path / "bt", agents=paths["agents"]).out
    want_alerts = {alert_key(msgspec.to_builtins(a)) for a in out.alerts}
    want_halts = {halt_key(msgspec.to_builtins(h)) for h in out.halts}
    assert {a[1] for a in want_alerts} & AGENT_KINDS, "the backtest raised no agent-level alert"

    topics = Topics(topic_prefix)
    ensure_topics(broker, topics.all(), partitions=4)
    producer = KafkaProducer(bootstrap_servers=broker, acks="all")
    for agent in sim.agents:  # the registry is there before the workers start
        producer.send(topics.agents, key=agent.agent_id.encode(), value=encode(agent))
    for venue in sorted({t.venue for t in sim.trades}):  # forged: would close every window
        for partition in range(4):
            producer.send(topics.flows, key=venue.encode(), value=encode({
                "schema": "watermark/1", "venue": venue, "partition": partition,
                "watermark": 1e12}))
    producer.flush()
    producer.close()
    a = start_worker(broker, topic_prefix, tmp_path / "a.log")
    b = start_worker(broker, topic_prefix, tmp_path / "b.log")
    try:
        wait_log(tmp_path / "a.log", STAGE1_STARTED)
        wait_log(tmp_path / "b.log", STAGE1_STARTED)
        paced(broker, topics.trades, sim.trades, chunk_s=30.0, pause=0.2)
        got_alerts, got_halts, _ = collect(broker, topics, want_alerts, want_halts, timeout=180)
    finally:
        stop(a)
        stop(b)
    assert got_alerts == want_alerts
    assert got_halts == want_halts
    logs = "".join((tmp_path / name).read_text(errors="replace") for name in ("a.log", "b.log"))
    assert "not sealed with this deployment's key" in logs
