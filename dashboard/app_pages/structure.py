"""Market structure: the stage-2 fairness view — trader concentration (HHI, top-5 share), new
entrants' share and counterparty concentration per instrument over time."""

from __future__ import annotations

import streamlit as st

from dashboard import charts, fmt, session, ui

METRICS = {"hhi": "Trader concentration (HHI)", "top5_share": "Top-5 share of volume",
           "new_entrant_share": "New entrants' share", "counterparty_hhi":
           "Counterparty concentration (HHI)"}

st.title("Market structure")
session.user() or session.require("viewer")

df = ui.query("structure")
if df.is_empty():
    ui.empty_store_note("market-structure windows")
    st.stop()
instruments = sorted(df["instrument"].unique().to_list())
chosen = st.multiselect("Instruments", instruments, default=instruments[:4], key="s_inst")
shown = df.filter(df["instrument"].is_in(chosen)) if chosen else df
latest = shown.sort("window_start").group_by("instrument").last()
hhi, top5, new, cp = st.columns(4)
hhi.metric("Highest HHI now", fmt.num(latest["hhi"].max()), border=True)
top5.metric("Highest top-5 share", fmt.pct(latest["top5_share"].max()), border=True)
new.metric("Lowest new entrants' share", fmt.pct(latest["new_entrant_share"].min()),
           border=True)
cp.metric("Highest counterparty HHI", fmt.num(latest["counterparty_hhi"].max()), border=True)
st.altair_chart(charts.structure_lines(shown, METRICS))
st.caption(f"{shown.height:,} windows from {fmt.when(shown['window_start'].min())} to "
           f"{fmt.when(shown['window_end'].max())}. HHI is 0–1 (1 = one trader has it all).")
