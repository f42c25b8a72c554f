"""The regulator's desk under AppTest: every page, the queue over the whole history, cases as a
fold of their actions, roles and log-in. (The broker round trip is in test_desk_cases.py.)"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest
from test_dashboard import APP_DIR, GPU, KWH, TB, captions, fill_store, metrics, page

from dashboard import fmt
from dashboard.auth import write_users
from dashboard.cases import AlertFilter, alert_page, case_states, fold
from dashboard.queries import StoreReader
from streams.cases import new_action
from streams.store import StoreWriter

__all__: list[str] = []


def fill_desk(store: Path) -> None:
    """The dashboard's store plus one case (the wash alert: opened, investigating, a note)."""
    fill_store(store)
    actions = [new_action("open", case_id="a-wash", actor="ana", role="analyst",
                          alert_ids=["a-wash"], reason="round trips"),
               new_action("disposition", case_id="a-wash", actor="ana", role="analyst",
                          disposition="investigating", reason="looking"),
               new_action("note", case_id="a-wash", actor="ana", role="analyst",
                          note="same owner on both sides", reason="registry")]
    with StoreWriter(store) as writer:
        writer.add("cases", [msgspec.to_builtins(a) for a in actions])


@pytest.fixture
def desk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    fill_desk(tmp_path / "store")
    monkeypatch.setenv("SURVEIL_DATA_DIR", str(tmp_path))
    yield tmp_path / "store"
    st.cache_data.clear()
    st.cache_resource.clear()


def test_queue_filters_sorts_and_pages_the_whole_history(desk: Path) -> None:
    reader = StoreReader(desk)
    total, rows = alert_page(reader, AlertFilter())
    assert total == 3
    assert rows["alert_id"].to_list() == ["a-spike", "a-flash", "a-wash"]
    _, by_score = alert_page(reader, AlertFilter(), sort="score", descending=False, limit=2)
    assert by_score["alert_id"].to_list() == ["a-wash", "a-spike"]
    _, second = alert_page(reader, AlertFilter(), sort="score", descending=False, offset=2)
    assert second["alert_id"].to_list() == ["a-flash"]
    assert alert_page(reader, AlertFilter(kinds=("wash_trade", "flash_crash")))[0] == 2
    assert alert_page(reader, AlertFilter(min_score=70, max_score=80))[1]["alert_id"].to_list() \
        == ["a-spike"]
    assert alert_page(reader, AlertFilter(text="jumped"))[1]["alert_id"].to_list() == ["a-spike"]
    assert alert_page(reader, AlertFilter(instrument=TB))[0] == 1
    assert alert_page(reader, AlertFilter(agent="bot-2"))[0] == 3
    assert alert_page(reader, AlertFilter(agent="nobody"))[0] == 0
    assert alert_page(reader, AlertFilter(venue="elsewhere"))[0] == 0
    cased = alert_page(reader, AlertFilter(disposition="investigating"))[1]
    assert cased.select("alert_id", "case_id").rows() == [("a-wash", "a-wash")]
    assert alert_page(reader, AlertFilter(disposition="none"))[0] == 2


def test_sql_fold_and_python_fold_agree(desk: Path) -> None:
    reader = StoreReader(desk)
    sql = case_states(reader).row(0, named=True)
    py = fold("a-wash", reader.frame("SELECT * FROM cases").to_dicts())
    assert py is not None
    assert (sql["disposition"], sql["assignee"], sql["alert_ids"], sql["notes"]) == \
        (py.disposition, py.assignee, py.alert_ids, len(py.notes)) == \
        ("investigating", None, ["a-wash"], 1)


def test_numbers_are_rounded_once() -> None:
    assert fmt.score(64.5) == "65"  # the same everywhere: no 64.5 / 65 / 64
    assert fmt.num(9.200000000000001) == "9.2"
    assert fmt.tidy({"x": [0.9980000000000001]}) == {"x": [0.998]}


def test_board_page(desk: Path) -> None:
    at = page("board")
    assert not at.exception
    assert [t.value for t in at.title] == ["Market board"]
    shown = metrics(at)
    assert shown["Instruments not trading"] == "1 of 3"
    assert shown["Market-wide state"] == "TRADING"
    assert shown["Halts acknowledged"] == "0 of 1"  # no exchange acknowledged the KWH halt
    assert shown["Worker heartbeat"] == "not stored"
    assert "STALE" in at.error[0].value  # 2024 data: event time lags the wall clock
    assert [h.value for h in at.subheader] == ["Cross-market returns", "Venue index",
                                               "Halt timeline"]


def test_alert_queue_opens_a_case_file_with_its_network(desk: Path) -> None:
    at = page("alerts")
    assert not at.exception
    assert "3 alerts match; showing 1–3" in captions(at)
    at.multiselect(key="q_kinds").select("wash_trade").run()
    assert "1 alerts match" in captions(at)
    assert metrics(at)["Score"] == "65"
    assert metrics(at)["Disposition"] == "investigating"
    assert "Who traded with whom" in "\n".join(m.value for m in at.markdown)
    assert "2 pairs from the evidence" in captions(at)
    assert "Crossed volume_match: 0.998 against a threshold of 0.99." in \
        "\n".join(m.value for m in at.markdown)
    assert at.selectbox(key="case_disposition").options == ["investigating", "escalated",
                                                            "dismissed", "confirmed"]
    at.text_input(key="q_text").input("no such thing").run()
    assert "No alerts match these filters." in captions(at)


