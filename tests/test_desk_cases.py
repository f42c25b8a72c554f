"""A case action goes the whole way: the desk publishes it to the ``cases`` topic on the real
embedded broker, the store writer persists it, and the audit trail shows it."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import streamlit as st
from test_dashboard import fill_store, metrics, page

from dashboard.cases import audit
from dashboard.queries import StoreReader
from streams.settings import Settings
from streams.store import run_store_writer
from streams.topics import ensure_topics

__all__: list[str] = []

pytestmark = [pytest.mark.integration]


@pytest.fixture
def pipeline(broker: str, topic_prefix: str, tmp_path: Path,
             monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A filled store, the topics, and a store writer consuming them; yields the store."""
    fill_store(tmp_path / "store")
    settings = Settings(brokers=broker, topic_prefix=topic_prefix, data_dir=tmp_path,
                        session_timeout_s=6)
    ensure_topics(broker, settings.topics.all())
    for name, value in (("SURVEIL_BROKERS", broker), ("SURVEIL_TOPIC_PREFIX", topic_prefix),
                        ("SURVEIL_DATA_DIR", str(tmp_path))):
        monkeypatch.setenv(name, value)
    stop = threading.Event()
    writer = threading.Thread(target=run_store_writer, args=(settings,),
                              kwargs={"stop": stop, "flush_every_s": 0.2}, daemon=True)
    writer.start()
    try:
        yield tmp_path / "store"
    finally:
        stop.set()
        writer.join(30)
        st.cache_data.clear()
        st.cache_resource.clear()


def _wait_for(store: Path, actions: int, timeout: float = 60) -> None:
    reader = StoreReader(store)
    deadline = time.monotonic() + timeout
    while audit(reader).height < actions:
        assert time.monotonic() < deadline, "the case actions never reached the store"
        time.sleep(0.3)


def test_a_case_action_goes_through_the_broker_into_the_audit_trail(pipeline: Path) -> None:
    at = page("alerts", role="analyst")
    at.multiselect(key="q_kinds").select("wash_trade").run()
    assert "This alert is not part of a case." in "\n".join(c.value for c in at.caption)
    at.text_input(key="open_reason").input("round trips between two bots of one owner")
    at.button[0].click().run()
    assert not at.exception
    assert "sent to the `cases` topic" in at.success[0].value
    _wait_for(pipeline, 1)

    st.cache_data.clear()
    at = page("alerts", role="analyst")
    at.multiselect(key="q_kinds").select("wash_trade").run()
    assert metrics(at)["Disposition"] == "new"
    at.selectbox(key="case_disposition").select("investigating")
    at.text_input(key="case_assignee").input("bea")
    at.text_area(key="case_note").input("same owner on both sides")
    at.text_input(key="case_reason").input("registry shows one owner")
    at.button[0].click().run()
    assert not at.exception
    assert "3 action(s) sent" in at.success[0].value
    _wait_for(pipeline, 4)

    st.cache_data.clear()
    at = page("cases", role="viewer")
    assert metrics(at)["Being worked"] == "1"
    trail = audit(StoreReader(pipeline))
    assert sorted(trail["action"].to_list()) == ["assign", "disposition", "note", "open"]
    assert set(trail["actor"].to_list()) == {"ana"}
    assert "registry shows one owner" in trail["reason"].to_list()
