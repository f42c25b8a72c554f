"""Alerts: filter by kind and score, pick one, read its evidence."""

from __future__ import annotations

import streamlit as st

from dashboard import ui

st.title("Alerts")

kinds = ui.alert_kinds()
if not kinds:
    ui.empty_store_note("alerts")
    st.stop()

kind_filter, score_filter = st.columns([2, 3])
kind = kind_filter.selectbox("Kind", [None, *kinds], key="kind",
                             format_func=lambda k: "All kinds" if k is None else ui.kind_label(k))
min_score = score_filter.slider("Minimum score", 0, 100, 0, key="min_score")

alerts = ui.latest_alerts(limit=500, kind=kind, min_score=min_score)
if alerts.is_empty():
    st.caption("No alerts match these filters.")
    st.stop()

st.caption(f"{alerts.height} alerts, newest first (at most 500). "
           "Select a row, or pick an alert below, to read its evidence.")
table = ui.alert_table(alerts, key="alerts_table", selectable=True)

ids = alerts["alert_id"].to_list()
selected = table.selection.rows if table is not None else []
if selected:
    picked = ids[selected[0]]
else:
    picked = st.selectbox("Alert", ids, key="alert_pick", format_func=lambda i: ui.alert_label(
        alerts.row(ids.index(i), named=True)))

detail = ui.alert(picked)
if detail is None:
    st.caption("This alert is no longer in the store.")
    st.stop()
st.subheader(detail["summary"])
score, what, where, who = st.columns([2, 3, 4, 2])
score.metric("Score", f"{detail['score']:.0f}", border=True)
what.metric("Kind", ui.kind_label(detail["kind"]), border=True)
where.metric("Instrument", detail["instrument"] or "—", border=True)
who.metric("Agents", len(detail["agents"]), border=True)
st.caption(f"{ui.when(detail['ts'])} · venue {detail['venue']} · detector {detail['detector']} · "
           f"id `{detail['alert_id']}`" + (f" · agents: {', '.join(detail['agents'])}"
                                           if detail["agents"] else ""))
st.json(detail["evidence"], expanded=2)
