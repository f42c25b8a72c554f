"""Page-load times of the desk over a big store: 100,000 alerts and a day of one-second bars.

Fills a temporary store through :class:`streams.store.StoreWriter` (the store writer's own write
path: parts flushed in batches and compacted), starts the real dashboard
(:func:`dashboard.serve.serve`), logs in as a supervisor in headless Chromium and times each
page from the sidebar click until its main content (title, then the metrics or captions that
come after its queries) is visible. Two rounds: the first is cold (nothing cached in the
server), the second is warm as far as the 2-s query cache lets it be.

    .venv/bin/python scripts/desk_load.py [--alerts 100000] [--instruments 8] [--seconds 86400]

Not a test: these figures depend on the machine and on what else runs on it.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dashboard.auth import write_users  # noqa: E402
from dashboard.serve import serve, stop, wait_ready  # noqa: E402
from streams.broker import free_port  # noqa: E402
from streams.store import StoreWriter  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
USER, NAME, PASSWORD = "sue", "Sue Supervisor", "pw-sue-load"
VENUE = "m2m-load"
KINDS = ("price_spike", "flash_crash", "wash_trade", "spoofing", "layering", "collusion",
         "circular_trading", "sybil_cluster")
#: (sidebar link, texts that show the page's main content once its queries ran)
PAGES = [
    ("Market board", ["Store freshness", "Instruments not trading", "Halt timeline"]),
    ("Prices", ["Last price", "Bars up to", "Alerts on"]),
    ("Market structure", ["Highest HHI now", "windows from"]),
    ("Alert queue", ["alerts match"]),
    ("Cases and audit", ["Being worked", "Audit trail"]),
    ("Agents", ["Type part of an agent id"]),
    ("Halt and resume", ["Current states", "Manual actions"]),
    ("Replay a tape", ["Replays"]),
]


def _iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def fill(store: Path, *, alerts: int, instruments: int, seconds: int, batch: int = 50_000) -> None:
    """A day of bars ending now for ``instruments`` instruments, ``alerts`` alerts of mixed
    kinds spread over it, some halts, structure windows (one a minute) and an agent registry."""
    rng = random.Random(7)
    end = datetime.now(UTC).replace(microsecond=0)
    start = end - timedelta(seconds=seconds)
    names = [f"LOAD-{i:02d}" for i in range(instruments)]
    agents = [f"bot-{i}" for i in range(500)]
    with StoreWriter(store) as writer:
        t0 = time.perf_counter()
        for name in names:  # one instrument at a time, flushed every `batch` bars
            price = rng.uniform(1, 100)
            rows: list[dict[str, Any]] = []
            for s in range(seconds):
                price *= 1 + rng.gauss(0, 0.0005)
                rows.append({"venue": VENUE, "instrument": name,
                             "ts": _iso(start + timedelta(seconds=s + 1)), "open": price,
                             "high": price * 1.0005, "low": price * 0.9995, "close": price,
                             "volume": float(rng.randint(1, 50)), "notional": price * 10,
                             "trades": rng.randint(1, 9)})
                if len(rows) >= batch:
                    writer.add("bars", rows)
                    writer.flush()
                    rows = []
            writer.add("bars", rows)
            writer.flush()
        print(f"bars: {instruments} × {seconds:,} in {time.perf_counter() - t0:.1f} s",
              flush=True)
        t0 = time.perf_counter()
        rows = []
        for n in range(alerts):
            kind, name = KINDS[n % len(KINDS)], rng.choice(names)
            pair = rng.sample(agents, 2)
            rows.append({"schema": "alert/1", "alert_id": f"load-{n:06d}",
                         "ts": _iso(start + timedelta(seconds=rng.uniform(0, seconds))),
                         "kind": kind, "score": round(rng.uniform(20, 99), 1),
                         "instrument": name, "agents": pair, "venue": VENUE,
                         "detector": f"{kind}/1",
                         "summary": f"{name}: {kind.replace('_', ' ')} by {pair[0]}",
                         "evidence": {"n": n, "thresholds": {"x": 1.0}, "crossed": ["x"]}})
            if len(rows) >= batch // 5:
                writer.add("alerts", rows)
                writer.flush()
                rows = []
        writer.add("alerts", rows)
        halts = []
        for n in range(200):
            name, s = rng.choice(names), rng.randint(0, seconds - 600)
            t = start + timedelta(seconds=s)
            for state, dt in (("HALTED", 0), ("TRADING", 300)):
                at = t + timedelta(seconds=dt)
                halts.append({"schema": "halt/1", "seq": int(at.timestamp() * 1e6) + n,
                              "ts": _iso(at), "emitted_at": _iso(at), "venue": VENUE,
                              "instrument": name, "state": state, "reason": "SPIKE"
                              if state == "HALTED" else "RESUME",
                              "resume_at": _iso(at + timedelta(seconds=300))
                              if state == "HALTED" else None, "reference_price": 10.0,
                              "band_low": 9.0, "band_high": 11.0, "alert_ids": []})
        writer.add("halts", halts)
        writer.add("structure", [
            {"venue": VENUE, "instrument": name, "window_start": start.timestamp() + 60 * w,
             "window_end": start.timestamp() + 60 * (w + 1), "trades": 40, "volume": 100.0,
             "notional": 400.0, "agents": 6, "hhi": rng.uniform(0.05, 0.6),
             "top5_share": rng.uniform(0.3, 0.9), "new_entrant_share": rng.uniform(0, 0.2),
             "new_entrants": 1, "counterparty_hhi": rng.uniform(0.1, 0.5),
             "top_pair_share": 0.4, "self_trade_share": 0.0, "partitions": 1,
             "truncated": False} for name in names for w in range(seconds // 60)])
        writer.add("agents", [{"agent_id": a, "owner": f"owner-{i % 40}",
                               "funded_by": f"fund-{i % 15}"} for i, a in enumerate(agents)])
        writer.flush()
        print(f"alerts: {alerts:,} (+400 halts, structure, agents) in "
              f"{time.perf_counter() - t0:.1f} s", flush=True)
    parts = {k.name: len(list(k.glob("*.parquet"))) for k in sorted(store.iterdir()) if k.is_dir()}
    print("parts per kind:", parts, flush=True)


def measure(url: str, rounds: int) -> list[dict[str, float]]:
    from playwright.sync_api import sync_playwright

    out: list[dict[str, float]] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        t0 = time.perf_counter()
        page.goto(url, wait_until="domcontentloaded")
        page.get_by_role("heading", name="Log in to the surveillance desk").wait_for(
            timeout=60_000)
        page.get_by_role("textbox", name="User name").fill(USER)
        page.get_by_role("textbox", name="Password").fill(PASSWORD)
        page.get_by_role("button", name="Log in").click()
        for text in PAGES[0][1]:  # the landing page is the market board
            page.get_by_text(text).first.wait_for(timeout=120_000)
        print(f"log in to the board: {time.perf_counter() - t0:.2f} s", flush=True)
        for _ in range(rounds):
            times: dict[str, float] = {}
            for link, texts in [*PAGES[1:], PAGES[0]]:
                t0 = time.perf_counter()
                page.get_by_role("link", name=link).click()
                page.get_by_role("heading", name=link).wait_for(timeout=120_000)
                for text in texts:
                    page.get_by_text(text).first.wait_for(timeout=120_000)
                times[link] = time.perf_counter() - t0
                if page.get_by_text("Traceback").count():
                    print(f"!! {link} shows a traceback", flush=True)
            out.append(times)
        browser.close()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--alerts", type=int, default=100_000)
    ap.add_argument("--instruments", type=int, default=8)
    ap.add_argument("--seconds", type=int, default=86_400)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--keep", action="store_true", help="keep the temporary data folder")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="desk-load-"))
    store = tmp / "store"
    fill(store, alerts=args.alerts, instruments=args.instruments, seconds=args.seconds)
    write_users(tmp / "users.toml", {USER: (NAME, "supervisor", PASSWORD)})
    port = free_port()
    proc = serve(store_dir=store, port=port, log_path=tmp / "streamlit.log")
    try:
        wait_ready(port, 90, proc=proc)
        rounds = measure(f"http://127.0.0.1:{port}", args.rounds)
    finally:
        stop(proc)
    print(f"\nseconds per page ({args.alerts:,} alerts, {args.instruments} instruments × "
          f"{args.seconds:,} s of bars; click → main content visible)")
    print(f"{'page':<20}" + "".join(f"{'round ' + str(i + 1):>10}" for i in range(len(rounds))))
    for link, _ in PAGES:
        print(f"{link:<20}" + "".join(f"{r[link]:>10.2f}" for r in rounds))
    print(f"data in {tmp}" if args.keep else "")
    if not args.keep:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
