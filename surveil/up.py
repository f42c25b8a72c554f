"""``surveil up``: the whole system on one machine, stopped cleanly by Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

import click

from streams.settings import Settings

__all__ = ["run_up"]


def _spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen([sys.executable, "-m", "surveil.cli", *args], env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def run_up(settings: Settings, *, port: int, dashboard_port: int, crash_every: float,
           warmup: float = 90.0, external: bool | None = None) -> int:
    """Start broker (unless ``SURVEIL_BROKERS`` points elsewhere), worker, store writer, the
    reference exchange with its live market, and the dashboard; block until Ctrl-C/SIGTERM;
    stop everything."""
    from dashboard.serve import wait_ready
    from streams.broker import EmbeddedBroker
    from streams.topics import ensure_topics

    logs = settings.data_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    external = ("SURVEIL_BROKERS" in os.environ) if external is None else external
    broker = None
    if not external:
        broker = EmbeddedBroker(port=port, log_path=logs / "broker.log").start()
        settings = settings.with_(brokers=broker.bootstrap)
    click.echo(f"broker: {settings.brokers}{'' if external else ' (embedded Tansu)'}")
    ensure_topics(settings.brokers, settings.topics.all(), partitions=settings.partitions)
    from streams.signing import ensure_keys, keys_dir

    ensure_keys(keys_dir(settings))  # the demo signs its halts and watches heartbeats
    click.echo(f"halt signing keys: {keys_dir(settings)} (rotate with `surveil keys --rotate`)")
    env = {**os.environ, "SURVEIL_BROKERS": settings.brokers,
           "SURVEIL_TOPIC_PREFIX": settings.topic_prefix,
           "SURVEIL_DATA_DIR": str(settings.data_dir.resolve())}
    from dashboard.auth import demo_users

    logins = demo_users(settings.data_dir)  # one desk user per role, made once
    procs = {
        "worker": _spawn(["worker", "--stage", "1"], env, logs / "worker.log"),
        "venue": _spawn(["worker", "--stage", "2"], env, logs / "venue.log"),
        "store": _spawn(["store"], env, logs / "store.log"),
        "exchange": _spawn(["exchange", "--crash-every", str(crash_every),
                            "--warmup", str(warmup)], env,
                           logs / "exchange.log"),
        "dashboard": _spawn(["dashboard", "--port", str(dashboard_port)], env,
                            logs / "dashboard.log"),
    }
    stopping = False

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    code = 0
    try:
        try:
            wait_ready(dashboard_port, 90)
            click.echo(f"dashboard: http://127.0.0.1:{dashboard_port}")
            for line in logins:
                click.echo(f"  {line}")
        except Exception as exc:  # noqa: BLE001 - report and keep the rest running
            click.echo(f"dashboard did not come up ({exc}); see {logs / 'dashboard.log'}",
                       err=True)
        click.echo(f"logs: {logs}  —  Ctrl-C stops everything")
        while not stopping:
            for name, p in procs.items():
                if p.poll() is not None:
                    click.echo(f"{name} exited with {p.returncode}; see {logs / (name + '.log')}",
                               err=True)
                    stopping, code = True, 1
            time.sleep(0.5)
    finally:
        click.echo("stopping…")
        for p in procs.values():
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        for p in procs.values():
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        if broker is not None:
            broker.stop()
        for s, h in old.items():
            signal.signal(s, h)
        click.echo("stopped")
    return code
