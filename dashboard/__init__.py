"""The read side: a Streamlit dashboard over the Parquet store the store writer fills.

- :mod:`dashboard.queries` — :class:`~dashboard.queries.StoreReader`, every query the pages
  show (DuckDB over Parquet parts; no Streamlit, importable anywhere).
- :mod:`dashboard.ui` — Streamlit glue: the cached reader, cached query results, charts.
- ``dashboard/app.py`` — the router (``st.navigation``); pages live in ``dashboard/app_pages/``.
- :mod:`dashboard.serve` — start ``streamlit run`` on the app and wait until it answers.
"""

from __future__ import annotations

__all__: list[str] = []
