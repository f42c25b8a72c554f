"""Shared pytest fixtures.

- ``_clean_surveil_env`` (autouse): no test sees the developer's ``SURVEIL_*`` variables.
- ``broker`` (module): bootstrap address of an embedded Tansu broker shared by one test module;
  its log is ``<pytest tmp>/broker<N>/tansu.log``. One per module, not one per run: the broker
  keeps every record in memory (no retention), and a module should not pay for what the whole
  run has produced before it (starting one takes milliseconds).
- ``browser`` (module): headless Debian Chromium driven by Playwright (skipped when it is
  missing, unless ``SURVEIL_REQUIRE_BROWSER=1``).
- ``topic_prefix``: a unique topic prefix per test, so tests sharing the broker never read each
  other's messages (``Topics(prefix=topic_prefix)``).

Notes for tests using the broker: the first join of a consumer group takes about half the
session timeout, so use ``session.timeout.ms`` ~6000; create topics with
:func:`streams.topics.ensure_topics` before producing (Tansu auto-creates unknown topics with its
own partition count); aiokafka producers must not be idempotent.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest

from streams.broker import EmbeddedBroker, free_port

__all__: list[str] = []


@pytest.fixture(autouse=True)
def _clean_surveil_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Remove every ``SURVEIL_*`` variable from the environment for the test's duration."""
    for name in list(os.environ):
        if name.startswith("SURVEIL_"):
            monkeypatch.delenv(name)


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Start one embedded broker on a free port for the module; yield ``"127.0.0.1:PORT"``."""
    log_path = tmp_path_factory.mktemp("broker") / "tansu.log"
    with EmbeddedBroker(port=free_port(), log_path=log_path) as embedded:
        yield embedded.bootstrap


@pytest.fixture
def topic_prefix() -> str:
    """A prefix unique to this test, e.g. ``"t1a2b3c4d."``."""
    return f"t{uuid4().hex[:8]}."


CHROMIUM = Path("/usr/bin/chromium")
#: Read at import: the autouse fixture above hides SURVEIL_* variables from tests.
REQUIRE_BROWSER = os.environ.get("SURVEIL_REQUIRE_BROWSER") == "1"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium (``/usr/bin/chromium``) through Playwright, one per module."""
    if not CHROMIUM.exists():
        reason = f"{CHROMIUM} is missing (install Debian's chromium package)"
        if REQUIRE_BROWSER:
            pytest.fail(f"SURVEIL_REQUIRE_BROWSER=1 but {reason}")
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        try:
            yield chromium
        finally:
            chromium.close()
