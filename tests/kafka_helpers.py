"""Helpers for integration tests on the real embedded broker: run commands, read topics."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import msgspec
from confluent_kafka import Consumer


def surveil_env(broker: str, prefix: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SURVEIL_")}
    env.update({"SURVEIL_BROKERS": broker, "SURVEIL_TOPIC_PREFIX": prefix,
                "SURVEIL_SESSION_TIMEOUT_S": "6", **extra})
    return env


@contextmanager
def running_worker(broker: str, prefix: str, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A real ``surveil worker`` process; stopped (and checked to stop cleanly) afterwards."""
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "surveil.cli", "worker"],
                                env=surveil_env(broker, prefix,
                                                SURVEIL_DATA_DIR=str(log.parent)), stdout=out,
                                stderr=subprocess.STDOUT)
        try:
            yield proc
        except BaseException:
            out.flush()
            tail = log.read_bytes()[-4000:].decode(errors="replace")
            print(f"--- last lines of {log} (exit code {proc.poll()}) ---\n{tail}")
            raise
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def run_surveil(broker: str, prefix: str, *args: str, timeout: float = 120) -> str:
    done = subprocess.run([sys.executable, "-m", "surveil.cli", *args],
                          env=surveil_env(broker, prefix), capture_output=True, text=True,
                          timeout=timeout, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def read_topics(broker: str, topics: list[str], *, until: Callable[[list[tuple[str, Any]]], bool],
                timeout: float = 90.0, settle: float = 0.0) -> list[tuple[str, Any]]:
    """Read JSON records from ``topics`` with an independent client (confluent-kafka) until
    ``until(records)`` holds (then ``settle`` more seconds), or fail after ``timeout``."""
    consumer = Consumer({"bootstrap.servers": broker, "group.id": f"it-{uuid.uuid4().hex[:8]}",
                         "auto.offset.reset": "earliest", "session.timeout.ms": 6000,
                         "enable.auto.commit": False})
    consumer.subscribe(topics)
    records: list[tuple[str, Any]] = []
    deadline = time.monotonic() + timeout
    settled_at: float | None = None
    try:
        while time.monotonic() < deadline:
            msg = consumer.poll(0.3)
            if msg is not None and not msg.error():
                records.append((msg.topic(), msgspec.json.decode(msg.value())))
            if settled_at is None and until(records):
                settled_at = time.monotonic() + settle
            if settled_at is not None and time.monotonic() >= settled_at:
                return records
        raise AssertionError(f"condition not met within {timeout} s; got {len(records)} records")
    finally:
        consumer.close()
