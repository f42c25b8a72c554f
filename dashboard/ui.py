"""Streamlit glue shared by the pages: where the store is, cached queries, tables and charts.

The reader is a ``st.cache_resource`` (one per store, shared by every session and never mutated);
query results are ``st.cache_data`` with a short TTL, keyed by the store directory so two stores
never share results. Widgets never live inside cached functions.
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import Any, Final, cast

import altair as alt
import polars as pl
import streamlit as st

from dashboard import agents as _agents
from dashboard import cases as _cases
from dashboard import fmt
from dashboard import market as _market
from dashboard.queries import StoreCounts, StoreReader

__all__ = [
    "STATE_COLORS",
    "alert",
    "alert_label",
    "alert_kinds",
    "alert_table",
    "bars",
    "counts",
    "empty_store_note",
    "halt_board",
    "halt_table",
    "halts",
    "instrument_of_interest",
    "instruments",
    "kind_label",
    "kinds_chart",
    "latest_alerts",
    "price_chart",
    "query",
    "reader",
    "state_of",
    "store_dir",
    "volume_chart",
    "when",
]

TTL_S: Final = 2.0
STATE_COLORS: Final = {"HALTED": "#d62728", "PAUSED": "#ff7f0e", "QUOTE_ONLY": "#9467bd",
                       "TRADING": "#2ca02c"}
#: Cell styles of the state column (light fills a printed page keeps legible).
_STATE_CSS: Final = {"HALTED": "background-color: #f8d7da; color: #842029; font-weight: 600",
                     "PAUSED": "background-color: #ffe5cc; color: #8a4500; font-weight: 600",
                     "QUOTE_ONLY": "background-color: #e8dcf5; color: #4b2a7a; font-weight: 600",
                     "TRADING": "background-color: #d1e7dd; color: #0f5132"}
_TIME_FORMAT: Final = "YYYY-MM-DD HH:mm:ss"


def store_dir() -> Path:
    """The store the session looks at: a replay's store when the analyst picked one (Replay
    page), else ``$SURVEIL_STORE_DIR``, else ``$SURVEIL_DATA_DIR/store`` (data dir ``var``)."""
    override = st.session_state.get("store_override")
    if override:
        return Path(override)
    return live_store_dir()


def live_store_dir() -> Path:
    """The pipeline's store (see :func:`store_dir`)."""
    explicit = os.environ.get("SURVEIL_STORE_DIR")
    if explicit:
        return Path(explicit)
    return Path(os.environ.get("SURVEIL_DATA_DIR", "var")) / "store"


@st.cache_resource(show_spinner=False)
def _reader(store: str) -> StoreReader:
    return StoreReader(Path(store))


def reader() -> StoreReader:
    return _reader(str(store_dir()))


@st.cache_data(ttl=TTL_S, show_spinner=False)
def _counts(store: str) -> StoreCounts:
    return _reader(store).counts()


@st.cache_data(ttl=TTL_S, show_spinner=False)
def _instruments(store: str) -> list[str]:
    return _reader(store).instruments()


@st.cache_data(ttl=TTL_S, show_spinner=False)
def _halt_board(store: str) -> pl.DataFrame:
    return _reader(store).halt_board()


@st.cache_data(ttl=TTL_S, show_spinner=False)
def _halts(store: str, instrument: str | None, limit: int) -> pl.DataFrame:
    return _reader(store).halts(instrument, limit=limit)


@st.cache_data(ttl=TTL_S, show_spinner=False)
def _bars(store: str, instrument: str, window_s: float | None) -> pl.DataFrame:
    return _reader(store).bars(instrument, window_s=window_s)


@st.cache_data(ttl=TTL_S, show_spinner=False)
def _latest_alerts(store: str, limit: int, kind: str | None, min_score: float,
                   instrument: str | None) -> pl.DataFrame:
    return _reader(store).latest_alerts(limit, kind, min_score=min_score, instrument=instrument)


@st.cache_data(ttl=TTL_S, show_spinner=False)
def _alert_kinds(store: str) -> list[str]:
    return _reader(store).alert_kinds()


@st.cache_data(ttl=TTL_S, show_spinner=False)
def _alert(store: str, alert_id: str) -> dict[str, Any] | None:
    return _reader(store).alert(alert_id)


_QUERIES: Final[dict[str, Any]] = {
    "board": _market.board, "returns_grid": _market.returns_grid,
    "halt_timeline": _market.halt_timeline, "health": _market.health,
    "alert_page": _cases.alert_page, "case_states": _cases.case_states, "audit": _cases.audit,
    "related_alerts": _cases.related_alerts, "agent_search": _agents.search,
    "registry": _agents.registry, "agent_alerts": _agents.agent_alerts,
    "structure": _agents.structure, "agent_trades": _agents.agent_trades,
    "trades_around": _agents.trades_around,
}


