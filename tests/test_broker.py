"""The embedded broker (streams.broker) and topic creation (streams.topics.ensure_topics)."""

from __future__ import annotations

import logging
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, Producer
from confluent_kafka.admin import AdminClient

from streams.broker import BrokerError, EmbeddedBroker, free_port, wait_for_broker
from streams.topics import TopicError, ensure_topics

__all__: list[str] = []

REPO = Path(__file__).resolve().parents[1]


def _partition_counts(bootstrap: str) -> dict[str, int]:
    """Topic -> partition count, from a metadata request for all topics (creates nothing)."""
    metadata = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10)
    return {name: len(topic.partitions) for name, topic in metadata.topics.items()}


# -- no broker needed ---------------------------------------------------------------------------


def test_free_port_can_be_bound() -> None:
    port = free_port()
    assert 1024 <= port < 65536
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", port))  # raises if the port were taken


def test_wait_for_broker_times_out_when_nothing_listens() -> None:
    bootstrap = f"127.0.0.1:{free_port()}"
    started = time.monotonic()
    with pytest.raises(BrokerError, match="no Kafka broker answered"):
        wait_for_broker(bootstrap, timeout=1.0)
    assert 0.9 <= time.monotonic() - started < 5


def test_wait_for_broker_is_not_fooled_by_a_plain_tcp_listener() -> None:
    """Something that accepts connections but does not speak Kafka is not a broker."""
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    done = threading.Event()

    def serve_garbage() -> None:
        server.settimeout(0.2)
        while not done.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            with conn:
                conn.sendall(b"HTTP/1.0 400 Bad Request\r\n\r\n")

    thread = threading.Thread(target=serve_garbage, daemon=True)
    thread.start()
    try:
        with pytest.raises(BrokerError, match=f"127.0.0.1:{port}"):
            wait_for_broker(f"127.0.0.1:{port}", timeout=1.0)
    finally:
        done.set()
        thread.join(5)
        server.close()


def test_unusable_binary_fails_fast_with_a_clear_error(tmp_path: Path) -> None:
    fake = tmp_path / "tansu"
    fake.write_text("not a program\n")  # not executable
    broker = EmbeddedBroker(port=free_port(), binary=fake)
    started = time.monotonic()
    with pytest.raises(BrokerError, match="cannot start the Tansu broker binary"):
        broker.start()
    assert time.monotonic() - started < 5
    assert not broker.running


def test_ensure_topics_rejects_illegal_names_without_connecting() -> None:
    with pytest.raises(ValueError, match="illegal Kafka topic name"):
        ensure_topics("127.0.0.1:1", ["trades", "bad name"])
    assert ensure_topics("127.0.0.1:1", []) == []


def test_ensure_topics_reports_an_unreachable_cluster() -> None:
    started = time.monotonic()
    with pytest.raises(TopicError, match="cannot reach a Kafka broker"):
        ensure_topics(f"127.0.0.1:{free_port()}", ["trades"], timeout=1.5)
    assert time.monotonic() - started < 10


# -- against the embedded broker ----------------------------------------------------------------


@pytest.mark.integration
def test_broker_answers_metadata(broker: str) -> None:
    wait_for_broker(broker, timeout=5)
    metadata = AdminClient({"bootstrap.servers": broker}).list_topics(timeout=10)
    advertised = {f"{b.host}:{b.port}" for b in metadata.brokers.values()}
    assert advertised == {broker}


@pytest.mark.integration
def test_ensure_topics_creates_once_and_is_idempotent(broker: str, topic_prefix: str) -> None:
    first = [f"{topic_prefix}trades", f"{topic_prefix}halts"]
    assert ensure_topics(broker, first, partitions=3) == first
    assert ensure_topics(broker, first, partitions=3) == []
    # Only the missing one is created; duplicates in the input are ignored.
    more = [*first, f"{topic_prefix}alerts", f"{topic_prefix}alerts"]
    assert ensure_topics(broker, more, partitions=2) == [f"{topic_prefix}alerts"]
    counts = _partition_counts(broker)
    assert counts[f"{topic_prefix}trades"] == 3
    assert counts[f"{topic_prefix}halts"] == 3
    assert counts[f"{topic_prefix}alerts"] == 2


@pytest.mark.integration
def test_ensure_topics_tolerates_concurrent_creators(broker: str, topic_prefix: str) -> None:
    names = [f"{topic_prefix}trades", f"{topic_prefix}trades.dlq"]
    results: list[list[str]] = []
    errors: list[BaseException] = []

    def create() -> None:
        try:
            results.append(ensure_topics(broker, names))
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=create) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert len(results) == 4
    # Every topic was created by exactly one of the racers.
    assert sorted(name for created in results for name in created) == sorted(names)


