"""Prices: one instrument's one-second bars with its halts marked, and its halt history."""

from __future__ import annotations

import streamlit as st

from dashboard import charts, fmt, ui

WINDOWS = {"5 minutes": 300, "15 minutes": 900, "1 hour": 3600, "4 hours": 14_400}

st.title("Prices")

instruments = ui.instruments()
if not instruments:
    ui.empty_store_note("prices")
    st.stop()

if st.session_state.get("instrument") not in instruments:  # first visit: start where it matters
    st.session_state["instrument"] = ui.instrument_of_interest(instruments)
pick, span, scale = st.columns([3, 1, 1])
instrument = pick.selectbox("Instrument", instruments, key="instrument")
window = span.selectbox("Window", list(WINDOWS), index=1, key="window")
scale_pick = scale.selectbox("Scale", ["auto", "linear", "log"], key="scale",
                             help="auto: log when the price spans more than 3×")


@st.fragment(run_every="2s")
def live_prices(instrument: str, seconds: int, log: bool | None) -> None:
    bars = ui.bars(instrument, window_s=seconds)
    halts = ui.halts(instrument)
    if bars.is_empty():
        st.caption(f"No bars yet for {instrument}.")
    else:
        last, first = bars["close"][-1], bars["close"][0]
        state = ui.state_of(instrument)
        price, change, status = st.columns(3)
        price.metric("Last price", fmt.num(last), border=True)
        change.metric(f"Change since {bars['ts'][0]:%H:%M:%S}", fmt.change(last / first - 1),
                      border=True)
        status.metric("State", state.replace("_", " "), border=True)
        st.altair_chart(charts.price(bars, halts, log=log), width="stretch")
        st.altair_chart(ui.volume_chart(bars), width="stretch")
        st.caption(f"Bars up to {ui.when(bars['ts'][-1])}. The line breaks where no trades "
                   "printed; shaded and the band below: the time it was not trading.")

    st.subheader(f"Halts of {instrument}")
    if halts.is_empty():
        st.caption(f"No halts for {instrument}.")
    else:
        ui.halt_table(halts)

    st.subheader(f"Alerts on {instrument}")
    alerts = ui.latest_alerts(limit=20, instrument=instrument)
    if alerts.is_empty():
        st.caption(f"No alerts on {instrument}.")
    else:
        ui.alert_table(alerts, key="instrument_alerts")


live_prices(instrument, WINDOWS[window], {"auto": None, "linear": False, "log": True}[scale_pick])
