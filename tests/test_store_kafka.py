"""The store writer's Kafka loop against the embedded broker: at-least-once in, once stored."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

from dashboard.queries import StoreCounts, StoreReader
from streams.settings import Settings
from streams.store import StoreWriter, run_store_writer
from streams.topics import ensure_topics

__all__: list[str] = []

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _alert(n: int) -> dict[str, Any]:
    return {"schema": "alert/1", "alert_id": f"a{n}", "ts": f"2024-05-06T14:30:{n:02d}Z",
            "kind": "wash_trade", "score": 50 + n, "instrument": "GPU-H100-1H",
            "agents": ["b1", "b2"], "venue": "x", "detector": "wash/1", "summary": f"alert {n}",
            "evidence": {"pairs": n, "nested": {"ids": ["t1"]}}}


def _halt(n: int) -> dict[str, Any]:
    return {"schema": "halt/1", "seq": n, "ts": f"2024-05-06T14:30:{n:02d}Z",
            "emitted_at": "2024-05-06T14:30:00Z", "venue": "x", "instrument": "GPU-H100-1H",
            "state": "HALTED" if n % 2 else "TRADING", "reason": "LUDP", "resume_at": None,
            "reference_price": 2.0, "band_low": None, "band_high": None, "alert_ids": []}


def _bar(n: int) -> dict[str, Any]:
    return {"schema": "bar/1", "venue": "x", "instrument": "GPU-H100-1H",
            "ts": f"2024-05-06T14:30:{n:02d}Z", "open": 2.0, "high": 2.1, "low": 1.9,
            "close": 2.0 + n / 100, "volume": 5.0, "notional": 10.0, "trades": 2}


class WriterThread:
    """run_store_writer in a thread; re-raises its exception on stop()."""

    def __init__(self, settings: Settings) -> None:
        self.stop_event = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(settings,), daemon=True)
        self.thread.start()

    def _run(self, settings: Settings) -> None:
        try:
            run_store_writer(settings, stop=self.stop_event, flush_every_s=0.2)
        except BaseException as exc:  # reported by stop()
            self.error = exc

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(timeout=60)
        assert not self.thread.is_alive(), "store writer did not stop"
        if self.error is not None:
            raise self.error


@pytest.fixture
def settings(broker: str, topic_prefix: str, tmp_path: Path) -> Settings:
    settings = Settings(brokers=broker, topic_prefix=topic_prefix, data_dir=tmp_path,
                        session_timeout_s=6)
    topics = settings.topics
    ensure_topics(broker, [topics.alerts, topics.halts, topics.bars])
    return settings


def _produce(broker: str, messages: list[tuple[str, str, bytes]]) -> None:
    producer = Producer({"bootstrap.servers": broker, "enable.idempotence": False})
    for topic, key, value in messages:
        producer.produce(topic, key=key.encode(), value=value)
    assert producer.flush(30) == 0


def _wait_for(reader: StoreReader, done: Callable[[StoreCounts], bool],
              timeout: float = 90) -> StoreCounts:
    deadline = time.monotonic() + timeout
    while True:
        counts = reader.counts()
        if done(counts):
            return counts
        assert time.monotonic() < deadline, f"store never got there: {counts}"
        time.sleep(0.2)


def test_store_writer_stores_each_record_once(settings: Settings, broker: str) -> None:
    topics = settings.topics
    alerts = [_alert(n) for n in range(5)]
    halts = [_halt(n) for n in range(1, 6)]  # the last one halts
    bars = [_bar(n) for n in range(20)]
    messages: list[tuple[str, str, bytes]] = []
    for record in alerts + alerts[:3]:  # duplicates, as a re-delivering producer sends them
        messages.append((topics.alerts, record["alert_id"], json.dumps(record).encode()))
    for record in halts + halts[:2]:
        messages.append((topics.halts, record["instrument"], json.dumps(record).encode()))
    for record in bars + bars[5:15]:
        messages.append((topics.bars, record["instrument"], json.dumps(record).encode()))
    messages += [  # malformed: logged and skipped, never fatal
        (topics.alerts, "bad", b"{not json"),
        (topics.alerts, "bad", json.dumps({"schema": "alert/1", "alert_id": "x"}).encode()),
        (topics.bars, "bad", json.dumps([1, 2]).encode()),
    ]
    _produce(broker, messages)

    reader = StoreReader(settings.store_dir)
    writer = WriterThread(settings)
    try:
        counts = _wait_for(reader, lambda c: (c.alerts, c.halts, c.bars) == (5, 5, 20))
    finally:
        writer.stop()
    assert counts.halts_active == 1
    assert reader.rows("SELECT count(*), count(DISTINCT alert_id) FROM _alerts_raw") == [(5, 5)]
    assert reader.rows("SELECT count(*) FROM _bars_raw") == [(20,)]
    stored = reader.alert("a3")
    assert stored is not None
    assert stored["evidence"] == {"pairs": 3, "nested": {"ids": ["t1"]}}

    # A restart in the same consumer group resumes after the committed offsets; duplicates
    # produced meanwhile are recognised from the parts on disk.
    _produce(broker, [(topics.alerts, "a1", json.dumps(_alert(1)).encode()),
                      (topics.alerts, "a9", json.dumps(_alert(9)).encode()),
                      (topics.bars, "GPU-H100-1H", json.dumps(_bar(0)).encode()),
                      (topics.bars, "GPU-H100-1H", json.dumps(_bar(30)).encode())])
    writer = WriterThread(settings)
    try:
        _wait_for(reader, lambda c: (c.alerts, c.bars) == (6, 21))
        time.sleep(1.0)  # nothing else trickles in
    finally:
        writer.stop()
    assert reader.rows("SELECT count(*) FROM _alerts_raw") == [(6,)]
    assert reader.rows("SELECT count(*) FROM _bars_raw") == [(21,)]
    assert reader.rows("SELECT count(*) FROM _halts_raw") == [(5,)]


_WRITER = """
import logging, sys
from pathlib import Path
from streams.settings import Settings
from streams.store import StoreWriter, run_store_writer
logging.basicConfig(level=logging.INFO)
run_store_writer(Settings(brokers=sys.argv[1], topic_prefix=sys.argv[2], data_dir=Path(sys.argv[3]),
                          session_timeout_s=6), flush_every_s=0.2)
"""


def test_sigterm_stops_the_writer_cleanly(settings: Settings, broker: str) -> None:
    """``surveil up`` stops its children with SIGTERM: flush, commit, release the store."""
    topics = settings.topics
    _produce(broker, [(topics.bars, "GPU-H100-1H", json.dumps(_bar(n)).encode())
                      for n in range(10)])
    proc = subprocess.Popen(
        [sys.executable, "-c", _WRITER, broker, settings.topic_prefix, str(settings.data_dir)],
        stderr=subprocess.PIPE, text=True,
    )
    try:
        _wait_for(StoreReader(settings.store_dir), lambda c: c.bars == 10)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    assert "store writer stopped" in stderr
    StoreWriter(settings.store_dir).close()  # the lock was released
