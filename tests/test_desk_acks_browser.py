"""In a real browser, on the real broker: a supervisor halts an instrument from the desk, the
reference exchange (``run_exchange``, as ``surveil up`` runs it) applies the signed halt and
acknowledges it on ``halt_acks``, the store writer (``surveil store``) stores both, and the
market board shows "Halts acknowledged 1 of 1". Playwright driving Debian's Chromium; one
server, one browser for the module (see test_dashboard_browser.py for the conventions)."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from kafka_helpers import surveil_env
from test_dashboard_browser import _login, _shot

from dashboard.auth import write_users
from dashboard.serve import serve, wait_ready
from dashboard.serve import stop as _stop
from streams.broker import free_port
from streams.settings import Settings
from streams.signing import ensure_keys, keys_dir
from streams.store import StoreWriter
from streams.topics import ensure_topics

__all__: list[str] = []

pytestmark = [pytest.mark.browser, pytest.mark.integration, pytest.mark.slow]

USERS = {"sue": ("Sue Supervisor", "supervisor", "pw-sue")}
GPU, VENUE = "GPU-H100-1H", "m2m-sim"


@pytest.fixture(scope="module")
def desk(broker: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Broker topics, keys, a store with a few bars of the exchange's venue, the store writer,
    the exchange and the dashboard; yields the dashboard's URL."""
    from surveil.live import run_exchange

    data_dir = tmp_path_factory.mktemp("desk-acks")
    settings = Settings(brokers=broker, topic_prefix="browser-acks.", data_dir=data_dir,
                        session_timeout_s=6)
    ensure_topics(broker, settings.topics.all())
    ensure_keys(keys_dir(settings))  # the regulator signs the desk's manual halts
    write_users(data_dir / "users.toml", USERS)
    now = datetime.now(UTC).replace(microsecond=0)
    with StoreWriter(settings.store_dir) as writer:  # as if a worker had stored a minute of bars
        writer.add("bars", [{"venue": VENUE, "instrument": GPU, "open": 2.5, "high": 2.5,
                             "low": 2.5, "close": 2.5, "volume": 1.0, "notional": 2.5,
                             "trades": 1, "ts": (now - timedelta(seconds=s)).isoformat()}
                            for s in range(60)])
    env = {**surveil_env(broker, settings.topic_prefix), "SURVEIL_DATA_DIR": str(data_dir)}
    logs = [data_dir / "store.log", data_dir / "streamlit.log"]
    with logs[0].open("wb") as out:
        store = subprocess.Popen([sys.executable, "-m", "surveil.cli", "store"], env=env,
                                 stdout=out, stderr=subprocess.STDOUT)
    stop = threading.Event()
    exchange = threading.Thread(target=run_exchange, args=(settings,),
                                kwargs={"stop": stop, "crash_every": 0.0}, daemon=True)
    exchange.start()
    port = free_port()
    with pytest.MonkeyPatch.context() as mp:  # the dashboard publishes manual halts here
        mp.setenv("SURVEIL_BROKERS", broker)
        mp.setenv("SURVEIL_TOPIC_PREFIX", settings.topic_prefix)
        dashboard = serve(store_dir=settings.store_dir, port=port, log_path=logs[1])
    try:
        wait_ready(port, 90, proc=dashboard)
        yield f"http://127.0.0.1:{port}"
    except BaseException:
        for log in logs:
            print(f"--- {log} ---\n" + log.read_bytes()[-3000:].decode(errors="replace"))
        raise
    finally:
        _stop(dashboard)
        stop.set()
        exchange.join(30)
        _stop(store)


def test_a_manual_halt_is_acknowledged_by_the_exchange_on_the_board(desk: str,
                                                                    browser: Any) -> None:
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        _login(page, desk, "sue")  # test_dashboard_browser's Sue, same password
        page.get_by_role("link", name="Halt and resume").click()
        page.get_by_role("heading", name="Halt and resume").wait_for(timeout=60_000)
        page.get_by_test_id("stSelectbox").first.click()
        page.get_by_role("option", name=GPU).click()
        page.get_by_label("Reason (required; kept in the audit trail)").fill("runaway bot")
        page.get_by_text("I confirm:").click()
        send = page.get_by_role("button", name="Send")
        page.wait_for_function("b => !b.disabled", arg=send.element_handle(), timeout=30_000)
        send.click()
        page.get_by_text(f"Sent: {GPU} → HALTED").wait_for(timeout=30_000)

        page.get_by_role("link", name="Market board").click()
        page.get_by_role("heading", name="Market board").wait_for(timeout=60_000)
        acknowledged = page.get_by_test_id("stMetric").filter(has_text="Halts acknowledged")
        acknowledged.get_by_text("1 of 1").wait_for(timeout=45_000)
        assert page.get_by_text("HALT NOT ACKNOWLEDGED").count() == 0
        assert page.get_by_text("Traceback").count() == 0
        _shot(page, "sue-board-halt-acknowledged")
    finally:
        page.close()
