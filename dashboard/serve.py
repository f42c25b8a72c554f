"""Start the dashboard as a ``streamlit run`` subprocess and wait until it answers."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

__all__ = ["APP", "serve", "stop", "wait_ready"]

#: The Streamlit entry point.
APP = Path(__file__).with_name("app.py")


def serve(
    *,
    store_dir: Path,
    port: int = 8501,
    headless: bool = True,
    address: str | None = None,
    log_path: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Launch ``python -m streamlit run dashboard/app.py`` on ``port`` over ``store_dir``.

    The app reads ``$SURVEIL_STORE_DIR`` (set to ``store_dir``) and, for anything else that
    derives paths from it, ``$SURVEIL_DATA_DIR`` (the parent when ``store_dir`` is
    ``<data_dir>/store``, the layout of :attr:`streams.settings.Settings.store_dir`). Output goes
    to ``log_path`` when given. The server listens on ``address``, else
    ``$SURVEIL_DASHBOARD_ADDRESS``, else 127.0.0.1 only (not every interface). The caller owns
    the process: ``terminate()`` it when done.
    """
    store_dir = Path(store_dir).resolve()
    env = dict(os.environ, SURVEIL_STORE_DIR=str(store_dir))
    if store_dir.name == "store":
        env["SURVEIL_DATA_DIR"] = str(store_dir.parent)
    cmd = [
        sys.executable, "-m", "streamlit", "run", str(APP),
        "--server.port", str(port),
        "--server.headless", "true" if headless else "false",
        "--browser.gatherUsageStats", "false",
        "--server.fileWatcherType", "none",
        "--client.toolbarMode", "viewer",
    ]
    cmd += ["--server.address",
            address or os.environ.get("SURVEIL_DASHBOARD_ADDRESS") or "127.0.0.1"]
    if log_path is None:
        return subprocess.Popen(cmd, env=env)
    with open(log_path, "ab") as log:  # the child keeps its own descriptor
        return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)


def wait_ready(
    port: int,
    timeout: float = 30.0,
    *,
    host: str = "127.0.0.1",
    proc: subprocess.Popen[bytes] | None = None,
) -> None:
    """Poll ``/_stcore/health`` until it answers ``ok``; raise ``TimeoutError`` otherwise.

    With ``proc``, fail fast (``RuntimeError``) when the server process has exited.
    """
    url = f"http://{host}:{port}/_stcore/health"
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"dashboard exited with code {proc.returncode} before it was ready")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                body = resp.read().decode(errors="replace").strip()
                if resp.status == 200 and body == "ok":
                    return
                last = f"{resp.status} {body!r}"
        except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
            last = exc
        time.sleep(0.2)
    raise TimeoutError(f"dashboard on {url} not ready after {timeout:.0f} s (last: {last})")


def stop(proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    """Stop a process started by :func:`serve` (or any child): SIGTERM, then SIGKILL after
    ``timeout`` seconds."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
