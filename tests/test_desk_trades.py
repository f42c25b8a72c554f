"""Trades, worker heartbeats and exchange acknowledgements in the store, and what the desk makes of
them: the board's health strip, the agent page (activity, positions, counterparties) and the
case file (the agents' trades around the alert). AppTest; the broker round trip is in
test_desk_acks_kafka.py."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest
import streamlit as st
from test_dashboard import GPU, KWH, T0, TB, captions, metrics, page
from test_desk import fill_desk

from dashboard import agents, market
from dashboard.queries import StoreReader
from exchange.acks import HaltAcks, MemoryAckSink
from exchange.haltbook import HaltBook
from streams.contracts import Trade, decode_message, iso
from streams.settings import Settings
from streams.store import StoreWriter, _store_trades

__all__: list[str] = []

KWH_SEQ = 115 * 1_000_000  # the KWH extension: the signal in force in the desk's store


def _trade(n: int, second: int, instrument: str, buyer: str, seller: str,
           qty: float = 2.0) -> dict[str, Any]:
    return {"ts": (T0 + timedelta(seconds=second)).timestamp(), "trade_id": f"t{n}",
            "venue": "m2m-x", "instrument": instrument, "price": 2.5, "qty": qty,
            "buyer": buyer, "seller": seller}


TRADES = [_trade(1, 74, GPU, "bot-1", "bot-2"), _trade(2, 75, GPU, "bot-2", "bot-1", 3.0),
          _trade(3, 80, GPU, "bot-1", "mm-1", 5.0), _trade(4, 140, TB, "mm-1", "bot-1"),
          _trade(5, 200, GPU, "mm-1", "mm-2")]


def _ack(seq: int, instrument: str, applied: datetime) -> dict[str, Any]:
    return {"schema": "halt_ack/1", "exchange": "m2m-x", "venue": "m2m-x",
            "instrument": instrument, "seq": seq, "state": "HALTED", "reason": "SPIKE",
            "effective": "HALTED", "ts": iso(seq / 1e6), "applied_at": iso(applied.timestamp())}


def _beat(worker: str, emitted: datetime, seq: int) -> dict[str, Any]:
    return {"schema": "heartbeat/1", "worker": worker, "seq": seq, "emitted_at":
            iso(emitted.timestamp()), "watermarks": {"m2m-x": iso(T0.timestamp())},
            "partitions": [0], "kid": "detector-1", "sig": "x"}


def _trades(records: list[dict[str, Any]]) -> list[Trade]:
    ok, bad = decode_message(msgspec.json.encode(records))
    assert not bad
    return ok


@pytest.fixture
def desk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The desk's store plus trades (t1 delivered twice), and an acknowledged KWH halt."""
    store = tmp_path / "store"
    fill_desk(store)
    with StoreWriter(store) as writer:
        writer.add_trades(_trades(TRADES))
        writer.add_trades(_trades(TRADES[:1]))  # at-least-once: a re-delivered trade
        writer.add("acks", [_ack(KWH_SEQ, KWH, T0 + timedelta(seconds=115.4))])
    monkeypatch.setenv("SURVEIL_DATA_DIR", str(tmp_path))
    yield store
    st.cache_data.clear()
    st.cache_resource.clear()


# -- the store ----------------------------------------------------------------------------------


def test_heartbeats_are_kept_once_per_worker_and_second(tmp_path: Path) -> None:
    now = datetime(2024, 5, 6, 14, 30, tzinfo=UTC)
    beats = [_beat("w1", now + timedelta(seconds=s / 4), 10 + s) for s in range(12)]
    with StoreWriter(tmp_path) as writer:
        assert writer.add("heartbeats", beats + [_beat("w2", now, 1)]) == 4  # 3 s of w1, w2
        assert writer.add("heartbeats", beats) == 0
        assert writer.add("heartbeats", [{"schema": "heartbeat/1", "worker": "w1"},
                                         {**_beat("w1", now, 1), "schema": "halt/1"},
                                         {**_beat("w1", now, 1), "emitted_at": "noon"}]) == 0
        assert writer.stats["malformed"] == 3
    rows = StoreReader(tmp_path).frame("SELECT worker, ts, watermark FROM heartbeats "
                                       "ORDER BY worker, ts")
    assert rows["worker"].to_list() == ["w1", "w1", "w1", "w2"]
    assert rows["watermark"][0] == T0


def test_acks_are_kept_once(tmp_path: Path) -> None:
    ack = _ack(KWH_SEQ, KWH, T0 + timedelta(seconds=116))
    with StoreWriter(tmp_path) as writer:
        assert writer.add("acks", [ack, ack, {**ack, "applied_at": iso(T0.timestamp() + 200)}]) \
            == 1
        assert writer.add("acks", [{**ack, "exchange": "other"}, {**ack, "seq": "x"},
                                   {**ack, "schema": "halt/1"}, {"exchange": 5}]) == 1
        assert writer.stats["malformed"] == 3
    assert StoreReader(tmp_path).rows("SELECT count(*) FROM acks") == [(2,)]


