"""Read-side queries about agents: the registry, the alerts naming them, who trades with whom
(from the ``edges`` stage-2 detectors put in alert evidence), and market structure over time."""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

import polars as pl

from dashboard.queries import StoreReader

__all__ = ["agent_alerts", "counterparties", "edges_of", "registry", "search", "structure"]


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
