"""The halt channel exchanges can trust, end to end on the embedded broker: signed halts (forged,
replayed and unsigned ones rejected without locking out real ones), the stage-1 worker's
heartbeats (a killed worker behind a live broker sends the exchange to QUOTE_ONLY; it reopens by
auction when heartbeats return), expiry at ``resume_at`` when the RESUME is lost, and manual
regulator actions reaching the exchange and the audit trail in the store."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import msgspec
import pyarrow.parquet as pq
import pytest
from confluent_kafka import Producer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from kafka_helpers import surveil_env

from exchange.book import Order
from exchange.halts import HaltSubscriber
from exchange.venue import Exchange
from streams.contracts import Halt, iso
from streams.settings import Settings
from streams.signing import PUBLIC_FILE, KeyRing, Signer, ensure_keys, load_signer
from streams.store_layout import part_files
from streams.topics import ensure_topics

__all__: list[str] = []

pytestmark = pytest.mark.integration

GPU, KWH = "GPU-H100-1H", "KWH-SA-GRID"


def wait_until(condition: Callable[[], object], timeout: float = 30.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.05)


def halt(t: float, state: str, *, instrument: str = GPU, reason: str = "SPIKE",
         resume_at: float | None = None, seq: int | None = None) -> dict[str, Any]:
    h = Halt(seq=round(t * 1e6) if seq is None else seq, ts=iso(t), emitted_at=iso(time.time()),
             venue="v1", instrument=instrument, state=state, reason=reason,
             resume_at=None if resume_at is None else iso(resume_at), reference_price=10.0,
             band_low=None, band_high=None, alert_ids=[])
    return msgspec.to_builtins(h)  # type: ignore[no-any-return]


class Publisher:
    """Raw messages to the halts topic with an independent client (confluent-kafka)."""

    def __init__(self, broker: str, topic: str) -> None:
        self.topic = topic
        self.producer = Producer({"bootstrap.servers": broker, "enable.idempotence": False})

    def send(self, message: dict[str, Any], topic: str | None = None) -> None:
        key = str(message.get("instrument", "~heartbeat")).encode()
        self.producer.produce(topic or self.topic, key=key, value=msgspec.json.encode(message))
        assert self.producer.flush(30) == 0

    def close(self) -> None:
        self.producer.flush(10)


def order(oid: str, side: str, instrument: str = GPU, price: float = 10.0) -> Order:
    return Order(oid, instrument, side, 1, oid, price=price)  # type: ignore[arg-type]


@pytest.fixture
def settings(broker: str, topic_prefix: str, tmp_path: Path) -> Settings:
    s = Settings(brokers=broker, topic_prefix=topic_prefix, data_dir=tmp_path)
    ensure_topics(broker, s.topics.all())
    ensure_keys(tmp_path / "keys")
    return s


@contextmanager
def subscribed(settings: Settings, **options: Any) -> Iterator[HaltSubscriber]:
    sub = HaltSubscriber.from_settings(settings, silence_s=5.0, probe_interval_s=0.3,
                                       **options).start()
    try:
        yield sub
    finally:
        sub.stop()


def signer(settings: Settings, role: str) -> Signer:
    found = load_signer(settings.data_dir / "keys", role)
    assert found is not None
    return found


# ---------------------------------------------------------------------- forged, replayed, unsigned
def test_forged_replayed_and_unsigned_halts_are_rejected_and_lock_nothing_out(
        settings: Settings) -> None:
    det = signer(settings, "detector")
    forger = Signer(Ed25519PrivateKey.generate(), det.kid, "detector")
    pub = Publisher(settings.brokers, settings.topics.halts)
    now = time.time()
    with subscribed(settings, heartbeat_timeout_s=None) as sub:
        wait_until(lambda: sub.ready and sub.is_open("v1", GPU), 30, "catch-up")
        assert sub.book.require_signatures
        # the lock-out attempt: an unsigned and a forged message with seq 2^62
        pub.send(halt(now, "TRADING", reason="RESUME", seq=2**62))
        pub.send(forger.sign(halt(now, "TRADING", reason="RESUME", seq=2**62)))
        real = det.sign(halt(now, "HALTED", resume_at=None))
        pub.send(real)
        wait_until(lambda: sub.state("v1", GPU) == "HALTED", 30, "the real halt")
        pub.send(real)  # replayed as is
        pub.send(forger.sign(halt(now + 1, "TRADING", reason="RESUME")))  # forged resumption
        pub.send(halt(now + 1, "TRADING", reason="RESUME"))  # unsigned resumption
        wait_until(lambda: sub.counters.received >= 6, 30, "the attacks")
        assert sub.state("v1", GPU) == "HALTED"
        pub.send(det.sign(halt(now + 2, "TRADING", reason="RESUME")))
        wait_until(lambda: sub.is_open("v1", GPU), 30, "the real resumption")
        assert sub.counters.rejected == {"unsigned": 2, "bad_signature": 2, "replayed": 1}
        assert sub.counters.applied == 2
    pub.close()


# ---------------------------------------------------------------------- worker heartbeats, expiry
@contextmanager
def stage1_worker(settings: Settings, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    env = surveil_env(settings.brokers, settings.topic_prefix,
                      SURVEIL_DATA_DIR=str(settings.data_dir), SURVEIL_IDLE_TIMEOUT_S="1",
                      SURVEIL_CHECKPOINT_INTERVAL_S="60")
    with log.open("ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "surveil.cli", "worker", "--stage", "1"],
                                env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(30)


def test_dead_worker_fails_safe_lost_resume_expires_and_heartbeats_reopen(
        settings: Settings, tmp_path: Path) -> None:
    pub = Publisher(settings.brokers, settings.topics.halts)
    trades = Producer({"bootstrap.servers": settings.brokers, "enable.idempotence": False})
    with subscribed(settings, heartbeat_timeout_s=2.5) as sub:
        ex = Exchange("v1", [GPU, KWH], halts=sub)
        wait_until(lambda: sub.ready, 30, "catch-up")
        assert sub.state("v1", GPU) == "QUOTE_ONLY"  # no heartbeat yet: no worker known alive
        with stage1_worker(settings, tmp_path / "worker.log") as worker:
            wait_until(lambda: sub.is_open("v1", GPU), 40, "the worker's first heartbeat")
            now = time.time()
            batch = [{"ts": now, "trade_id": f"t{i}", "instrument": GPU, "price": 10.0,
                      "qty": 1.0, "buyer": "a", "seller": "b", "venue": "v1"} for i in range(5)]
            trades.produce(settings.topics.trades, key=GPU.encode(),
                           value=msgspec.json.encode(batch))
            trades.flush(30)
            # a pause whose RESUME never comes: the heartbeats' watermark expires it
            pub.send(signer(settings, "detector").sign(
                halt(now, "PAUSED", instrument=KWH, reason="LUDP", resume_at=now + 1)))
            wait_until(lambda: sub.state("v1", KWH) == "PAUSED", 20, "the pause")
            wait_until(lambda: sub.is_open("v1", KWH), 30, "the expiry at resume_at")
            assert sub.counters.expired == 1
            ex.submit(order("s1", "sell"), ts=1.0)
            worker.send_signal(signal.SIGKILL)  # the worker dies; the broker lives on
            worker.wait(10)
            wait_until(lambda: sub.state("v1", GPU) == "QUOTE_ONLY", 10, "the fail-safe")
            assert sub.counters.probe_failures == 0  # the feed itself stayed live
            assert ex.submit(order("b1", "buy", price=11.0), ts=2.0) == []  # queued
        with stage1_worker(settings, tmp_path / "worker.log"):
            wait_until(lambda: sub.is_open("v1", GPU), 40, "heartbeats again")
            assert [t.qty for t in ex.tick(3.0)] == [1]  # the reopening auction
        assert sub.counters.rejected.get("bad_signature", 0) == 0
        assert sub.counters.heartbeats >= 2
        ex.close()
    pub.close()


# ---------------------------------------------------------------------- manual actions
def surveil(settings: Settings, *args: str) -> dict[str, Any]:
    env = surveil_env(settings.brokers, settings.topic_prefix,
                      SURVEIL_DATA_DIR=str(settings.data_dir))
    done = subprocess.run([sys.executable, "-m", "surveil.cli", *args], env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return msgspec.json.decode(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def test_manual_halt_reaches_the_exchange_and_the_audit_trail(settings: Settings) -> None:
    from streams.store import run_store_writer

    stop = threading.Event()
    writer = threading.Thread(target=run_store_writer,
                              kwargs={"settings": settings.with_(session_timeout_s=6.0),
                                      "stop": stop, "flush_every_s": 0.3}, daemon=True)
    writer.start()
    try:
        with subscribed(settings, heartbeat_timeout_s=None) as sub:
            wait_until(lambda: sub.ready and sub.is_open("v1", GPU), 30, "catch-up")
            sent = surveil(settings, "halt", "*", "--venue", "v1", "--note", "suspected outage",
                           "--user", "alice")
            assert (sent["state"], sent["reason"], sent["kid"]) == (
                "HALTED", "MANUAL", signer(settings, "regulator").kid)
            wait_until(lambda: sub.state("v1", GPU) == "HALTED", 30, "the manual halt")
            # a detector's resumption does not lift the regulator's halt
            Publisher(settings.brokers, settings.topics.halts).send(signer(
                settings, "detector").sign(halt(time.time(), "TRADING", instrument="*",
                                                reason="RESUME")))
            wait_until(lambda: sub.counters.applied >= 2, 30, "the detector's resumption")
            assert sub.state("v1", KWH) == "HALTED"
            surveil(settings, "resume", "*", "--venue", "v1", "--note", "venue confirmed up",
                    "--user", "bob")
            wait_until(lambda: sub.is_open("v1", KWH), 30, "the manual resumption")
            assert sum(sub.counters.rejected.values()) == 0
        ring = KeyRing.load(settings.data_dir / "keys" / PUBLIC_FILE)

        def rows() -> list[dict[str, Any]]:
            files = part_files(settings.store_dir / "cases")
            return [r for f in files for r in pq.read_table(f).to_pylist()]

        wait_until(lambda: len(rows()) >= 2, 40, "the audit records in the store")
        trail = sorted(rows(), key=lambda r: r["ts"])
        assert [(r["action"], r["actor"], r["note"], r["venue"], r["instrument"], r["state"],
                 r["reason"], r["role"]) for r in trail] == [
            ("halt_request", "alice", "suspected outage", "v1", "*", "HALTED", "MANUAL",
             "regulator"),
            ("resume_request", "bob", "venue confirmed up", "v1", "*", "TRADING", "MANUAL",
             "regulator")]
        assert len(ring.keys) == 2
    finally:
        stop.set()
        writer.join(30)
    assert os.path.isdir(settings.store_dir / "halts")
