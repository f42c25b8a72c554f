"""The desk's entry point: ``streamlit run dashboard/app.py``.

Routes with ``st.navigation`` to the pages in ``dashboard/app_pages/``, by role: viewers read,
analysts also work cases and replay tapes, supervisors also halt and resume by hand. Before a
log-in only the log-in page exists. The store directory comes from ``$SURVEIL_STORE_DIR``, else
``$SURVEIL_DATA_DIR/store`` (``var/store`` by default); a replay's store when one is picked.
"""

from __future__ import annotations

import streamlit as st
from PIL import Image

from dashboard import session, ui

__all__: list[str] = []

# the page icon is drawn here: nothing is fetched from the internet
st.set_page_config(page_title="M2M market surveillance", page_icon=Image.new(
    "RGB", (32, 32), (31, 78, 121)), layout="wide")

user = session.user()
if user is None:
    page = st.navigation([st.Page(session.login_page, title="Log in",
                                  icon=":material/login:")])
    page.run()
    st.stop()

pages = {
    "Market": [
        st.Page("app_pages/board.py", title="Market board", icon=":material/dashboard:",
                default=True),
        st.Page("app_pages/prices.py", title="Prices", icon=":material/candlestick_chart:"),
        st.Page("app_pages/structure.py", title="Market structure",
                icon=":material/pie_chart:"),
    ],
    "Investigations": [
        st.Page("app_pages/alerts.py", title="Alert queue",
                icon=":material/notification_important:"),
        st.Page("app_pages/cases.py", title="Cases and audit", icon=":material/gavel:"),
        st.Page("app_pages/agents.py", title="Agents", icon=":material/group:"),
    ],
}
if user.can("analyst"):
    pages["Investigations"].append(
        st.Page("app_pages/replay.py", title="Replay a tape", icon=":material/replay:"))
if user.can("supervisor"):
    pages["Market"].append(
        st.Page("app_pages/actions.py", title="Halt and resume", icon=":material/block:"))
page = st.navigation(pages)

with st.sidebar:
    st.markdown(f"**{user.name}** · {user.role}")
    if user.method != "anonymous":
        st.button("Log out", on_click=session.logout, key="logout")
    else:
        st.caption("No users configured: read-only desk.")
    if st.session_state.get("store_override"):
        st.warning(f"Showing the replay store `{ui.store_dir()}`")
        st.button("Back to the live store", key="back_live",
                  on_click=lambda: st.session_state.pop("store_override", None))
    st.caption(f"Store: `{ui.store_dir()}`  \nAll times are UTC (event time).")
page.run()
