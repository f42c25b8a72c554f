"""Alert queue: filter, search, sort and page through the whole history; open an alert as a
case file and work its case."""

from __future__ import annotations

from datetime import UTC, datetime, time

import streamlit as st

from dashboard import casefile, session, ui
from dashboard.cases import SORTS, AlertFilter
from streams.cases import DISPOSITIONS

PAGE_SIZES = (25, 50, 100, 250)

st.title("Alert queue")
user = session.user() or session.require("viewer")

kinds = ui.alert_kinds()
if not kinds:
    ui.empty_store_note("alerts")
    st.stop()

with st.container(border=True):
    row1 = st.columns([3, 2, 2, 2])
    chosen = row1[0].multiselect("Kind", kinds, key="q_kinds", format_func=ui.kind_label,
                                 placeholder="All kinds")
    lo, hi = row1[1].slider("Score", 0, 100, (0, 100), key="q_score")
    instrument = row1[2].selectbox("Instrument", [None, *ui.instruments()], key="q_instrument",
                                   format_func=lambda i: "All instruments" if i is None else i)
    case = row1[3].selectbox("Case", [None, "none", *DISPOSITIONS], key="q_case",
                             format_func=lambda d: {None: "Any", "none": "Not in a case"}
                             .get(d, d))
    row2 = st.columns([3, 2, 2, 2, 2])
    text = row2[0].text_input("Search summary, id, instrument, agents", key="q_text")
    agent = row2[1].text_input("Agent id", key="q_agent")
    venue = row2[2].text_input("Venue", key="q_venue")
    start = row2[3].date_input("From (UTC)", value=None, key="q_from")
    end = row2[4].date_input("To (UTC)", value=None, key="q_to")

flt = AlertFilter(
    kinds=tuple(chosen), min_score=lo, max_score=hi, instrument=instrument,
    venue=venue.strip() or None, agent=agent.strip() or None, text=text.strip() or None,
    start=datetime.combine(start, time.min, UTC) if start else None,
    end=datetime.combine(end, time.max, UTC) if end else None, disposition=case)

sort_col, order_col, size_col, page_col = st.columns([2, 2, 2, 2])
sort = sort_col.selectbox("Sort by", list(SORTS), key="q_sort")
descending = order_col.segmented_control("Order", ["descending", "ascending"],
                                         default="descending", key="q_order") != "ascending"
size = size_col.selectbox("Per page", PAGE_SIZES, index=1, key="q_size")
total, _ = ui.query("alert_page", flt, limit=0)
pages = max(1, -(-total // size))
page_no = page_col.number_input(f"Page (of {pages:,})", 1, pages, 1, key="q_page")
_, alerts = ui.query("alert_page", flt, sort=sort, descending=descending,
                     offset=(page_no - 1) * size, limit=size)

if alerts.is_empty():
    st.caption("No alerts match these filters.")
    st.stop()
direction = "descending" if descending else "ascending"
st.caption(f"{total:,} alerts match; showing {(page_no - 1) * size + 1:,}–"
           f"{(page_no - 1) * size + alerts.height:,}, sorted by {sort} ({direction}). "
           "Select a row, or pick an alert below, to open its case file.")
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
case_id = alerts.row(ids.index(picked), named=True)["case_id"]
evidence_col, case_col = st.columns([3, 2], gap="large")
with evidence_col:
    casefile.evidence(detail)
with case_col:
    casefile.case_panel(detail, case_id, user)
