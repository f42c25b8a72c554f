"""Altair charts of the desk: prices people can read, the cross-market views, agent networks.

- Prices: a log scale when the price spans more than :data:`LOG_SPAN` (or on request); the line
  breaks wherever bars are missing (a pause, a halt, a quiet spell) instead of drawing a ramp;
  the halt state as a band under the chart; the trigger of an alert as a rule.
- Networks: agents on a circle (a cycle reads as a ring), edges sized by notional, the alert's
  agents highlighted, funders from the registry as squares with dashed links.
No chart loads fonts, icons or data from the internet.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any, Final, cast

import altair as alt
import polars as pl

__all__ = ["LOG_SPAN", "STATE_COLORS", "activity", "halt_timeline", "network", "positions",
           "price", "returns_heatmap", "segments", "structure_lines", "venue_index"]

LOG_SPAN: Final = 3.0
STATE_COLORS: Final = {"HALTED": "#d62728", "PAUSED": "#ff7f0e", "QUOTE_ONLY": "#9467bd",
                       "TRADING": "#2ca02c"}
_STATES = alt.Scale(domain=list(STATE_COLORS), range=list(STATE_COLORS.values()))
_TIME: Final = "%H:%M:%S"


def _x(column: str, start: datetime, end: datetime, *, title: bool = True) -> alt.X:
    domain = [start.timestamp() * 1000, end.timestamp() * 1000]
    return alt.X(f"{column}:T", title="Time (UTC)" if title else None,
                 scale=alt.Scale(type="utc", domain=domain, nice=False, padding=0),
                 axis=alt.Axis(format=_TIME, labelOverlap=True))


def segments(bars: pl.DataFrame, *, gap_s: float = 5.0) -> pl.DataFrame:
    """Bars with a ``segment`` id that changes wherever consecutive bars of a venue are more
    than ``gap_s`` apart, so the price line breaks there instead of interpolating.

    >>> from datetime import UTC, timedelta
    >>> t0 = datetime(2024, 1, 1, tzinfo=UTC)
    >>> df = pl.DataFrame({"venue": ["v"] * 4, "ts": [t0 + timedelta(seconds=s)
    ...                    for s in (0, 1, 30, 31)], "close": [1.0, 1.1, 2.0, 2.1]})
    >>> segments(df)["segment"].to_list()
    [0, 0, 1, 1]
    """
    gap = pl.col("ts").diff().over("venue").dt.total_microseconds() > gap_s * 1e6
    return bars.sort("venue", "ts").with_columns(
        segment=gap.fill_null(False).cast(pl.Int32).cum_sum().over("venue"))


def _spans(halts: pl.DataFrame, start: datetime, end: datetime) -> pl.DataFrame:
    if halts.is_empty():
        return pl.DataFrame(schema={"start": pl.Datetime("us", "UTC"),
                                    "stop": pl.Datetime("us", "UTC"), "state": pl.String,
                                    "reason": pl.String})
    return (halts.sort("ts", "seq")
            .with_columns(stop=pl.col("ts").shift(-1).fill_null(end))
            .filter((pl.col("state") != "TRADING") & (pl.col("stop") >= start))
            .select(pl.max_horizontal("ts", pl.lit(start)).alias("start"), "stop", "state",
                    "reason"))


def price(bars: pl.DataFrame, halts: pl.DataFrame, *, log: bool | None = None,
          trigger: datetime | None = None, trigger_label: str = "trigger",
          height: int = 320) -> alt.VConcatChart:
    """Close with its high–low range (broken at gaps), halt shading, the trigger, and the
    trading state as a band under the chart. ``log=None``: log scale when the price spans
    more than :data:`LOG_SPAN` times."""
    start, end = cast(datetime, bars["ts"].min()), cast(datetime, bars["ts"].max())
    if log is None:
        low, high = cast(float, bars["low"].min() or 0), cast(float, bars["high"].max() or 0)
        log = low > 0 and high / low > LOG_SPAN
    y_scale = alt.Scale(type="log", zero=False) if log else alt.Scale(zero=False)
    data = segments(bars).with_columns(
        seg=pl.col("venue") + "·" + pl.col("segment").cast(pl.String))
    multi = bars["venue"].n_unique() > 1
    base = alt.Chart(data).encode(x=_x("ts", start, end, title=False), detail="seg:N")
    line = base.mark_line(strokeWidth=1.6).encode(
        y=alt.Y("close:Q", title="Price" + (" (log)" if log else ""), scale=y_scale,
                axis=alt.Axis(minExtent=56)),
        color=alt.Color("venue:N", title="Venue") if multi else alt.value("#1f4e79"),
        tooltip=[alt.Tooltip("ts:T", title="Bar (UTC)", format="%Y-%m-%d %H:%M:%S"),
                 "venue:N", alt.Tooltip("close:Q", format=",.4~g"),
                 alt.Tooltip("high:Q", format=",.4~g"), alt.Tooltip("low:Q", format=",.4~g"),
                 alt.Tooltip("volume:Q", format=",.4~g"), "trades:Q"])
    band = base.mark_area(opacity=0.18, color="#1f4e79").encode(
        y=alt.Y("low:Q", scale=y_scale), y2="high:Q")
    spans = _spans(halts, start, end)
    shade = alt.Chart(spans).mark_rect(opacity=0.14).encode(
        x=_x("start", start, end, title=False), x2="stop:T",
        color=alt.Color("state:N", scale=_STATES, title="State"),
        tooltip=["state:N", "reason:N", alt.Tooltip("start:T", title="From", format=_TIME),
                 alt.Tooltip("stop:T", title="To", format=_TIME)])
    layers: list[Any] = [shade, band, line]
    if trigger is not None and start <= trigger <= end:
        mark = pl.DataFrame({"ts": [trigger], "label": [trigger_label]})
        rule = alt.Chart(mark).encode(x=_x("ts", start, end, title=False))
        layers += [rule.mark_rule(color="#111", strokeWidth=2, strokeDash=[2, 2]),
                   rule.mark_text(align="left", dx=4, dy=-6, fontWeight="bold").encode(
                       y=alt.value(8), text="label:N")]
    top = alt.layer(*layers).properties(height=height)
    # the state band: TRADING underneath, halts on top, on the same time axis
    full = pl.DataFrame({"start": [start], "stop": [end], "state": ["TRADING"],
                         "reason": [""]}).cast(spans.schema)
    strip = alt.Chart(pl.concat([full, spans])).mark_rect().encode(
        x=_x("start", start, end), x2="stop:T",
        color=alt.Color("state:N", scale=_STATES, title="State"),
        tooltip=["state:N", "reason:N"]).properties(height=18)
    chart: alt.VConcatChart = alt.vconcat(top, strip, spacing=2).resolve_scale(
        color="shared").configure_legend(orient="top")
    return chart


def returns_heatmap(grid: pl.DataFrame) -> alt.Chart:
    """Instruments × time buckets, coloured by return (red down, blue up, symmetric)."""
    data = grid.drop_nulls("ret")
    top = cast(float, data["ret"].abs().max() or 0.01) if data.height else 0.01
    chart: alt.Chart = alt.Chart(data).mark_rect().encode(
        x=alt.X("bucket:T", title="Time (UTC)", axis=alt.Axis(format="%H:%M")),
        y=alt.Y("instrument:N", title=None),
        color=alt.Color("ret:Q", title="Return", scale=alt.Scale(
            scheme="redblue", domain=[-top, top]), legend=alt.Legend(format="+.1%")),
        tooltip=["instrument:N", "venue:N", alt.Tooltip("bucket:T", format="%H:%M"),
                 alt.Tooltip("ret:Q", title="Return", format="+.2%"),
                 alt.Tooltip("close:Q", format=",.4~g")],
    ).properties(height=alt.Step(22))
    return chart


def venue_index(index: pl.DataFrame) -> alt.Chart:
    chart: alt.Chart = alt.Chart(index).mark_line().encode(
        x=alt.X("bucket:T", title="Time (UTC)", axis=alt.Axis(format="%H:%M")),
        y=alt.Y("index:Q", title="Venue index (100 = window start)", scale=alt.Scale(zero=False)),
        color=alt.Color("venue:N", title="Venue"),
        tooltip=["venue:N", alt.Tooltip("bucket:T", format="%H:%M"),
                 alt.Tooltip("index:Q", format=".4~g")],
    ).properties(height=180)
    return chart


def halt_timeline(spans: pl.DataFrame) -> alt.Chart:
    """Every instrument's halts and pauses on one time axis (a Gantt chart)."""
    chart: alt.Chart = alt.Chart(spans).mark_bar(cornerRadius=2).encode(
        x=alt.X("start:T", title="Time (UTC)", axis=alt.Axis(format=_TIME)), x2="stop:T",
        y=alt.Y("instrument:N", title=None),
        color=alt.Color("state:N", scale=_STATES, title="State"),
        tooltip=["instrument:N", "state:N", "reason:N",
                 alt.Tooltip("start:T", title="From (UTC)", format="%Y-%m-%d %H:%M:%S"),
                 alt.Tooltip("stop:T", title="To (UTC)", format="%Y-%m-%d %H:%M:%S"),
                 alt.Tooltip("open:N", title="Still on")],
    ).properties(height=alt.Step(22))
    return chart


