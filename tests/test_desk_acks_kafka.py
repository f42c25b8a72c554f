"""On the real embedded broker: the reference exchange of ``surveil up`` (``run_exchange``)
acknowledges a halt it applies on ``halt_acks``, and the real ``surveil store`` process keeps
trades, worker heartbeats and acknowledgements once each, skipping hostile bytes."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest
from confluent_kafka import Producer
from kafka_helpers import read_topics, surveil_env

from dashboard.queries import StoreReader
from streams.contracts import iso
from streams.settings import Settings
from streams.topics import ensure_topics

__all__: list[str] = []

pytestmark = [pytest.mark.integration, pytest.mark.slow]

VENUE = "m2m-sim"  # the venue of the reference exchange run by `surveil exchange`


def _produce(broker: str, messages: list[tuple[str, bytes, bytes]]) -> None:
    producer = Producer({"bootstrap.servers": broker, "enable.idempotence": False})
    for topic, key, value in messages:
        producer.produce(topic, key=key, value=value)
    assert producer.flush(30) == 0


def _wait(what: str, check: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.3)


@pytest.fixture
def settings(broker: str, topic_prefix: str, tmp_path: Path) -> Settings:
    s = Settings(brokers=broker, topic_prefix=topic_prefix, data_dir=tmp_path,
                 session_timeout_s=6)
    ensure_topics(broker, s.topics.all())
    return s


@pytest.fixture
def exchange(settings: Settings) -> Iterator[threading.Thread]:
    """``run_exchange`` (what ``surveil up`` runs) in a thread, stopped afterwards."""
    from surveil.live import run_exchange

    stop = threading.Event()
    thread = threading.Thread(target=run_exchange, args=(settings,),
                              kwargs={"stop": stop, "crash_every": 0.0}, daemon=True)
    thread.start()
    try:
        yield thread
    finally:
        stop.set()
        thread.join(30)
        assert not thread.is_alive(), "the exchange did not stop"


@pytest.fixture
def store_process(settings: Settings, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    log = tmp_path / "store.log"
    env = surveil_env(settings.brokers, settings.topic_prefix,
                      SURVEIL_DATA_DIR=str(settings.data_dir))
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "surveil.cli", "store"], env=env,
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc
    except BaseException:
        print(log.read_bytes()[-4000:].decode(errors="replace"))
        raise
    finally:
        proc.terminate()
        proc.wait(30)


def _halt(now: float, instrument: str) -> dict[str, Any]:
    return {"schema": "halt/1", "seq": int(now * 1e6), "ts": iso(now), "emitted_at": iso(now),
            "venue": VENUE, "instrument": instrument, "state": "HALTED", "reason": "MANUAL",
            "resume_at": None, "reference_price": None, "band_low": None, "band_high": None,
            "alert_ids": []}


def test_exchange_acks_and_the_store_keeps_trades_heartbeats_and_acks_once(
        settings: Settings, exchange: threading.Thread,
        store_process: subprocess.Popen[bytes]) -> None:
    topics = settings.topics
    now = time.time()
    halt = _halt(now, "GPU-H100-1H")
    second = datetime.fromtimestamp(int(now), UTC)
    beats = [{"schema": "heartbeat/1", "worker": "w1", "seq": n,
              "emitted_at": iso((second + timedelta(seconds=n * 0.3)).timestamp()),
              "watermarks": {VENUE: iso(now - 2)}, "partitions": [0]} for n in range(1, 6)]
    trades = [{"ts": now - 1 + n / 100, "trade_id": f"it-{n}", "venue": "it-venue",
               "instrument": "IT-1", "price": 1.0 + n / 100, "qty": 1.0, "buyer": f"b{n % 3}",
               "seller": "s"} for n in range(40)]
    enc = msgspec.json.encode
    _produce(settings.brokers, [
        (topics.halts, b"GPU-H100-1H", enc(halt)),
        *((topics.halts, b"~heartbeat", enc(b)) for b in beats + beats[:2]),  # re-delivered
        (topics.trades, b"IT-1", enc(trades[:20])), (topics.trades, b"IT-1", enc(trades[20:])),
        # hostile bytes: skipped and counted by the store, never fatal
        (topics.trades, b"IT-1", b"{\"trade_id\": 7}"), (topics.trades, b"IT-1", b"\x00" * 64),
    ])

    # the exchange applies the halt and says so on halt_acks, keyed by exchange/venue/inst/seq
    acks = read_topics(settings.brokers, [topics.halt_acks], until=lambda rs: any(
        isinstance(r, dict) and r.get("seq") == halt["seq"] for _, r in rs), timeout=60)
    ack = next(r for _, r in acks if isinstance(r, dict) and r.get("seq") == halt["seq"])
    assert (ack["schema"], ack["exchange"], ack["venue"], ack["instrument"], ack["state"],
            ack["effective"]) == ("halt_ack/1", VENUE, VENUE, "GPU-H100-1H", "HALTED", "HALTED")
    _produce(settings.brokers, [  # hostile bytes on halt_acks (after our reader is done)
        (topics.halt_acks, b"x", b"\xff\x00 not json"), (topics.halt_acks, b"x", b"[1, 2]"),
        (topics.halt_acks, b"x", enc({"schema": "halt_ack/1", "seq": "NaN"}))])

    reader = StoreReader(settings.store_dir)

    def stored() -> bool:
        ((n_acks, n_beats, n_trades),) = reader.rows(
            "SELECT (SELECT count(*) FROM _acks_raw WHERE seq = $seq), "
            "(SELECT count(*) FROM _heartbeats_raw), "
            "(SELECT count(*) FROM _trades_raw WHERE venue = 'it-venue')", seq=halt["seq"])
        return n_acks >= 1 and n_beats >= 2 and n_trades >= 40

    _wait("the store to hold the ack, the heartbeats and the trades", stored)
    time.sleep(1.5)  # let anything duplicated arrive
    assert store_process.poll() is None, "the store writer died"
    assert reader.rows("SELECT count(*) FROM _acks_raw WHERE seq = $seq",
                       seq=halt["seq"]) == [(1,)]
    assert reader.rows("SELECT worker, count(*) FROM _heartbeats_raw GROUP BY ALL") == \
        [("w1", 2)]  # five beats (and two re-deliveries) over two seconds: two rows
    assert reader.rows("SELECT count(*), count(DISTINCT trade_id) FROM _trades_raw "
                       "WHERE venue = 'it-venue'") == [(40, 40)]
    assert reader.rows("SELECT count(*) FROM _halts_raw") == [(1,)]  # beats are not halts
    board = reader.halt_board()
    assert board.row(0, named=True)["acked_at"] is not None
    # the exchange's own trades are stored too (its live market trades while the test runs)
    _wait("the exchange's trades in the store", lambda: reader.rows(
        "SELECT count(*) FROM _trades_raw WHERE venue = $v", v=VENUE)[0][0] > 0)
