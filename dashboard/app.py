"""The dashboard's entry point: ``streamlit run dashboard/app.py``.

Routes with ``st.navigation`` to the pages in ``dashboard/app_pages/``. The store directory comes
from ``$SURVEIL_STORE_DIR``, else ``$SURVEIL_DATA_DIR/store`` (``var/store`` by default).
"""

from __future__ import annotations

import streamlit as st

from dashboard import ui

__all__: list[str] = []

st.set_page_config(page_title="M2M market surveillance", page_icon=":material/policy:",
                   layout="wide")

page = st.navigation([
    st.Page("app_pages/overview.py", title="Overview", icon=":material/dashboard:",
            default=True),
    st.Page("app_pages/prices.py", title="Prices", icon=":material/candlestick_chart:"),
    st.Page("app_pages/alerts.py", title="Alerts", icon=":material/notification_important:"),
])
st.sidebar.caption(f"Store: `{ui.store_dir()}`  \nAll times are UTC (event time).")
page.run()