@pytest.mark.integration
def test_ensure_topics_leaves_auto_created_topics_alone(
    broker: str, topic_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Tansu quirk: producing to an unknown topic creates it with Tansu's own partition count."""
    topic = f"{topic_prefix}bars"
    producer = Producer({"bootstrap.servers": broker})
    producer.produce(topic, value=b"{}")
    assert producer.flush(10) == 0
    auto_partitions = _partition_counts(broker)[topic]

    with caplog.at_level(logging.WARNING, logger="streams.topics"):
        assert ensure_topics(broker, [topic], partitions=1) == []
    assert _partition_counts(broker)[topic] == auto_partitions
    if auto_partitions != 1:
        assert f"{topic} already exists with {auto_partitions} partitions" in caplog.text


@pytest.mark.integration
def test_created_topic_round_trip(broker: str, topic_prefix: str) -> None:
    topic = f"{topic_prefix}trades"
    assert ensure_topics(broker, [topic], partitions=2) == [topic]

    delivered: list[tuple[object, int | None]] = []
    producer = Producer({"bootstrap.servers": broker})
    payload = b'{"trade_id":"1","instrument":"GPU-H100-1H","price":2.5,"qty":1}'
    producer.produce(
        topic,
        key=b"GPU-H100-1H",
        value=payload,
        on_delivery=lambda err, msg: delivered.append((err, msg.offset())),
    )
    assert producer.flush(10) == 0
    assert delivered == [(None, 0)]

    consumer = Consumer(
        {
            "bootstrap.servers": broker,
            "group.id": f"{topic_prefix}readers",
            "session.timeout.ms": 6000,
            "auto.offset.reset": "earliest",
        }
    )
    try:
        consumer.subscribe([topic])
        received = None
        deadline = time.monotonic() + 30
        while received is None and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            error = msg.error()
            if error is not None:
                assert error.code() == KafkaError._PARTITION_EOF, error
                continue
            received = msg
    finally:
        consumer.close()
    assert received is not None, "the produced message was not consumed within 30 s"
    assert received.topic() == topic
    assert received.key() == b"GPU-H100-1H"
    assert received.value() == payload


@pytest.mark.integration
def test_second_broker_on_the_same_port_fails(broker: str) -> None:
    port = int(broker.rsplit(":", 1)[1])
    second = EmbeddedBroker(port=port)
    started = time.monotonic()
    with pytest.raises(BrokerError, match=f"port {port} on 127.0.0.1 is already in use"):
        second.start()
    assert time.monotonic() - started < 5
    assert not second.running
    second.stop()  # harmless on a broker that never started
    wait_for_broker(broker, timeout=5)  # the first broker is unharmed


@pytest.mark.integration
def test_stop_twice_releases_the_port(tmp_path: Path) -> None:
    log_path = tmp_path / "logs" / "tansu.log"
    embedded = EmbeddedBroker(port=0, log_path=log_path)
    with embedded:
        assert embedded.running
        pid = embedded.pid
        assert pid is not None
        wait_for_broker(embedded.bootstrap, timeout=5)
    embedded.stop()  # second stop: no error
    assert not embedded.running
    assert embedded.pid is None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # exited and reaped
    with pytest.raises(BrokerError):
        wait_for_broker(embedded.bootstrap, timeout=0.5)
    assert "tansu broker" in log_path.read_text()


def _read_line(proc: subprocess.Popen[str], timeout: float) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    return proc.stdout.readline().strip() if ready else ""


@pytest.mark.integration
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_serve_stops_cleanly_on_signal(sig: signal.Signals, topic_prefix: str) -> None:
    port = free_port()
    bootstrap = f"127.0.0.1:{port}"
    topic = f"{topic_prefix}trades"
    code = (
        "import sys\n"
        "from streams.broker import serve\n"
        f"sys.exit(serve(port={port}, topics=[{topic!r}], partitions=2,\n"
        "                ready=lambda b: print('READY', b, flush=True)))\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        line = _read_line(proc, timeout=40)
        assert line == f"READY {bootstrap}", (line, proc.poll())
        # serve() created the topic before announcing readiness.
        assert ensure_topics(bootstrap, [topic], partitions=2) == []
        assert _partition_counts(bootstrap)[topic] == 2

        proc.send_signal(sig)
        started = time.monotonic()
        returncode = proc.wait(timeout=15)
        elapsed = time.monotonic() - started
        _, stderr = proc.communicate(timeout=5)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
    assert returncode == 0, stderr
    assert elapsed < 5
    assert "Traceback" not in stderr
    with pytest.raises(BrokerError):  # the broker process is gone, not orphaned
        wait_for_broker(bootstrap, timeout=0.5)


@pytest.mark.integration
def test_port_taken_after_the_precheck_is_still_detected(
    broker: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Race: the port is free when checked but taken when Tansu binds (Tansu then exits 0)."""
    import streams.broker as broker_module

    monkeypatch.setattr(broker_module, "_check_port_free", lambda host, port: None)
    port = int(broker.rsplit(":", 1)[1])
    second = EmbeddedBroker(port=port)
    with pytest.raises(BrokerError, match=f"port {port} is in use"):
        second.start()
    assert not second.running
    wait_for_broker(broker, timeout=5)
