"""Agents: search an id, owner or funder; registry facts, the alerts that name the agent,
its counterparties (from alert evidence) and its cluster (agents sharing its funder)."""

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