@st.cache_data(ttl=TTL_S, show_spinner=False)
def _query(store: str, name: str, args: tuple[Any, ...], kwargs: tuple[Any, ...]) -> Any:
    return _QUERIES[name](_reader(store), *args, **dict(kwargs))


def query(name: str, *args: Any, **kwargs: Any) -> Any:
    """A desk query (:data:`_QUERIES`) over the session's store, cached for ``TTL_S``."""
    return _query(str(store_dir()), name, args, tuple(sorted(kwargs.items())))


def counts() -> StoreCounts:
    return _counts(str(store_dir()))


def instruments() -> list[str]:
    return _instruments(str(store_dir()))


def halt_board() -> pl.DataFrame:
    return _halt_board(str(store_dir()))


def halts(instrument: str | None = None, *, limit: int = 200) -> pl.DataFrame:
    return _halts(str(store_dir()), instrument, limit)


def bars(instrument: str, *, window_s: float | None = 3600) -> pl.DataFrame:
    """Bars within ``window_s`` seconds of the instrument's newest bar (at most 20,000)."""
    return _bars(str(store_dir()), instrument, window_s)


def latest_alerts(limit: int = 50, kind: str | None = None, *, min_score: float = 0.0,
                  instrument: str | None = None) -> pl.DataFrame:
    return _latest_alerts(str(store_dir()), limit, kind, min_score, instrument)


def alert_kinds() -> list[str]:
    return _alert_kinds(str(store_dir()))


def alert(alert_id: str) -> dict[str, Any] | None:
    return _alert(str(store_dir()), alert_id)


# -- presentation ------------------------------------------------------------------------------


def state_of(instrument: str) -> str:
    """The trading state of an instrument now (a market-wide halt of its venue counts)."""
    board = halt_board().filter(pl.col("instrument").is_in([instrument, "*"]) & pl.col("active"))
    return str(board["state"][0]) if board.height else "TRADING"


def instrument_of_interest(choices: list[str]) -> str:
    """What a supervisor wants to see first: a halted instrument, else the latest alert's."""
    halted = halt_board().filter(pl.col("active"))["instrument"].to_list()
    alerted = latest_alerts(limit=1)["instrument"].to_list()
    return next((i for i in [*halted, *alerted] if i in choices), choices[0])


def alert_label(row: dict[str, Any]) -> str:
    """One line naming an alert in a picker."""
    return (f"{row['ts']:%Y-%m-%d %H:%M:%S} · {kind_label(row['kind'])} · "
            f"score {fmt.score(row['score'])} · {row['summary']}")


def empty_store_note(what: str = "data") -> None:
    """The one way every page says that there is nothing to show yet."""
    if counts().is_empty:
        st.caption(
            f"No {what} yet — the store at `{store_dir()}` is empty. Start the pipeline "
            "(`surveil up`, or `surveil worker` plus a replay) and this page fills in by itself."
        )
    else:
        st.caption(f"No {what} yet in `{store_dir()}`: they appear here as soon as the "
                   "pipeline stores some.")


def kind_label(kind: str) -> str:
    """``flash_crash`` → ``Flash crash``."""
    return kind.replace("_", " ").capitalize()


def when(ts: datetime | None) -> str:
    return "—" if ts is None else ts.strftime("%Y-%m-%d %H:%M:%S UTC")


def _styled_states(df: pl.DataFrame) -> Any:
    """A pandas Styler colouring the state column (st.dataframe renders it)."""
    return df.to_pandas().style.map(lambda s: _STATE_CSS.get(s, ""), subset=["state"])


def halt_table(df: pl.DataFrame, *, board: bool = False) -> None:
    """A halt board (current state per instrument) or a list of halt signals."""
    time_col = st.column_config.DatetimeColumn
    price_col = st.column_config.NumberColumn
    config: dict[str, Any] = {
        "state": st.column_config.TextColumn("State"),
        "instrument": "Instrument",
        "venue": "Venue",
        "reason": "Reason",
        "since": time_col("Since (UTC)", format=_TIME_FORMAT),
        "ts": time_col("Signal at (UTC)", format=_TIME_FORMAT),
        "resume_at": time_col("Resume at (UTC)", format=_TIME_FORMAT),
        "reference_price": price_col("Reference", format="%.4f"),
        "band_low": price_col("Band low", format="%.4f"),
        "band_high": price_col("Band high", format="%.4f"),
        "alert_ids": st.column_config.ListColumn("Evidence (alert ids)"),
    }
    order = (["state", "instrument", "venue", "reason", "since", "resume_at", "reference_price",
              "band_low", "band_high", "alert_ids"] if board else
             ["ts", "state", "instrument", "venue", "reason", "resume_at", "reference_price",
              "band_low", "band_high", "alert_ids"])
    st.dataframe(_styled_states(df.select(order)), column_config=config, column_order=order,
                 hide_index=True)


