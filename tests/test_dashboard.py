"""The dashboard: the store queries it shows, and every page under Streamlit's AppTest."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from dashboard.queries import StoreReader
from dashboard.serve import APP
from streams.store import StoreWriter

__all__: list[str] = []

APP_DIR = APP.parent
T0 = datetime(2024, 5, 6, 14, 30, tzinfo=UTC)
GPU, KWH, TB = "GPU-H100-1H", "KWH-SA-GRID", "STORAGE-TB-MO"


def _iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def _bars(instrument: str, start: float, seconds: int = 120) -> list[dict[str, Any]]:
    out = []
    for s in range(seconds):
        p = start * (1 - 0.002 * s) if instrument == GPU and s > 60 else start
        out.append({"venue": "m2m-x", "instrument": instrument,
                    "ts": _iso(T0 + timedelta(seconds=s)), "open": p, "high": p * 1.001,
                    "low": p * 0.999, "close": p, "volume": 10 + s % 7, "notional": 10 * p,
                    "trades": 2})
    return out


def _halt(second: int, instrument: str, state: str, reason: str,
          ids: tuple[str, ...] = ()) -> dict[str, Any]:
    t = T0 + timedelta(seconds=second)
    return {"schema": "halt/1", "seq": second * 1_000_000, "ts": _iso(t), "emitted_at": _iso(t),
            "venue": "m2m-x", "instrument": instrument, "state": state, "reason": reason,
            "resume_at": _iso(t + timedelta(minutes=5)) if state != "TRADING" else None,
            "reference_price": 2.4, "band_low": 2.28, "band_high": 2.52, "alert_ids": list(ids)}


def _alert(alert_id: str, second: int, kind: str, score: float, instrument: str | None,
           summary: str, evidence: dict[str, Any]) -> dict[str, Any]:
    return {"schema": "alert/1", "alert_id": alert_id, "ts": _iso(T0 + timedelta(seconds=second)),
            "kind": kind, "score": score, "instrument": instrument, "agents": ["bot-1", "bot-2"],
            "venue": "m2m-x", "detector": f"{kind}/1", "summary": summary, "evidence": evidence}


WASH_EVIDENCE = {
    "pairs": 20, "volume_match": 0.9980000000000001,
    "edges": [{"buyer": "bot-1", "seller": "bot-2", "count": 10, "qty": 50.0, "notional": 200.0},
              {"buyer": "bot-2", "seller": "bot-1", "count": 10, "qty": 50.0, "notional": 201.0}],
    "thresholds": {"volume_match": 0.99}, "crossed": ["volume_match"],
}

ALERTS = [
    _alert("a-flash", 75, "flash_crash", 91, GPU, "GPU-H100-1H fell 12% in 45 s",
           {"drop_pct": 12.0, "trade_ids": ["t1", "t2"]}),
    _alert("a-wash", 30, "wash_trade", 64.5, TB, "bot-1 and bot-2 traded back and forth",
           WASH_EVIDENCE),
    _alert("a-spike", 110, "price_spike", 78, KWH, "KWH-SA-GRID jumped 35% in 4 s",
           {"jump_pct": 35.0}),
]


def fill_store(store: Path) -> None:
    """Three instruments; GPU paused then resumed, KWH halted (and extended), 3 alerts."""
    with StoreWriter(store) as writer:
        for instrument, price in ((GPU, 2.5), (KWH, 0.12), (TB, 4.0)):
            writer.add("bars", _bars(instrument, price))
        writer.add("halts", [
            _halt(75, GPU, "PAUSED", "LUDP", ("a-flash",)),
            _halt(100, GPU, "TRADING", "RESUME"),
            _halt(110, KWH, "HALTED", "SPIKE", ("a-spike",)),
            _halt(115, KWH, "HALTED", "SPIKE", ("a-spike",)),  # extended: still since 110
        ])
        writer.add("alerts", ALERTS)
        writer.add("agents", [{"agent_id": "bot-1", "owner": "acme", "funded_by": "fund-9"},
                              {"agent_id": "bot-2", "owner": "acme", "funded_by": "fund-9"}])
        writer.add("structure", [
            {"venue": "m2m-x", "instrument": TB, "window_start": T0.timestamp() + 60 * w,
             "window_end": T0.timestamp() + 60 * (w + 1), "trades": 40, "volume": 100.0,
             "notional": 400.0, "agents": 6, "hhi": 0.2 + 0.1 * w, "top5_share": 0.8,
             "new_entrant_share": 0.1, "new_entrants": 1, "counterparty_hhi": 0.3,
             "top_pair_share": 0.4, "self_trade_share": 0.0, "partitions": 1,
             "truncated": False} for w in range(2)])


@pytest.fixture
def filled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A filled store under ``$SURVEIL_DATA_DIR/store``; yields the store directory."""
    fill_store(tmp_path / "store")
    monkeypatch.setenv("SURVEIL_DATA_DIR", str(tmp_path))
    yield tmp_path / "store"
    st.cache_data.clear()
    st.cache_resource.clear()


