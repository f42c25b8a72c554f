"""Halt and resume by hand (supervisors): a mandatory reason, a confirmation, a signed halt on
the ``halts`` topic with its audit record on ``cases``; the board shows the exchange's
acknowledgement."""

from __future__ import annotations

import streamlit as st

from dashboard import fmt, session, ui

st.title("Halt and resume")
user = session.require("supervisor")

board = ui.halt_board()
instruments = ui.instruments()
venues = ui.reader().venues() or ["default"]

with st.container(border=True):
    what, where, how = st.columns([3, 2, 2])
    instrument = what.selectbox("Instrument", ["*", *instruments], key="m_instrument",
                                format_func=lambda i: "* — the whole venue" if i == "*" else i)
    venue = where.selectbox("Venue", venues, key="m_venue")
    state = how.selectbox("Action", ["HALTED", "PAUSED", "QUOTE_ONLY", "TRADING"],
                          key="m_state", format_func=lambda s: "Resume (TRADING)"
                          if s == "TRADING" else f"Halt ({s})")
    note = st.text_area("Reason (required; kept in the audit trail)", key="m_note")
    confirm = st.checkbox(f"I confirm: {'resume' if state == 'TRADING' else 'halt'} "
                          f"{instrument} on {venue}", key="m_confirm")
    send = st.button("Send", type="primary", key="m_send",
                     disabled=not (note.strip() and confirm))
    if send:
        error = session.manual_halt(user, instrument, venue=venue, state=state,
                                    note=note.strip())
        if error:
            st.error(error)
        else:
            st.cache_data.clear()
            st.success(f"Sent: {instrument} → {state}, signed with the regulator key. The "
                       "board shows it once stored, and whether the exchange obeys.")
    st.caption("Signed manual halts need the regulator key (`surveil keys`); the exchange "
               "applies them like any halt and only a manual resumption lifts them.")

st.subheader("Current states")
if board.is_empty():
    st.caption("No halt signals so far: every instrument is trading.")
else:
    ui.halt_table(board, board=True)
manual = ui.query("audit", None, limit=50)
manual = manual.filter(manual["action"].is_in(["halt_request", "resume_request"]))
st.subheader("Manual actions")
if manual.is_empty():
    st.caption("No manual halts or resumptions recorded.")
else:
    st.caption(f"Newest: {fmt.when(manual['ts'][0])} by {manual['actor'][0]}")
    st.dataframe(manual.select("ts", "actor", "action", "instrument", "venue", "state", "note"),
                 hide_index=True, key="manual_actions")
