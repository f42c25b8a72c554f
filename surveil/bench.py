"""``surveil bench``: throughput and latency of the real pipeline on the embedded broker.

One run, one tape, one message format (JSON arrays of ``--batch`` trades, key = instrument):

1. **ceiling** — a bare aiokafka consumer (the client the worker uses) reads the whole tape back and
   decodes it with the same decoder the worker uses; nothing else.
2. **pipeline** — real ``surveil worker`` processes (stage 1, and stage 2 beside it, as
   ``surveil up`` would split them over the two cores) consume the same backlog with every
   detector on, checkpoints and confirmed delivery included. Progress is read from the
   ``bars`` stage 1 publishes (each bar counts its trades), so the figure is trades judged per
   second between its first and its last output.
3. **latency** — with the worker caught up, a paced feed with planted crashes and spikes is
   published; for every halt, latency = the halt's ``emitted_at`` minus the moment the message
   holding its trigger trade was handed to the producer.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from replay.publish import to_messages
from replay.synthetic import DEFAULT_INSTRUMENTS, Episode, Feed, FeedSpec, Instrument
from streams.contracts import Trade, decode_message, parse_ts
from streams.settings import Settings

__all__ = ["run_bench"]

Echo = Callable[[str], None]


def _instruments(n: int) -> tuple[Instrument, ...]:
    base = DEFAULT_INSTRUMENTS
    return tuple(Instrument(name=f"{base[i % len(base)].name}-{i // len(base)}",
                            asset_class=base[i % len(base)].asset_class,
                            price=base[i % len(base)].price, sigma=base[i % len(base)].sigma,
                            tick=base[i % len(base)].tick) for i in range(n))


def _cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a live process has used so far (Linux ``/proc``)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _producer(brokers: str) -> Any:
    from kafka import KafkaProducer

    return KafkaProducer(bootstrap_servers=brokers, linger_ms=5, acks=1, batch_size=1 << 20,
                         max_request_size=32 << 20)


async def _ceiling(brokers: str, topic: str, n_messages: int) -> tuple[int, float]:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=brokers, enable_auto_commit=False,
                                auto_offset_reset="earliest", fetch_max_bytes=64 << 20,
                                max_partition_fetch_bytes=64 << 20)
    await consumer.start()
    try:
        parts = consumer.partitions_for_topic(topic) or {0}
        tps = [TopicPartition(topic, p) for p in parts]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        seen = trades = 0
        started = time.perf_counter()
        while seen < n_messages:
            batch = await consumer.getmany(timeout_ms=1000, max_records=1000)
            for records in batch.values():
                for r in records:
                    ok, _ = decode_message(r.value)
                    trades += len(ok)
                    seen += 1
        return trades, time.perf_counter() - started
    finally:
        await consumer.stop()


class _Reader:
    """Reads topics from the beginning (kafka-python, a runtime dependency)."""

    def __init__(self, brokers: str, topics: list[str]) -> None:
        from kafka import KafkaConsumer

        self.consumer = KafkaConsumer(*topics, bootstrap_servers=brokers,
                                      group_id=f"bench-{uuid.uuid4().hex[:8]}",
                                      auto_offset_reset="earliest", enable_auto_commit=False,
                                      session_timeout_ms=6000, heartbeat_interval_ms=1000,
                                      fetch_max_wait_ms=50)

    def poll(self, timeout_s: float) -> list[tuple[str, bytes]]:
        batches = self.consumer.poll(timeout_ms=int(timeout_s * 1000))
        return [(r.topic, r.value) for records in batches.values() for r in records]

    def close(self) -> None:
        self.consumer.close()


def run_bench(*, n_trades: int = 1_000_000, batch: int = 500, instruments: int = 8,
              latency_s: float = 40.0, echo: Echo = print) -> dict[str, Any]:
    """Run the three measurements; return the figures (also printed as a table)."""
    from streams.broker import EmbeddedBroker, free_port
    from streams.topics import ensure_topics

    work = Path(tempfile.mkdtemp(prefix="surveil-bench-"))
    broker = EmbeddedBroker(port=free_port(), log_path=work / "broker.log").start()
    settings = Settings(brokers=broker.bootstrap, topic_prefix=f"bench{uuid.uuid4().hex[:6]}.",
                        data_dir=work, session_timeout_s=6)
    topics = settings.topics
    worker: subprocess.Popen[bytes] | None = None
    venue: subprocess.Popen[bytes] | None = None
    try:
        ensure_topics(settings.brokers, topics.all())
        insts = _instruments(instruments)
        rate = 200.0
        duration = n_trades / (rate * instruments)
        echo(f"tape: {n_trades:,} trades, {instruments} instruments, {batch} trades/message")
        feed = Feed(FeedSpec(instruments=insts, rate=rate, seed=42), start=1_767_225_600.0)
        tape = feed.next(duration)
        messages = to_messages(tape, max_batch=batch)
        producer = _producer(settings.brokers)
        t0 = time.perf_counter()
        for key, value in messages:
            producer.send(topics.trades, key=key, value=value)
        producer.flush()
        publish_s = time.perf_counter() - t0
        producer.close()  # left open, it keeps calling the broker after the bench stops it
        echo(f"published {len(tape):,} trades in {len(messages):,} messages "
             f"({len(tape) / publish_s:,.0f} trades/s)")

        ceiling_n, ceiling_s = asyncio.run(_ceiling(settings.brokers, topics.trades,
                                                    len(messages)))
        ceiling = ceiling_n / ceiling_s
        echo(f"ceiling: bare consumer + decode {ceiling:,.0f} trades/s")

        # expected trades in completed bars: all but each instrument's last second
        last_sec: dict[str, int] = {}
        for t in tape:
            last_sec[t.instrument] = int(t.ts)
        expected = sum(1 for t in tape if int(t.ts) < last_sec[t.instrument])
        bars_c = _Reader(settings.brokers, [topics.bars])
        env = {**os.environ, "SURVEIL_BROKERS": settings.brokers,
               "SURVEIL_TOPIC_PREFIX": settings.topic_prefix, "SURVEIL_SESSION_TIMEOUT_S": "6"}
        with (work / "worker.log").open("wb") as log:  # the child keeps its own copy
            worker = subprocess.Popen([sys.executable, "-m", "surveil.cli", "worker", "--stage",
                                       "1"], env=env, stdout=log, stderr=subprocess.STDOUT)
            venue = subprocess.Popen([sys.executable, "-m", "surveil.cli", "worker", "--stage",
                                      "2"], env=env, stdout=log, stderr=subprocess.STDOUT)
        assert worker is not None
        assert venue is not None
        first_t = last_t = None
        cpu_first = cpu_last = (0.0, 0.0)
        counted = after_first = 0
        deadline = time.monotonic() + 120 + n_trades / 5_000
        while counted < expected and time.monotonic() < deadline:
            for _, value in bars_c.poll(0.5):
                now = time.perf_counter()
                n = sum(b["trades"] for b in msgspec.json.decode(value))
                counted += n
                if first_t is None:
                    first_t = now
                    cpu_first = (_cpu_s(worker.pid), _cpu_s(venue.pid))
                else:
                    after_first += n
                last_t = now
                cpu_last = (_cpu_s(worker.pid), _cpu_s(venue.pid))
        bars_c.close()
        if first_t is None or last_t is None or last_t <= first_t or counted < expected:
            raise RuntimeError(f"worker did not finish the tape: {counted:,}/{expected:,} trades "
                               f"seen in bars (see {work / 'worker.log'})")
        pipeline = after_first / (last_t - first_t)
        echo(f"pipeline: {pipeline:,.0f} trades/s ({after_first:,} trades in "
             f"{last_t - first_t:.2f} s)")
        cpu1, cpu2 = (b - a for a, b in zip(cpu_first, cpu_last, strict=True))
        stage2_share = cpu2 / cpu1 if cpu1 > 0 else None
        echo(f"cpu over that span: stage 1 {cpu1:.2f} s, stage 2 {cpu2:.2f} s "
             f"(stage 2 adds {stage2_share or 0:.1%} per trade)")

        latencies = _latency(settings, feed, insts, latency_s, echo)
    finally:
        for proc in (worker, venue):
            if proc is not None:
                proc.terminate()
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
        broker.stop()
    p50 = float(np.percentile(latencies, 50)) if latencies else None
    p99 = float(np.percentile(latencies, 99)) if latencies else None
    figures = {
        "trades": len(tape),
        "batch": batch,
        "ceiling_trades_per_s": round(ceiling),
        "pipeline_trades_per_s": round(pipeline),
        "ratio": round(pipeline / ceiling, 3),
        "stage2_cpu_share": round(stage2_share, 3) if stage2_share is not None else None,
        "p50_ms": round(p50, 1) if p50 is not None else None,
        "p99_ms": round(p99, 1) if p99 is not None else None,
        "halts_measured": len(latencies),
    }
    echo("")
    echo(f"{'measure':<34}{'value':>16}")
    echo(f"{'ceiling (bare consumer, trades/s)':<34}{figures['ceiling_trades_per_s']:>16,}")
    echo(f"{'pipeline (worker, trades/s)':<34}{figures['pipeline_trades_per_s']:>16,}")
    echo(f"{'ratio':<34}{figures['ratio']:>16}")
    echo(f"{'stage 2 cpu / stage 1 cpu':<34}{str(figures['stage2_cpu_share']):>16}")
    echo(f"{'publish→halt p50 (ms)':<34}{str(figures['p50_ms']):>16}")
    echo(f"{'publish→halt p99 (ms)':<34}{str(figures['p99_ms']):>16}")
    echo(f"{'halts measured':<34}{len(latencies):>16}")
    return figures


def _latency(settings: Settings, feed: Feed, insts: tuple[Instrument, ...], seconds: float,
             echo: Echo, speed: float = 20.0) -> list[float]:
    """Paced feed with planted crashes; milliseconds from trigger publish to halt emission."""
    topics = settings.topics
    period = 120.0
    t_base = feed.elapsed
    for k, inst in enumerate(insts):
        for j in range(int(seconds * speed / period) + 1):
            start = t_base + 90 + j * period + k * (period / len(insts))
            feed.episodes.append(Episode(instrument=inst.name, start_s=start,
                                         depth=-0.15 if j % 2 == 0 else 0.15, ramp_s=8,
                                         hold_s=20))
    halts_c = _Reader(settings.brokers, [topics.halts, topics.alerts])
    producer = _producer(settings.brokers)
    sent_at: dict[str, float] = {}
    wall0 = time.time()
    step = 0.05
    while time.time() - wall0 < seconds:
        chunk: list[Trade] = feed.next(step * speed)
        for key, value in to_messages(chunk, max_batch=500):
            now = time.time()
            producer.send(topics.trades, key=key, value=value)
            for ident in msgspec.json.decode(value, type=list[_Id]):
                sent_at[ident.trade_id] = now
        producer.flush()
        delay = wall0 + (feed.elapsed - t_base) / speed - time.time()
        if delay > 0:
            time.sleep(delay)
    producer.close()
    trigger: dict[str, str] = {}
    trips: list[dict[str, Any]] = []
    # drain: 10 s, longer while records still come or none has come yet (a loaded machine
    # lags), 60 s at most
    quiet_until, give_up = time.monotonic() + 10, time.monotonic() + 60
    while time.monotonic() < give_up and (time.monotonic() < quiet_until or not trips):
        for topic, value in halts_c.poll(0.5):
            quiet_until = max(quiet_until, time.monotonic() + 5)
            rec = msgspec.json.decode(value)
            if topic == topics.alerts:
                trigger[rec["alert_id"]] = rec["evidence"].get("trigger_trade_id", "")
            elif rec["state"] != "TRADING":
                trips.append(rec)
    halts_c.close()
    out = []
    for h in trips:
        tid = next((trigger[a] for a in reversed(h["alert_ids"]) if a in trigger), None)
        if tid in sent_at:
            out.append((parse_ts(h["emitted_at"]) - sent_at[tid]) * 1000)
    echo(f"latency: {len(out)} halts matched to their trigger trades")
    return out


class _Id(msgspec.Struct):
    trade_id: str
