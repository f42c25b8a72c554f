"""Cases and audit: every case's current state (a fold of its actions), the whole audit trail,
and exports (CSV / Parquet) of cases, the trail and the alerts."""

from __future__ import annotations

import io

import polars as pl
import streamlit as st

from dashboard import casefile, session, ui
from dashboard.cases import AlertFilter

st.title("Cases and audit")
session.user() or session.require("viewer")


def _download(df: pl.DataFrame, name: str, key: str) -> None:
    csv_col, parquet_col = st.columns(2)
    flat = df.with_columns(pl.col(pl.List(pl.String)).list.join(" "))
    csv_col.download_button(f"{name}.csv", flat.write_csv(), f"{name}.csv", "text/csv",
                            key=f"{key}_csv")
    buf = io.BytesIO()
    df.write_parquet(buf)
    parquet_col.download_button(f"{name}.parquet", buf.getvalue(), f"{name}.parquet",
                                "application/octet-stream", key=f"{key}_parquet")


cases = ui.query("case_states")
open_, investigating, closed = st.columns(3)
by = dict(cases.group_by("disposition").len().iter_rows()) if cases.height else {}
open_.metric("Cases", cases.height, border=True)
investigating.metric("Being worked", by.get("investigating", 0) + by.get("escalated", 0),
                     border=True)
closed.metric("Closed", by.get("dismissed", 0) + by.get("confirmed", 0), border=True)

st.subheader("Cases")
if cases.is_empty():
    st.caption("No cases yet: open one from the alert queue.")
else:
    st.dataframe(cases, hide_index=True, key="cases_table", column_config={
        "alert_ids": st.column_config.ListColumn("Alerts"),
        "opened_at": st.column_config.DatetimeColumn("Opened (UTC)",
                                                     format="YYYY-MM-DD HH:mm:ss"),
        "updated_at": st.column_config.DatetimeColumn("Updated (UTC)",
                                                      format="YYYY-MM-DD HH:mm:ss")})

st.subheader("Audit trail")
trail = ui.query("audit", None, limit=100_000)
if trail.is_empty():
    st.caption("No actions recorded yet. Every case action and manual halt lands here, "
               "append-only, from the `cases` topic.")
else:
    st.caption(f"{trail.height:,} actions, newest first. Recorded through Kafka and stored "
               "append-only: nothing here can be edited.")
    casefile.audit_table(trail.head(500), key="audit_all")

st.subheader("Export")
st.caption("Cases, the audit trail, and every alert in the store.")
if cases.height:
    _download(cases, "cases", "dl_cases")
if trail.height:
    _download(trail, "audit", "dl_audit")
total, alerts = ui.query("alert_page", AlertFilter(), limit=1_000_000)
if total:
    _download(alerts, "alerts", "dl_alerts")