def network(edges: list[dict[str, Any]], *, highlight: list[str],
            funders: dict[str, str] | None = None) -> alt.LayerChart:
    """Who traded with whom: nodes on a circle, edges sized by notional (tooltips: count,
    quantity, notional), the alert's agents in red, funders as squares linked by dashes."""
    funders = funders or {}
    nodes = sorted({e["buyer"] for e in edges} | {e["seller"] for e in edges} | set(highlight))
    funder_nodes = sorted(set(funders.values()) - set(nodes))
    n = max(1, len(nodes))
    pos = {a: (math.cos(2 * math.pi * i / n), math.sin(2 * math.pi * i / n))
           for i, a in enumerate(nodes)}
    m = max(1, len(funder_nodes))
    pos.update({f: (1.6 * math.cos(2 * math.pi * (i + 0.5) / m),
                    1.6 * math.sin(2 * math.pi * (i + 0.5) / m))
                for i, f in enumerate(funder_nodes)})
    lines = pl.DataFrame(
        [{"x": pos[e["seller"]][0], "y": pos[e["seller"]][1], "x2": pos[e["buyer"]][0],
          "y2": pos[e["buyer"]][1], "pair": f"{e['seller']} → {e['buyer']}",
          "count": e["count"], "qty": e["qty"], "notional": e["notional"]} for e in edges],
        schema={"x": pl.Float64, "y": pl.Float64, "x2": pl.Float64, "y2": pl.Float64,
                "pair": pl.String, "count": pl.Int64, "qty": pl.Float64,
                "notional": pl.Float64})
    funding = pl.DataFrame(
        [{"x": pos[f][0], "y": pos[f][1], "x2": pos[a][0], "y2": pos[a][1],
          "pair": f"{f} funded {a}"} for a, f in funders.items() if a in pos and f in pos],
        schema={"x": pl.Float64, "y": pl.Float64, "x2": pl.Float64, "y2": pl.Float64,
                "pair": pl.String})
    hl = set(highlight)
    points = pl.DataFrame(
        [{"agent": a, "x": xy[0], "y": xy[1],
          "role": "funder" if a in funder_nodes else ("named in the alert" if a in hl
                                                      else "counterparty"),
          "funded_by": funders.get(a, "")} for a, xy in pos.items()],
        schema={"agent": pl.String, "x": pl.Float64, "y": pl.Float64, "role": pl.String,
                "funded_by": pl.String})
    axis = alt.Axis(labels=False, ticks=False, grid=False, domain=False, title=None)
    sx = alt.X("x:Q", axis=axis, scale=alt.Scale(domain=[-2, 2]))
    sy = alt.Y("y:Q", axis=axis, scale=alt.Scale(domain=[-2, 2]))
    roles = alt.Scale(domain=["named in the alert", "counterparty", "funder"],
                      range=["#d62728", "#7f8c8d", "#ff7f0e"])
    edge = alt.Chart(lines).mark_rule(opacity=0.55, color="#1f4e79").encode(
        x=sx, y=sy, x2="x2:Q", y2="y2:Q",
        strokeWidth=alt.StrokeWidth("notional:Q", scale=alt.Scale(range=[1, 12]),
                                    title="Notional"),
        tooltip=[alt.Tooltip("pair:N", title="Seller → buyer"), "count:Q",
                 alt.Tooltip("qty:Q", format=",.4~g"),
                 alt.Tooltip("notional:Q", format=",.2f")])
    fund = alt.Chart(funding).mark_rule(strokeDash=[4, 3], color="#ff7f0e").encode(
        x=sx, y=sy, x2="x2:Q", y2="y2:Q", tooltip=["pair:N"])
    node = alt.Chart(points).mark_point(filled=True, size=260, opacity=1).encode(
        x=sx, y=sy, color=alt.Color("role:N", scale=roles, title=None),
        shape=alt.Shape("role:N", scale=alt.Scale(
            domain=["named in the alert", "counterparty", "funder"],
            range=["circle", "circle", "square"]), legend=None),
        tooltip=["agent:N", "role:N", "funded_by:N"])
    label = alt.Chart(points).mark_text(dy=-16, fontSize=11).encode(x=sx, y=sy, text="agent:N")
    chart: alt.LayerChart = alt.layer(fund, edge, node, label).properties(
        height=420).interactive()  # type: ignore[assignment]
    return chart