def test_trades_are_columnar_and_deduplicated_by_the_readers(tmp_path: Path) -> None:
    with StoreWriter(tmp_path, max_parts=2) as writer:
        for _ in range(3):  # three flushes of the same trades: three parts, then a compaction
            assert writer.add_trades(_trades(TRADES)) == 5
            writer.flush()
        assert writer.add("trades", [{**TRADES[0], "trade_id": "t9"}, {"trade_id": "t10"}]) == 1
    reader = StoreReader(tmp_path)
    assert reader.rows("SELECT count(*) FROM trades") == [(6,)]
    mine = agents.agent_trades(reader, "bot-1")
    assert mine["trade_id"].to_list() == ["t1", "t9", "t2", "t3", "t4"]
    assert mine["ts"][0] == T0 + timedelta(seconds=74)


def test_hostile_trade_messages_are_counted_never_fatal(tmp_path: Path) -> None:
    class Msg:
        def __init__(self, value: bytes | None, offset: int) -> None:
            self.value, self.offset = value, offset

    class TP:
        topic, partition = "trades", 0

    good = msgspec.json.encode(TRADES[:2] + [{"trade_id": "half"}])
    messages = [Msg(b"\xff\xfe{", 0), Msg(None, 1), Msg(b"[1, 2]", 2), Msg(good, 3),
                Msg(b'{"ts": 1e400}', 4), Msg(b"x" * 100_000, 5)]
    with StoreWriter(tmp_path) as writer:
        _store_trades(writer, TP(), messages)
        assert writer.stats["trades"] == 2
        assert writer.stats["trades_rejected"] == 7
    assert StoreReader(tmp_path).rows("SELECT count(*) FROM _trades_raw") == [(2,)]


def test_store_trades_setting() -> None:
    assert Settings().store_trades is True
    assert Settings.from_env({"SURVEIL_STORE_TRADES": "off"}).store_trades is False
    assert Settings.from_env({"SURVEIL_STORE_TRADES": "1"}).store_trades is True
    with pytest.raises(ValueError, match="SURVEIL_STORE_TRADES"):
        Settings.from_env({"SURVEIL_STORE_TRADES": "maybe"})


# -- the exchange acknowledges what it applies ------------------------------------------------


def test_the_exchange_acknowledges_each_halt_it_applies_once_per_seq() -> None:
    sink = MemoryAckSink()
    acks = HaltAcks(sink, exchange="ex-1", venues=["v1"], wall_clock=lambda: 1_715_000_000.5)
    book = HaltBook(on_applied=acks)
    acks.start()
    t = "2024-05-06T14:30:00Z"
    halt = {"schema": "halt/1", "seq": 5, "ts": t, "emitted_at": t, "venue": "v1",
            "instrument": GPU, "state": "HALTED", "reason": "SPIKE", "resume_at": None,
            "reference_price": 2.5, "band_low": None, "band_high": None, "alert_ids": []}
    book.apply(halt)
    book.apply(halt)  # stale: not applied, not acknowledged
    book.apply({**halt, "seq": 6, "state": "TRADING", "reason": "RESUME"})
    book.apply({**halt, "seq": 7, "venue": "elsewhere"})  # not this exchange's venue
    book.apply({**halt, "seq": 8, "state": "BROKEN"})  # rejected
    acks.close()
    values = [msgspec.json.decode(v) for _, v in sink.sent]
    assert [k for k, _ in sink.sent] == [f"ex-1/v1/{GPU}/5".encode(), f"ex-1/v1/{GPU}/6".encode()]
    assert values[0] == {"schema": "halt_ack/1", "exchange": "ex-1", "venue": "v1",
                         "instrument": GPU, "seq": 5, "state": "HALTED", "reason": "SPIKE",
                         "effective": "HALTED", "ts": t,
                         "applied_at": "2024-05-06T12:53:20.500000Z"}
    assert values[1]["effective"] == "TRADING"
    assert (acks.counters.acknowledged, acks.counters.sent, acks.counters.other_venue) == (2, 2, 1)


def test_an_unwritable_topic_never_blocks_the_exchange() -> None:
    class Broken:
        def send(self, key: bytes, value: bytes) -> None:
            raise RuntimeError("topic authorization failed")

        def close(self) -> None:
            pass

    def no_broker() -> Broken:
        raise ConnectionError("no broker")

    halt = {"schema": "halt/1", "seq": 5, "ts": "2024-05-06T14:30:00Z",
            "emitted_at": "2024-05-06T14:30:00Z", "venue": "v1", "instrument": GPU,
            "state": "HALTED", "reason": "SPIKE", "resume_at": None, "reference_price": None,
            "band_low": None, "band_high": None, "alert_ids": []}
    broken = HaltAcks(Broken(), exchange="ex-1").start()
    book = HaltBook(on_applied=broken)
    assert book.apply(halt) is not None
    assert book.state("v1", GPU) == "HALTED"
    broken.close()
    assert (broken.counters.failed, broken.counters.sent) == (1, 0)

    stuck = HaltAcks(no_broker, exchange="ex-1", max_queue=2, retry_s=0.05).start()
    book = HaltBook(on_applied=stuck)
    for seq in range(10, 20):  # the sender waits for a broker: the queue fills, acks drop
        assert book.apply({**halt, "seq": seq}) is not None
    assert stuck.counters.dropped >= 7
    stuck.close(timeout=2)


