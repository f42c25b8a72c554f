"""The real dashboard in a real browser: ``serve()`` plus headless Debian Chromium (Playwright).

Streamlit sends its content over a websocket after the page loads, so a plain
``chromium --screenshot`` shows a blank page; Playwright waits for text to appear instead.
Table cells are drawn on a canvas, so the checks look at titles, metrics and captions.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dashboard.serve import serve, wait_ready
from streams.broker import free_port

__all__: list[str] = []

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = Path("/usr/bin/chromium")
#: Read at import: the autouse fixture in conftest.py hides SURVEIL_* variables from tests.
REQUIRE_BROWSER = os.environ.get("SURVEIL_REQUIRE_BROWSER") == "1"

PAGES = [
    # (url path, title, texts that prove the page rendered its data, screenshot name)
    ("", "Market surveillance", ["Active halts", "Halt board", "Latest event"], "overview"),
    ("prices", "Prices", ["Halts of KWH-SA-GRID", "Last price", "Bars up to"], "prices"),
    ("alerts", "Alerts", ["3 alerts, newest first", "KWH-SA-GRID jumped 35% in 4 s"], "alerts"),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from test_dashboard import fill_store  # the same store the AppTest tests use

    data_dir = tmp_path_factory.mktemp("dashboard")
    fill_store(data_dir / "store")
    port = free_port()
    proc = serve(store_dir=data_dir / "store", port=port, log_path=data_dir / "streamlit.log")
    try:
        wait_ready(port, 90, proc=proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        reason = f"{CHROMIUM} is missing (install Debian's chromium package)"
        if REQUIRE_BROWSER:
            pytest.fail(f"SURVEIL_REQUIRE_BROWSER=1 but {reason}")
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        try:
            yield chromium
        finally:
            chromium.close()


def _non_trivial(png: Path) -> None:
    from PIL import Image

    assert png.stat().st_size > 20_000, "screenshot is suspiciously small"
    with Image.open(png) as img:
        colours = img.convert("RGB").getcolors(maxcolors=1 << 16)
    assert colours is None or len(colours) > 200, "screenshot is (nearly) blank"


@pytest.mark.parametrize(("path", "title", "texts", "name"), PAGES, ids=[p[3] for p in PAGES])
def test_page_renders_in_chromium(server: str, browser: Any, tmp_path: Path, path: str,
                                  title: str, texts: list[str], name: str) -> None:
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        page.goto(f"{server}/{path}", wait_until="domcontentloaded")
        page.get_by_role("heading", name=title).wait_for(timeout=60_000)
        for text in texts:
            page.get_by_text(text).first.wait_for(timeout=30_000)
        assert page.get_by_text("Traceback").count() == 0
        if name == "prices":  # the Altair chart has been drawn
            page.locator("canvas, svg").first.wait_for(timeout=30_000)
        page.wait_for_timeout(1500)  # let charts finish their first paint
        shot = tmp_path / f"{name}.png"
        page.screenshot(path=str(shot), full_page=True)
    finally:
        page.close()
    _non_trivial(shot)
