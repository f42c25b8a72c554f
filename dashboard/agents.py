"""Read-side queries about agents: the registry, the alerts naming them, who trades with whom
(from the ``edges`` stage-2 detectors put in alert evidence, and from the stored trades), their
activity and positions over time, and market structure over time.

Stored trades may repeat (at-least-once delivery; the writer keeps no key memory for them), so
every trade query filters the raw parts first and then keeps one row per ``(venue, trade_id)``.
"""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import datetime
from typing import Any

import polars as pl

from dashboard.queries import StoreReader

__all__ = ["activity", "agent_alerts", "agent_trades", "counterparties", "edges_of", "positions",
           "registry", "search", "structure", "trade_counterparties", "trades_around"]

_TRADE_COLUMNS = "ts, venue, instrument, trade_id, price, qty, buyer, seller"
_ONCE = "QUALIFY row_number() OVER (PARTITION BY venue, trade_id ORDER BY ts) = 1"


def search(reader: StoreReader, query: str, *, limit: int = 50) -> list[str]:
    """Agent ids whose id, owner or funder contains ``query`` (registry and alerts)."""
    return [r[0] for r in reader.rows(
        "SELECT agent_id FROM (SELECT agent_id FROM agents WHERE agent_id ILIKE $q OR owner "
        "ILIKE $q OR funded_by ILIKE $q UNION SELECT DISTINCT unnest(agents) FROM "
        "_alerts_raw) WHERE agent_id ILIKE $q OR agent_id IN (SELECT agent_id FROM agents "
        "WHERE owner ILIKE $q OR funded_by ILIKE $q) ORDER BY 1 LIMIT $limit",
        q=f"%{query}%", limit=limit)]


def registry(reader: StoreReader, agent_ids: list[str]) -> pl.DataFrame:
    """Registry facts (DESIGN §3.2) of these agents (those the registry knows)."""
    return reader.frame(
        "SELECT agent_id, owner, funded_by, created_ts, kind, venue FROM agents "
        "WHERE list_contains($ids, agent_id) ORDER BY agent_id", ids=agent_ids)


def agent_alerts(reader: StoreReader, agent_id: str, *, limit: int = 1000) -> pl.DataFrame:
    """Alerts that name the agent (in ``agents`` or anywhere in the evidence), newest first."""
    return reader.frame(
        "SELECT ts, kind, score, instrument, venue, summary, agents, alert_id, evidence "
        "FROM alerts WHERE list_contains(agents, $a) OR contains(evidence, '\"' || $a || '\"') "
        "ORDER BY ts DESC LIMIT $limit", a=agent_id, limit=limit)


def edges_of(evidence: Any) -> list[dict[str, Any]]:
    """The ``edges`` of an alert's evidence ({buyer, seller, count, qty, notional}), tolerant
    of missing fields; ``[]`` when there are none."""
    if isinstance(evidence, str):
        evidence = json.loads(evidence or "{}")
    out = []
    for e in (evidence or {}).get("edges") or []:
        if isinstance(e, dict) and e.get("buyer") and e.get("seller"):
            out.append({"buyer": str(e["buyer"]), "seller": str(e["seller"]),
                        "count": int(e.get("count") or 0), "qty": float(e.get("qty") or 0),
                        "notional": float(e.get("notional") or 0)})
    return out


def counterparties(alerts: pl.DataFrame, agent_id: str) -> pl.DataFrame:
    """Counterparties of ``agent_id`` summed over the edges of these alerts' evidence."""
    acc: dict[str, list[float]] = defaultdict(lambda: [0, 0.0, 0.0, 0])
    for evidence in alerts["evidence"].to_list() if "evidence" in alerts.columns else []:
        for e in edges_of(evidence):
            if agent_id not in (e["buyer"], e["seller"]) or e["buyer"] == e["seller"]:
                continue
            other = e["seller"] if e["buyer"] == agent_id else e["buyer"]
            row = acc[other]
            row[0] += e["count"]
            row[1] += e["qty"]
            row[2] += e["notional"]
            row[3] += 1
    return pl.DataFrame(
        [{"counterparty": k, "trades": int(v[0]), "qty": v[1], "notional": v[2],
          "alerts": int(v[3])} for k, v in acc.items()],
        schema={"counterparty": pl.String, "trades": pl.Int64, "qty": pl.Float64,
                "notional": pl.Float64, "alerts": pl.Int64},
    ).sort("notional", descending=True)


