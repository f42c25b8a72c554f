"""Agents: search an id, owner or funder; registry facts, its trading over time (trades per
minute, net position per instrument, top counterparties, from the stored trades), the alerts
that name the agent, its counterparties in alert evidence and its cluster (same funder)."""

from __future__ import annotations

import polars as pl
import streamlit as st

from dashboard import agents, charts, fmt, session, ui

st.title("Agents")
session.user() or session.require("viewer")

query = st.text_input("Search an agent id, owner or funder", key="agent_query")
found = ui.query("agent_search", query.strip()) if query.strip() else []
if not query.strip():
    st.caption("Type part of an agent id, an owner or a funder.")
    st.stop()
if not found:
    st.caption(f"No agent matches “{query}” in the registry or in alerts.")
    st.stop()
agent = st.selectbox(f"{len(found)} agents match", found, key="agent_pick")

facts = ui.query("registry", [agent])
named = ui.query("agent_alerts", agent)
owner, funder, n_alerts = st.columns(3)
row = facts.row(0, named=True) if facts.height else {}
owner.metric("Owner", row.get("owner") or "unknown", border=True)
funder.metric("Funded by", row.get("funded_by") or "unknown", border=True)
n_alerts.metric("Alerts naming it", f"{named.height:,}", border=True)
if facts.height:
    st.caption(f"Registry: kind {row.get('kind') or fmt.DASH} · venue "
               f"{row.get('venue') or fmt.DASH} · created {fmt.when(row.get('created_ts'))}")
else:
    st.caption("The registry (topic `agents`) does not know this agent.")

st.subheader("Activity")
trades = ui.query("agent_trades", agent)
if trades.is_empty():
    st.caption("No trades of this agent in the store (trades are kept when the store writer "
               "runs with `store_trades` on).")
else:
    n_trades, bought, sold = st.columns(3)
    flows = agents.activity(trades, agent)
    n_trades.metric("Trades stored", f"{trades.height:,}", border=True)
    bought.metric("Bought", fmt.num(flows["bought"].sum()), border=True)
    sold.metric("Sold", fmt.num(flows["sold"].sum()), border=True)
    st.caption(f"{trades.height:,} trades from {fmt.when(trades['ts'][0])} to "
               f"{fmt.when(trades['ts'][-1])}, once each.")
    st.altair_chart(charts.activity(flows), width="stretch")
    st.subheader("Position over time")
    st.altair_chart(charts.positions(agents.positions(trades, agent)), width="stretch")
    st.caption("Net quantity per instrument (bought − sold), counted from its first stored "
               "trade.")
    st.subheader("Top counterparties (from trades)")
    top = agents.trade_counterparties(trades, agent)
    st.dataframe(top.with_columns(
        *(pl.col(c).map_elements(fmt.num, return_dtype=pl.String) for c in ("bought", "sold")),
        notional=top["notional"].map_elements(fmt.money, return_dtype=pl.String)),
        hide_index=True, key="trade_peers")

st.subheader("Counterparties (from alert evidence)")
peers = agents.counterparties(named, agent)
if peers.is_empty():
    st.caption("No alert evidence shows whom it traded with.")
else:
    st.dataframe(peers.with_columns(
        notional=peers["notional"].map_elements(fmt.money, return_dtype=pl.String),
        qty=peers["qty"].map_elements(fmt.num, return_dtype=pl.String)), hide_index=True,
        key="peers")
    edges = [e for ev in named["evidence"].to_list() for e in agents.edges_of(ev)
             if agent in (e["buyer"], e["seller"])]
    st.altair_chart(charts.network(edges, highlight=[agent]), width="stretch")

st.subheader("Cluster (same funder)")
if row.get("funded_by"):
    cluster = ui.reader().frame("SELECT agent_id, owner, funded_by, created_ts, kind FROM agents "
                                "WHERE funded_by = $f ORDER BY agent_id", f=row["funded_by"])
    st.caption(f"{cluster.height} agents funded by {row['funded_by']}.")
    st.dataframe(cluster, hide_index=True, key="cluster")
else:
    st.caption("No funder on record, so no funding cluster.")

st.subheader("Alerts naming it")
if named.is_empty():
    st.caption("No alert names this agent.")
else:
    ui.alert_table(named.drop("evidence"), key="agent_alerts")