def structure_lines(df: pl.DataFrame, metrics: dict[str, str]) -> alt.Chart:
    """One small panel per metric (shares and HHIs, 0–1) over the windows, per instrument."""
    long = df.unpivot(index=["window_start", "instrument"], on=list(metrics),
                      variable_name="metric").with_columns(
        pl.col("metric").replace(metrics))
    # a dot per window helps a short span; over a day (thousands of windows) it only costs
    # the browser time to draw
    dots = df.height <= 1_000
    chart: alt.Chart = alt.Chart(long).mark_line(point=dots).encode(
        x=alt.X("window_start:T", title="Window (UTC)", axis=alt.Axis(format=_TIME)),
        y=alt.Y("value:Q", title=None, scale=alt.Scale(domain=[0, 1])),
        color=alt.Color("instrument:N", title="Instrument"),
        tooltip=["instrument:N", "metric:N", alt.Tooltip("window_start:T", format=_TIME),
                 alt.Tooltip("value:Q", format=".3~f")],
    ).properties(height=160, width=320).facet(facet=alt.Facet("metric:N", title=None),
                                             columns=2)
    return chart


def activity(df: pl.DataFrame) -> alt.Chart:
    """Trades per minute of one agent (bars), with quantities bought and sold in the tooltip."""
    chart: alt.Chart = alt.Chart(df).mark_bar(color="#1f4e79").encode(
        x=alt.X("minute:T", title="Minute (UTC)", scale=alt.Scale(type="utc"),
                axis=alt.Axis(format="%H:%M", labelOverlap=True)),
        y=alt.Y("trades:Q", title="Trades per minute", axis=alt.Axis(tickMinStep=1)),
        tooltip=[alt.Tooltip("minute:T", title="Minute (UTC)", format="%Y-%m-%d %H:%M"),
                 "trades:Q", alt.Tooltip("bought:Q", format=",.4~g"),
                 alt.Tooltip("sold:Q", format=",.4~g")],
    ).properties(height=180)
    return chart


def positions(df: pl.DataFrame) -> alt.Chart:
    """Net position over time, one step line per instrument."""
    chart: alt.Chart = alt.Chart(df).mark_line(interpolate="step-after").encode(
        x=alt.X("ts:T", title="Time (UTC)", scale=alt.Scale(type="utc"),
                axis=alt.Axis(format=_TIME, labelOverlap=True)),
        y=alt.Y("position:Q", title="Net quantity"),
        color=alt.Color("instrument:N", title="Instrument"),
        tooltip=[alt.Tooltip("ts:T", title="After trade (UTC)", format="%Y-%m-%d %H:%M:%S"),
                 "instrument:N", "venue:N", alt.Tooltip("position:Q", format=",.4~g")],
    ).properties(height=220)
    return chart