def structure(reader: StoreReader, instrument: str | None = None) -> pl.DataFrame:
    """Stage-2 market-structure metrics per window, oldest first (one instrument or all)."""
    return reader.frame(
        "SELECT venue, instrument, window_start, window_end, trades, agents, hhi, top5_share, "
        "new_entrant_share, new_entrants, counterparty_hhi, top_pair_share, self_trade_share "
        "FROM structure WHERE $i::VARCHAR IS NULL OR instrument = $i "
        "ORDER BY window_start, instrument", i=instrument)


def agent_trades(reader: StoreReader, agent_id: str, *, limit: int = 20_000) -> pl.DataFrame:
    """The agent's stored trades, once each, oldest first (the newest ``limit`` of them)."""
    return reader.frame(
        f"SELECT * FROM (SELECT {_TRADE_COLUMNS} FROM _trades_raw WHERE buyer = $a OR "
        f"seller = $a {_ONCE} ORDER BY ts DESC LIMIT $limit) ORDER BY ts, trade_id",
        a=agent_id, limit=limit)


def trades_around(reader: StoreReader, agent_ids: list[str], trade_ids: list[str],
                  start: datetime, end: datetime, *, limit: int = 2_000) -> pl.DataFrame:
    """Trades from ``start`` to ``end`` in which one of ``agent_ids`` took part, or whose id is
    among ``trade_ids``, once each, oldest first; ``in_evidence`` marks the latter."""
    return reader.frame(
        f"SELECT {_TRADE_COLUMNS}, list_contains($tids, trade_id) AS in_evidence FROM "
        "_trades_raw WHERE ts BETWEEN $start AND $end AND (list_contains($ids, buyer) OR "
        f"list_contains($ids, seller) OR list_contains($tids, trade_id)) {_ONCE} "
        "ORDER BY ts, trade_id LIMIT $limit",
        ids=agent_ids, tids=[str(t) for t in trade_ids], start=start, end=end, limit=limit)


def _signed(trades: pl.DataFrame, agent_id: str) -> pl.DataFrame:
    """``bought`` and ``sold`` quantities of the agent per trade (a self-trade is both)."""
    return trades.with_columns(
        bought=pl.when(pl.col("buyer") == agent_id).then(pl.col("qty")).otherwise(0.0),
        sold=pl.when(pl.col("seller") == agent_id).then(pl.col("qty")).otherwise(0.0))


def activity(trades: pl.DataFrame, agent_id: str) -> pl.DataFrame:
    """Trades and quantities bought and sold per minute."""
    return (_signed(trades, agent_id).group_by(minute=pl.col("ts").dt.truncate("1m"))
            .agg(trades=pl.len(), bought=pl.col("bought").sum(), sold=pl.col("sold").sum())
            .sort("minute"))


def positions(trades: pl.DataFrame, agent_id: str) -> pl.DataFrame:
    """Net quantity held per (venue, instrument) after each trade, from the first stored one."""
    return (_signed(trades, agent_id).sort("ts", "trade_id")
            .with_columns(position=(pl.col("bought") - pl.col("sold"))
                          .cum_sum().over("venue", "instrument"))
            .select("ts", "venue", "instrument", "position"))


def trade_counterparties(trades: pl.DataFrame, agent_id: str, *, top: int = 10) -> pl.DataFrame:
    """Whom the agent traded with most (by notional): trades, quantity bought from and sold
    to each, notional."""
    df = _signed(trades, agent_id).with_columns(
        counterparty=pl.when(pl.col("buyer") == agent_id).then(pl.col("seller"))
        .otherwise(pl.col("buyer")), notional=pl.col("price") * pl.col("qty"))
    return (df.group_by("counterparty")
            .agg(trades=pl.len(), bought=pl.col("bought").sum(), sold=pl.col("sold").sum(),
                 notional=pl.col("notional").sum())
            .sort("notional", "counterparty", descending=[True, False]).head(top))