# -- the desk -----------------------------------------------------------------------------------


def test_health_reads_heartbeats_and_acknowledgements(desk: Path) -> None:
    now = datetime.now(UTC)
    with StoreWriter(desk) as writer:
        writer.add("heartbeats", [_beat("w1", now - timedelta(seconds=3), 1),
                                  _beat("w2", now - timedelta(minutes=5), 1),
                                  _beat("forger", now + timedelta(hours=1), 1)])
    h = market.health(StoreReader(desk), now)
    assert h.heartbeat_age_s is not None
    assert 2.5 < h.heartbeat_age_s < 3.5
    assert h.workers == 1
    assert (h.halts_active, h.halts_acknowledged, h.unacknowledged) == (1, 1, ())
    with StoreWriter(desk) as writer:  # a market-wide halt nobody acknowledged
        writer.add("halts", [{"schema": "halt/1", "seq": 10**15, "ts": iso(now.timestamp()),
                              "emitted_at": iso(now.timestamp() - 12), "venue": "m2m-x",
                              "instrument": "*", "state": "HALTED", "reason": "MANUAL",
                              "resume_at": None, "reference_price": None, "band_low": None,
                              "band_high": None, "alert_ids": []}])
    h = market.health(StoreReader(desk), now)
    assert (h.halts_active, h.halts_acknowledged) == (2, 1)
    assert h.unacknowledged == ("* m2m-x HALTED for 12 s",)


def test_board_shows_the_exchanges_acknowledgement(desk: Path) -> None:
    at = page("board")
    assert not at.exception
    shown = metrics(at)
    assert shown["Halts acknowledged"] == "1 of 1"
    assert shown["Worker heartbeat"] == "not stored"
    assert len(at.error) == 1
    assert "STALE" in at.error[0].value
    board = market.board(StoreReader(desk))
    kwh = board.filter(board["instrument"] == KWH).row(0, named=True)
    assert kwh["acked_at"] == T0 + timedelta(seconds=115.4)


def test_board_banner_for_an_unacknowledged_halt(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    fill_desk(tmp_path / "store")  # no acks at all
    monkeypatch.setenv("SURVEIL_DATA_DIR", str(tmp_path))
    try:
        at = page("board")
        assert not at.exception
        assert metrics(at)["Halts acknowledged"] == "0 of 1"
        banner = at.error[1].value
        assert "HALT NOT ACKNOWLEDGED BY THE EXCHANGE" in banner
        assert KWH in banner
    finally:
        st.cache_data.clear()
        st.cache_resource.clear()


def test_agent_page_activity_positions_and_counterparties(desk: Path) -> None:
    at = page("agents")
    at.text_input(key="agent_query").input("bot-1").run()
    assert not at.exception
    shown = metrics(at)
    assert (shown["Trades stored"], shown["Bought"], shown["Sold"]) == ("4", "7", "5")
    assert [h.value for h in at.subheader][:3] == ["Activity", "Position over time",
                                                   "Top counterparties (from trades)"]
    reader = StoreReader(desk)
    trades = agents.agent_trades(reader, "bot-1")
    per_minute = agents.activity(trades, "bot-1")
    assert per_minute["trades"].to_list() == [3, 1]  # 14:31 (t1-t3), 14:32 (t4)
    pos = agents.positions(trades, "bot-1")
    assert pos.filter(pos["instrument"] == GPU)["position"].to_list() == [2.0, -1.0, 4.0]
    assert pos.filter(pos["instrument"] == TB)["position"].to_list() == [-2.0]
    top = agents.trade_counterparties(trades, "bot-1")
    assert top.select("counterparty", "trades").rows() == [("mm-1", 2), ("bot-2", 2)]


def test_case_file_lists_the_agents_trades_with_the_evidence_highlighted(desk: Path) -> None:
    at = page("alerts")
    at.multiselect(key="q_kinds").select("flash_crash").run()
    assert not at.exception
    assert "Their trades around the alert" in "\n".join(m.value for m in at.markdown)
    assert "2 of the 2 trade ids in the evidence are among them (highlighted)" in captions(at)
    assert "4 trades of 2 agents" in captions(at)  # t1-t4 once each; t5 is mm-1 with mm-2