@pytest.fixture
def empty(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("SURVEIL_DATA_DIR", str(tmp_path))
    yield tmp_path / "store"
    st.cache_data.clear()
    st.cache_resource.clear()


def page(name: str, role: str = "analyst") -> AppTest:
    at = AppTest.from_file(str(APP_DIR / "app_pages" / f"{name}.py"), default_timeout=60)
    at.session_state["desk_user"] = {"username": role[:3], "name": role.title(), "role": role}
    return at.run()


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def captions(at: AppTest) -> str:
    return "\n".join(c.value for c in at.caption)


# -- queries ------------------------------------------------------------------------------------


def test_queries_on_a_filled_store(filled: Path) -> None:
    reader = StoreReader(filled)
    assert reader.instruments() == [GPU, KWH, TB]
    counts = reader.counts()
    assert (counts.instruments, counts.alerts, counts.halts, counts.halts_active) == (3, 3, 4, 1)
    assert counts.bars == 360
    assert dict(counts.alerts_by_kind) == {"flash_crash": 1, "price_spike": 1, "wash_trade": 1}
    assert counts.last_event == T0 + timedelta(seconds=119)

    board = reader.halt_board()
    assert board["instrument"].to_list() == [KWH, GPU]  # active halts first
    kwh = board.row(0, named=True)
    assert (kwh["state"], kwh["reason"], kwh["active"]) == ("HALTED", "SPIKE", True)
    assert kwh["since"] == T0 + timedelta(seconds=110)  # the extension keeps the start
    assert board.row(1, named=True)["state"] == "TRADING"

    bars = reader.bars(GPU, limit=30)
    assert bars.height == 30
    assert bars["ts"].is_sorted()
    assert bars["ts"][-1] == T0 + timedelta(seconds=119)
    window = reader.bars(GPU, window_s=10)
    assert window["ts"].to_list() == [T0 + timedelta(seconds=s) for s in range(109, 120)]
    assert reader.halts(GPU)["state"].to_list() == ["TRADING", "PAUSED"]
    assert reader.latest_alerts()["alert_id"].to_list() == ["a-spike", "a-flash", "a-wash"]
    assert reader.latest_alerts(kind="wash_trade")["alert_id"].to_list() == ["a-wash"]
    assert reader.latest_alerts(min_score=70, limit=1)["alert_id"].to_list() == ["a-spike"]
    assert reader.alert_kinds() == ["flash_crash", "price_spike", "wash_trade"]
    detail = reader.alert("a-flash")
    assert detail is not None
    assert detail["evidence"] == {"drop_pct": 12.0, "trade_ids": ["t1", "t2"]}


def test_market_wide_halts_count_for_every_instrument(tmp_path: Path) -> None:
    with StoreWriter(tmp_path) as writer:
        writer.add("halts", [_halt(10, "*", "HALTED", "MWC1")])
    reader = StoreReader(tmp_path)
    assert reader.instruments() == []  # "*" is not an instrument
    assert reader.halts(GPU)["instrument"].to_list() == ["*"]
    assert reader.halts(GPU, market_wide=False).is_empty()
    assert reader.counts().halts_active == 1


# -- pages --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "title"), [("board", "Market board"), ("prices", "Prices"),
                                             ("alerts", "Alert queue"),
                                             ("structure", "Market structure")])
def test_pages_on_an_empty_store(empty: Path, name: str, title: str) -> None:
    at = page(name)
    assert not at.exception
    assert [t.value for t in at.title] == [title]
    note = next(c.value for c in at.caption if c.value.startswith("No "))
    assert "is empty" in note
    assert str(empty) in note
    if name == "board":  # the health strip says the pipeline is not there
        assert "the store has no data yet" in at.error[0].value
    else:
        assert not at.metric


def test_alerts_page_with_bars_but_no_alerts(tmp_path: Path, empty: Path) -> None:
    with StoreWriter(empty) as writer:
        writer.add("bars", _bars(GPU, 2.5, 5))
    at = page("alerts")
    assert not at.exception
    assert captions(at).startswith("No alerts yet in")
    at = page("prices")
    assert metrics(at)["State"] == "TRADING"
