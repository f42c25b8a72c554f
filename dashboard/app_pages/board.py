"""Market board: the health strip, every instrument's state and price, the cross-market heat map,
the venue index and the halt timeline, refreshed every 2 s."""

from __future__ import annotations

import streamlit as st

from dashboard import charts, fmt, market, ui

WINDOWS = {"15 minutes": 900, "1 hour": 3600, "4 hours": 14_400, "24 hours": 86_400}

st.title("Market board")
window = st.segmented_control("Window", list(WINDOWS), default="1 hour", key="board_window")
seconds = WINDOWS[window or "1 hour"]


@st.fragment(run_every="2s")
def health_strip() -> None:
    h: market.Health = ui.query("health")
    problems = h.problems
    if problems:
        st.error("**STALE — do not trust this screen as live:** " + "; ".join(problems) + ".",
                 icon=":material/warning:")
    if h.unacknowledged:
        st.error("**HALT NOT ACKNOWLEDGED BY THE EXCHANGE** within "
                 f"{fmt.num(market.ACK_GRACE_S)} s: " + "; ".join(h.unacknowledged)
                 + ". The exchange may still be matching: check it.",
                 icon=":material/gpp_maybe:")
    store, beat, lag, ack = st.columns(4)
    store.metric("Store freshness", fmt.duration(h.store_age_s) + " ago", border=True,
                 help="Time since the store writer last wrote a part file.")
    beat.metric("Worker heartbeat", fmt.duration(h.heartbeat_age_s) + " ago"
                if h.heartbeat_age_s is not None else "not stored", border=True,
                help="Age of the newest stage-1 worker heartbeat in the store.")
    lag.metric("Watermark lag", fmt.duration(h.watermark_lag_s), border=True,
               help="Wall clock minus the stage-2 watermark (newest event time otherwise).")
    ack.metric("Halts acknowledged", f"{h.halts_acknowledged} of {h.halts_active}",
               border=True, help="Current halts the exchange acknowledged applying (topic "
                                 "halt_acks), of all current halts.")
    st.caption(f"Checked {fmt.when(h.checked_at)} · newest event {fmt.when(h.newest_event)} · "
               + (f"{h.workers} worker(s) beating in the last minute"
                  if h.heartbeat_age_s is not None else "no worker heartbeats stored"))


@st.fragment(run_every="2s")
def live_board(seconds: int) -> None:
    board = ui.query("board", window_s=seconds)
    if board.is_empty():
        ui.empty_store_note("prices")
        return
    halted = board.filter(board["state"] != "TRADING")
    venues = ui.halt_board().filter((ui.halt_board()["instrument"] == "*")
                                    & ui.halt_board()["active"])
    wide, n_halted, n_inst = st.columns(3)
    wide.metric("Market-wide state", "TRADING" if venues.is_empty() else
                ", ".join(f"{v} {s}" for v, s in venues.select("venue", "state").iter_rows()),
                border=True)
    n_halted.metric("Instruments not trading", f"{halted.height} of {board.height}", border=True)
    n_inst.metric("Venues", board["venue"].n_unique(), border=True)
    ui.board_table(board)

    grid = ui.query("returns_grid", window_s=seconds, bucket_s=max(5, seconds / 60))
    left, right = st.columns([3, 2])
    with left:
        st.subheader("Cross-market returns")
        st.altair_chart(charts.returns_heatmap(grid), width="stretch")
    with right:
        st.subheader("Venue index")
        st.altair_chart(charts.venue_index(market.venue_index(grid)), width="stretch")
    st.subheader("Halt timeline")
    spans = ui.query("halt_timeline", window_s=seconds)
    if spans.is_empty():
        st.caption("No halts or pauses in this window.")
    else:
        st.altair_chart(charts.halt_timeline(spans), width="stretch")


health_strip()
live_board(seconds)
