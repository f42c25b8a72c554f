"""The real desk in a real browser: ``serve()`` plus headless Debian Chromium (Playwright).

Streamlit sends its content over a websocket after the page loads, so a plain
``chromium --screenshot`` shows a blank page; Playwright waits for text to appear instead.
Table cells are drawn on a canvas, so the checks look at titles, metrics and captions. Each test
logs in through the form (a new browser page is a new session) and moves by the sidebar.
Screenshots land in ``$TMPDIR/desk-screenshots``.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dashboard.auth import write_users
from dashboard.serve import serve, stop, wait_ready
from streams.broker import free_port

__all__: list[str] = []

pytestmark = [pytest.mark.browser, pytest.mark.slow]

SHOTS = Path(tempfile.gettempdir()) / "desk-screenshots"
USERS = {"val": ("Val Viewer", "viewer", "pw-val"), "ana": ("Ana Analyst", "analyst", "pw-ana"),
         "sue": ("Sue Supervisor", "supervisor", "pw-sue")}

TOURS = {
    # role: [(sidebar link, title, texts that prove the page rendered its data)]
    "val": [("Market board", "Market board", ["Store freshness", "Halt timeline", "STALE"]),
            ("Prices", "Prices", ["Halts of KWH-SA-GRID", "Last price", "Bars up to"]),
            ("Market structure", "Market structure", ["Highest HHI now", "2 windows from"])],
    "ana": [("Alert queue", "Alert queue", ["3 alerts match", "KWH-SA-GRID jumped 35% in 4 s"]),
            ("Cases and audit", "Cases and audit", ["Audit trail", "Export"]),
            ("Agents", "Agents", ["Type part of an agent id"]),
            ("Replay a tape", "Replay a tape", ["Replays"])],
    "sue": [("Halt and resume", "Halt and resume", ["Current states", "Manual actions"])],
}

#: Texts that stand in a dataframe cell (an alert's summary in the queue).
GRID_TEXTS = {"KWH-SA-GRID jumped 35% in 4 s"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from test_desk import fill_desk  # the store the AppTest tests use, plus a case

    data_dir = tmp_path_factory.mktemp("dashboard")
    fill_desk(data_dir / "store")
    write_users(data_dir / "users.toml", USERS)
    port = free_port()
    proc = serve(store_dir=data_dir / "store", port=port, log_path=data_dir / "streamlit.log")
    try:
        wait_ready(port, 90, proc=proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(proc)


def _non_trivial(png: Path) -> None:
    from PIL import Image

    assert png.stat().st_size > 20_000, "screenshot is suspiciously small"
    with Image.open(png) as img:
        colours = img.convert("RGB").getcolors(maxcolors=1 << 16)
    assert colours is None or len(colours) > 200, "screenshot is (nearly) blank"


def _login(page: Any, server: str, user: str) -> None:
    page.goto(server, wait_until="domcontentloaded")
    page.get_by_role("heading", name="Log in to the surveillance desk").wait_for(timeout=60_000)
    page.get_by_role("textbox", name="User name").fill(user)
    page.get_by_role("textbox", name="Password").fill(USERS[user][2])
    page.get_by_role("button", name="Log in").click()
    page.get_by_text(USERS[user][0]).first.wait_for(timeout=30_000)


def _shot(page: Any, name: str) -> Path:
    page.wait_for_timeout(800)  # let charts finish their first paint
    SHOTS.mkdir(exist_ok=True)
    shot = SHOTS / f"{name}.png"
    page.screenshot(path=str(shot), full_page=True)
    _non_trivial(shot)
    return shot


@pytest.mark.parametrize("user", list(TOURS))
def test_every_page_renders_in_chromium(server: str, browser: Any, user: str) -> None:
    """Log in as each role and visit its pages by the sidebar; a screenshot of each."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        _login(page, server, user)
        for link, title, texts in TOURS[user]:
            page.get_by_role("link", name=link).click()
            page.get_by_role("heading", name=title).wait_for(timeout=60_000)
            for text in texts:
                # a dataframe's cells are drawn on a canvas; the grid keeps them as hidden
                # cells for screen readers, so a cell's text is there but never "visible"
                state = "attached" if text in GRID_TEXTS else "visible"
                page.get_by_text(text).first.wait_for(state=state, timeout=30_000)
            assert page.get_by_text("Traceback").count() == 0
            _shot(page, f"{user}-{link.lower().replace(' ', '-')}")
        if user == "val":  # a viewer neither halts nor replays
            assert page.get_by_role("link", name="Halt and resume").count() == 0
            assert page.get_by_role("link", name="Replay a tape").count() == 0
        if user == "ana":  # filter the queue down to the wash alert: its network and its case
            page.get_by_role("link", name="Alert queue").click()
            page.get_by_text("3 alerts match").first.wait_for(timeout=30_000)
            page.get_by_label("Search summary, id, instrument, agents").fill("back and forth")
            page.keyboard.press("Enter")
            page.get_by_text("1 alerts match").first.wait_for(timeout=30_000)
            for text in ("Who traded with whom", "2 pairs from the evidence", "Audit trail"):
                page.get_by_text(text).first.wait_for(timeout=30_000)
            page.set_viewport_size({"width": 1400, "height": 1400})
            _shot(page, "ana-wash-case-file")
    finally:
        page.close()