def alert_table(df: pl.DataFrame, *, key: str | None = None, selectable: bool = False) -> Any:
    """Alerts, newest first; with ``selectable`` returns the selection state of the table."""
    config: dict[str, Any] = {
        "ts": st.column_config.DatetimeColumn("Time (UTC)", format=_TIME_FORMAT),
        "kind": "Kind",
        "score": st.column_config.ProgressColumn("Score", min_value=0, max_value=100,
                                                 format="%.0f"),
        "instrument": "Instrument",
        "venue": "Venue",
        "summary": st.column_config.TextColumn("Summary", width="large"),
        "agents": st.column_config.ListColumn("Agents"),
        "detector": "Detector",
        "case_id": "Case",
        "disposition": "Disposition",
        "assignee": "Assigned to",
        "alert_id": "Alert id",
    }
    labels = {k: kind_label(k) for k in df["kind"].unique().to_list()}
    shown = df.with_columns(pl.col("kind").replace(labels))
    if selectable:
        return st.dataframe(shown, column_config=config, hide_index=True, key=key,
                            on_select="rerun", selection_mode="single-row")
    return st.dataframe(shown, column_config=config, hide_index=True, key=key)


def _halt_spans(halts_df: pl.DataFrame, start: datetime, end: datetime) -> pl.DataFrame:
    """Intervals during which the instrument was not trading, clipped to the chart window."""
    if halts_df.is_empty():
        return pl.DataFrame(schema={"start": pl.Datetime("us", "UTC"),
                                    "end": pl.Datetime("us", "UTC"), "state": pl.String,
                                    "reason": pl.String})
    spans = (
        halts_df.sort("ts", "seq")
        .with_columns(pl.col("ts").shift(-1).fill_null(end).alias("end"))
        .filter(pl.col("state") != "TRADING")
        .filter(pl.col("end") >= start)
        .select(pl.max_horizontal(pl.col("ts"), pl.lit(start)).alias("start"), "end", "state",
                "reason")
    )
    return spans


def price_chart(bars_df: pl.DataFrame, halts_df: pl.DataFrame) -> alt.LayerChart:
    """Close price with its high–low range; halts as dashed rules and shaded spans by state."""
    start, end = cast(datetime, bars_df["ts"].min()), cast(datetime, bars_df["ts"].max())
    colors = alt.Scale(domain=list(STATE_COLORS), range=list(STATE_COLORS.values()))
    base = alt.Chart(bars_df).encode(x=_time_axis("ts", start, end, title=False))
    multi = bars_df["venue"].n_unique() > 1
    line = base.mark_line(strokeWidth=1.6).encode(
        y=alt.Y("close:Q", title="Price", scale=alt.Scale(zero=False), axis=_Y_AXIS),
        color=alt.Color("venue:N", title="Venue") if multi else alt.value("#1f4e79"),
        tooltip=[alt.Tooltip("ts:T", title="Bar (UTC)", format="%Y-%m-%d %H:%M:%S"),
                 "venue:N", "open:Q", "high:Q", "low:Q", "close:Q", "volume:Q", "trades:Q"],
    )
    band = base.mark_area(opacity=0.18, color="#1f4e79").encode(y="low:Q", y2="high:Q")
    spans = alt.Chart(_halt_spans(halts_df, start, end)).mark_rect(opacity=0.14).encode(
        x=_time_axis("start", start, end, title=False), x2="end:T",
        color=alt.Color("state:N", scale=colors, title="Halt state"),
        tooltip=["state:N", "reason:N",
                 alt.Tooltip("start:T", title="From (UTC)", format="%H:%M:%S"),
                 alt.Tooltip("end:T", title="To (UTC)", format="%H:%M:%S")],
    )
    rules = alt.Chart(halts_df.filter(pl.col("ts").is_between(start, end))).mark_rule(
        strokeWidth=2, strokeDash=[5, 3]).encode(
        x=_time_axis("ts", start, end, title=False),
        color=alt.Color("state:N", scale=colors, title="Halt state"),
        tooltip=[alt.Tooltip("ts:T", title="Signal (UTC)", format="%Y-%m-%d %H:%M:%S"),
                 "state:N", "reason:N", "instrument:N",
                 alt.Tooltip("resume_at:T", title="Resume at (UTC)", format="%H:%M:%S"),
                 alt.Tooltip("reference_price:Q", title="Reference"),
                 alt.Tooltip("band_low:Q", title="Band low"),
                 alt.Tooltip("band_high:Q", title="Band high")],
    )
    chart = alt.LayerChart(layer=[spans, band, line, rules], height=360)
    configured: alt.LayerChart = chart.configure_legend(orient="top")
    return configured


