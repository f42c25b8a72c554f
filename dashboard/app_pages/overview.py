"""Overview: headline numbers, the halt board and the latest alerts, refreshed every 2 s."""

from __future__ import annotations

import streamlit as st

from dashboard import ui

st.title("Market surveillance")


@st.fragment(run_every="2s")
def live_overview() -> None:
    counts = ui.counts()
    if counts.is_empty:
        ui.empty_store_note()
        return
    st.caption(f"Latest event {ui.when(counts.last_event)} · refreshes every 2 s")

    instruments, halted, alerts, bars = st.columns(4)
    instruments.metric("Instruments", counts.instruments, border=True)
    halted.metric("Active halts", counts.halts_active, border=True,
                  help="Instruments (or whole venues, '*') not in TRADING state now.")
    alerts.metric("Alerts", counts.alerts, border=True)
    bars.metric("Bars stored", f"{counts.bars:,}", border=True,
                help="One-second OHLCV bars.")

    st.subheader("Halt board")
    board = ui.halt_board()
    if board.is_empty():
        st.caption("No halt signals so far: every instrument is trading.")
    else:
        ui.halt_table(board, board=True)

    st.subheader("Latest alerts")
    alerts_df = ui.latest_alerts(limit=50)
    if alerts_df.is_empty():
        st.caption("No alerts so far.")
    else:
        ui.alert_table(alerts_df, key="overview_alerts")
        by_kind, _ = st.columns([2, 3])
        with by_kind:
            st.markdown("**Alerts by kind**")
            st.altair_chart(ui.kinds_chart(dict(counts.alerts_by_kind)), width="stretch")


live_overview()