def test_viewer_sees_cases_but_cannot_act(desk: Path) -> None:
    at = page("alerts", role="viewer")
    at.multiselect(key="q_kinds").select("wash_trade").run()
    assert not at.exception
    assert metrics(at)["Disposition"] == "investigating"
    assert not at.button  # no form, no buttons
    at = page("actions", role="viewer")
    assert "needs the **supervisor** role" in at.warning[0].value
    at = page("replay", role="viewer")
    assert "needs the **analyst** role" in at.warning[0].value


def test_recording_needs_a_reason(desk: Path) -> None:
    at = page("alerts")
    at.multiselect(key="q_kinds").select("wash_trade").run()
    at.text_area(key="case_note").input("looked again")
    at.button[0].click().run()  # the form's submit button
    assert not at.exception
    assert "Say why" in at.error[0].value


def test_cases_page(desk: Path) -> None:
    at = page("cases")
    assert not at.exception
    assert metrics(at) == {"Cases": "1", "Being worked": "1", "Closed": "0"}
    assert "3 actions, newest first" in captions(at)
    assert len(at.get("download_button")) == 6


def test_agents_page(desk: Path) -> None:
    at = page("agents")
    at.text_input(key="agent_query").input("fund-9").run()
    assert not at.exception
    assert at.selectbox(key="agent_pick").options == ["bot-1", "bot-2"]
    shown = metrics(at)
    assert (shown["Owner"], shown["Funded by"], shown["Alerts naming it"]) == \
        ("acme", "fund-9", "3")
    assert "2 agents funded by fund-9." in captions(at)


def test_structure_page(desk: Path) -> None:
    at = page("structure")
    assert not at.exception
    assert metrics(at)["Highest HHI now"] == "0.3"
    assert "2 windows from 2024-05-06 14:30:00 UTC" in captions(at)


def test_prices_page_log_scale(desk: Path) -> None:
    at = page("prices")
    at.selectbox(key="instrument").select(GPU).run()
    at.selectbox(key="scale").select("log").run()
    assert not at.exception
    assert metrics(at)["State"] == "TRADING"


def test_actions_page_for_a_supervisor(desk: Path) -> None:
    at = page("actions", role="supervisor")
    assert not at.exception
    send = at.button(key="m_send")
    assert send.disabled  # no reason, no confirmation
    at.text_area(key="m_note").input("runaway bot").run()
    at.checkbox(key="m_confirm").check().run()
    assert not at.button(key="m_send").disabled
    assert at.selectbox(key="m_instrument").options[:2] == ["* — the whole venue", GPU]


def test_replay_page_runs_a_backtest(desk: Path, tmp_path: Path) -> None:
    from replay.synthetic import FeedSpec, generate
    from replay.tape import write_tape

    uploads = tmp_path / "replays" / "uploads"
    uploads.mkdir(parents=True)
    write_tape(generate(FeedSpec(seed=1, rate=2), start=1.767e9, duration_s=60),
               uploads / "t.csv")
    at = page("replay")
    assert not at.exception
    at.selectbox(key="r_pick").select(uploads / "t.csv").run()
    at.button(key="r_run").click().run()
    assert not at.exception, at.exception
    assert "Every page now shows this replay" in at.success[0].value
    assert "replays" in at.session_state["store_override"]


def test_login_with_roles(desk: Path, tmp_path: Path) -> None:
    write_users(tmp_path / "users.toml", {"sue": ("Sue", "supervisor", "pw-sue"),
                                          "val": ("Val", "viewer", "pw-val")})
    at = AppTest.from_file(str(APP_DIR / "app.py"), default_timeout=60).run()
    assert [t.value for t in at.title] == ["Log in to the surveillance desk"]
    at.text_input(key="login_user").input("sue")
    at.text_input(key="login_password").input("wrong")
    at.button[0].click().run()
    assert "wrong password" in at.error[0].value
    at.text_input(key="login_password").input("pw-sue")
    at.button[0].click().run()
    assert not at.exception
    assert [t.value for t in at.title] == ["Market board"]
    at.switch_page("app_pages/actions.py").run()
    assert [t.value for t in at.title] == ["Halt and resume"]
    assert not at.warning
    for path, title in (("app_pages/alerts.py", "Alert queue"),
                        ("app_pages/cases.py", "Cases and audit"),
                        ("app_pages/agents.py", "Agents"),
                        ("app_pages/structure.py", "Market structure"),
                        ("app_pages/prices.py", "Prices")):
        at.switch_page(path).run()
        assert not at.exception
        assert [t.value for t in at.title] == [title]
    assert KWH in at.selectbox(key="instrument").options