def volume_chart(bars_df: pl.DataFrame) -> alt.Chart:
    """Volume per one-second bar, on the same time axis as :func:`price_chart`."""
    start, end = cast(datetime, bars_df["ts"].min()), cast(datetime, bars_df["ts"].max())
    spans = bars_df.with_columns(ts_end=pl.col("ts") + pl.duration(seconds=1))
    chart: alt.Chart = alt.Chart(spans).mark_rect(color="#7f8c8d").encode(
        x=_time_axis("ts", start, end), x2="ts_end:T",
        y=alt.Y("volume:Q", title="Volume", axis=_Y_AXIS), y2=alt.datum(0),
        tooltip=[alt.Tooltip("ts:T", title="Bar (UTC)", format="%H:%M:%S"), "volume:Q",
                 "trades:Q"],
    ).properties(height=150)
    return chart


_Y_AXIS: Final = alt.Axis(minExtent=56)  # same gutter on both charts keeps their x aligned


def _time_axis(column: str, start: datetime, end: datetime, *, title: bool = True) -> alt.X:
    """The same UTC time axis (explicit domain: the bars' span) for every layer and chart."""
    domain = [start.timestamp() * 1000, end.timestamp() * 1000]
    return alt.X(f"{column}:T", title="Time (UTC)" if title else None,
                 scale=alt.Scale(type="utc", domain=domain, nice=False, padding=0),
                 axis=alt.Axis(format="%H:%M:%S", labelOverlap=True))


def kinds_chart(by_kind: dict[str, int]) -> alt.Chart:
    """Horizontal bars: how many alerts of each kind."""
    df = pl.DataFrame({"kind": [kind_label(k) for k in by_kind], "alerts": list(by_kind.values())})
    chart: alt.Chart = alt.Chart(df).mark_bar(color="#1f4e79").encode(
        x=alt.X("alerts:Q", title="Alerts", axis=alt.Axis(tickMinStep=1, format="d")),
        y=alt.Y("kind:N", sort="-x", title=None),
        tooltip=["kind:N", "alerts:Q"],
    ).properties(height=alt.Step(26))
    return chart


def _exchange_word(row: dict[str, Any]) -> str | None:
    """What the exchange said and did about the halt holding an instrument."""
    if row["state"] == "TRADING":
        return None
    acked, emitted = row["acked_at"], row["emitted_at"]
    if acked is None:
        said = "NOT ACKNOWLEDGED"
    else:
        delay = max(0.0, (acked - emitted).total_seconds()) if emitted is not None else None
        said = ("acknowledged" if delay is None else f"acknowledged in {delay:.1f} s"
                if delay < 60 else f"acknowledged after {fmt.duration(delay)}")
    return said + ("" if row["obeyed"] is not False else " · TRADES AFTER HALT")


def board_table(board: pl.DataFrame) -> None:
    """The market board: one row per instrument and venue, numbers formatted by :mod:`fmt`."""
    shown = board.select(
        "state", "instrument", "venue",
        pl.col("last").map_elements(fmt.num, return_dtype=pl.String).alias("last"),
        pl.col("change").map_elements(fmt.change, return_dtype=pl.String).alias("change"),
        pl.struct("band_low", "band_high").map_elements(
            lambda b: (f"{fmt.num(b['band_low'])} – {fmt.num(b['band_high'])}"
                       if b["band_low"] is not None else fmt.DASH),
            return_dtype=pl.String).alias("band"),
        pl.col("volume").map_elements(fmt.num, return_dtype=pl.String).alias("volume"),
        "spark", "reason", "since",
        pl.struct("state", "acked_at", "emitted_at", "obeyed").map_elements(
            _exchange_word, return_dtype=pl.String).alias("exchange"),
    )
    config: dict[str, Any] = {
        "state": "State", "instrument": "Instrument", "venue": "Venue", "last": "Last",
        "change": "Change", "band": "Band", "volume": "Volume",
        "spark": st.column_config.LineChartColumn("Price", width="medium"),
        "reason": "Reason", "since": st.column_config.DatetimeColumn(
            "Since (UTC)", format=_TIME_FORMAT),
        "exchange": "Exchange",
    }
    st.dataframe(_styled_states(shown), column_config=config, hide_index=True, key="board")
