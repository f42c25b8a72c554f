"""In a real browser, on the real broker: the market board's health strip turns red soon after
the stage-1 worker stops. A real ``surveil worker`` (signing its heartbeats with the detector
key), the real store writer (``surveil store``, keeping only signed heartbeats) and the real
dashboard; Chromium watches the board while the worker is stopped, and the seconds until the
stale banner names the worker's heartbeat are measured and printed.

The bound: a heartbeat counts as stale after ``STALE_S["heartbeat"]`` seconds, the health strip
is a fragment re-run every 2 s and its query is cached for ``ui.TTL_S``; a few seconds more for
the worker's last beat to reach the store and the browser to paint.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from kafka_helpers import running_worker, surveil_env
from test_dashboard_browser import USERS, _login, _shot

from dashboard.auth import write_users
from dashboard.market import STALE_S
from dashboard.serve import serve, wait_ready
from dashboard.serve import stop as _stop
from streams.broker import free_port
from streams.settings import Settings
from streams.signing import ensure_keys, keys_dir
from streams.topics import ensure_topics

__all__: list[str] = []

pytestmark = [pytest.mark.browser, pytest.mark.integration, pytest.mark.slow]

#: Seconds from stopping the worker to the red banner we accept: the staleness threshold, the
#: strip's refresh (2 s) and query cache (``dashboard.ui.TTL_S``, 2 s), and some slack for the
#: worker's shutdown and a loaded machine.
BOUND_S = STALE_S["heartbeat"] + 2.0 + 2.0 + 6.0


def _tail(*logs: Path) -> None:
    for log in logs:
        if log.exists():
            print(f"--- {log} ---\n" + log.read_bytes()[-3000:].decode(errors="replace"))


def test_the_health_strip_turns_red_soon_after_the_worker_stops(
        broker: str, topic_prefix: str, tmp_path: Path, browser: Any) -> None:
    settings = Settings(brokers=broker, topic_prefix=topic_prefix, data_dir=tmp_path,
                        session_timeout_s=6)
    ensure_topics(broker, settings.topics.all())
    ensure_keys(keys_dir(settings))  # the worker signs its beats; the store keeps signed ones
    write_users(tmp_path / "users.toml", {"sue": USERS["sue"]})
    env = {**surveil_env(broker, topic_prefix), "SURVEIL_DATA_DIR": str(tmp_path)}
    logs = [tmp_path / "store.log", tmp_path / "streamlit.log", tmp_path / "worker.log"]
    with logs[0].open("wb") as out:
        store = subprocess.Popen([sys.executable, "-m", "surveil.cli", "store"], env=env,
                                 stdout=out, stderr=subprocess.STDOUT)
    port = free_port()
    dashboard = serve(store_dir=settings.store_dir, port=port, log_path=logs[1])
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        with running_worker(broker, topic_prefix, logs[2]) as worker:
            wait_ready(port, 60, proc=dashboard)
            _login(page, f"http://127.0.0.1:{port}", "sue")
            page.get_by_role("link", name="Market board").click()
            page.get_by_role("heading", name="Market board").wait_for(timeout=30_000)
            # fresh: a stored heartbeat, a store written moments ago and no stale banner
            beat = page.get_by_test_id("stMetric").filter(has_text="Worker heartbeat")
            page.get_by_text("1 worker(s) beating in the last minute").wait_for(timeout=40_000)
            page.wait_for_function(
                "() => !document.body.innerText.includes('STALE')", timeout=20_000)
            assert "not stored" not in beat.inner_text()
            _shot(page, "sue-board-worker-fresh")

            stopped = time.monotonic()
            worker.terminate()
            worker.wait(30)
            exited = time.monotonic()
            page.get_by_text("the last worker heartbeat is").first.wait_for(
                timeout=BOUND_S * 1000)
            red = time.monotonic()
        banner = page.get_by_test_id("stAlert").filter(has_text="STALE")
        assert banner.count() == 1
        assert "do not trust this screen" in banner.inner_text()
        assert page.get_by_text("Traceback").count() == 0
        _shot(page, "sue-board-worker-stale")
        print(f"\nworker stopped in {exited - stopped:.1f} s; health strip red "
              f"{red - stopped:.1f} s after the stop (threshold {STALE_S['heartbeat']:.0f} s, "
              f"bound {BOUND_S:.0f} s)")
        assert red - stopped <= BOUND_S
    except BaseException:
        _tail(*logs)
        raise
    finally:
        page.close()
        _stop(dashboard)
        _stop(store)
