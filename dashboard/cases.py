"""The alert queue over the whole history, and cases as a fold of their actions.

A case is named by the alert it was opened from (``case_id`` = that ``alert_id``); its state
is a fold of its ``case/1`` actions in time order (:func:`fold`): the last disposition wins, the
last assignment wins, notes and links accumulate. The queue query computes the same fold in SQL
(``arg_max`` by time) so it can filter and sort on it; a test keeps the two in step.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

import polars as pl

from dashboard.queries import StoreReader

__all__ = ["SORTS", "AlertFilter", "CaseState", "alert_page", "audit", "case_states", "fold",
           "related_alerts"]

#: Sort keys the queue offers (label → SQL).
SORTS: Final[Mapping[str, str]] = {"time": "a.ts", "score": "a.score", "kind": "a.kind",
                                   "instrument": "a.instrument", "venue": "a.venue"}
_CASE_FOLD: Final = (
    "SELECT case_id, min(ts) AS opened_at, max(ts) AS updated_at, "
    "arg_max(disposition, ts) FILTER (WHERE disposition IS NOT NULL) AS disposition, "
    "arg_max(assignee, ts) FILTER (WHERE action = 'assign') AS assignee, "
    "count(*) FILTER (WHERE action = 'note') AS notes, count(*) AS actions, "
    "list_sort(list_distinct(flatten(list(alert_ids) FILTER "
    "(WHERE action IN ('open', 'link'))))) AS alert_ids "
    "FROM cases WHERE action NOT IN ('halt_request', 'resume_request') GROUP BY case_id")
#: alert_id → the case it belongs to (the earliest case that opened or linked it)
_MEMBERSHIP: Final = (
    "SELECT alert_id, arg_min(case_id, ts) AS case_id FROM (SELECT unnest(alert_ids) AS "
    "alert_id, case_id, ts FROM cases WHERE action IN ('open', 'link')) GROUP BY alert_id")


@dataclass(frozen=True)
class AlertFilter:
    """What the queue shows; every field narrows it (``None`` / empty = no constraint)."""

    kinds: tuple[str, ...] = ()
    min_score: float = 0.0
    max_score: float = 100.0
    instrument: str | None = None
    venue: str | None = None
    agent: str | None = None
    text: str | None = None
    start: datetime | None = None
    end: datetime | None = None
    #: ``"none"`` = alerts not in any case; else a disposition
    disposition: str | None = None

    def where(self) -> tuple[str, dict[str, Any]]:
        clauses = ["a.score BETWEEN $min_score AND $max_score"]
        params: dict[str, Any] = {"min_score": self.min_score, "max_score": self.max_score}
        if self.kinds:
            clauses.append("list_contains($kinds, a.kind)")
            params["kinds"] = list(self.kinds)
        for col in ("instrument", "venue"):
            value = getattr(self, col)
            if value:
                clauses.append(f"a.{col} = ${col}")
                params[col] = value
        if self.agent:
            clauses.append("(list_contains(a.agents, $agent) OR contains(a.evidence, "
                           "'\"' || $agent || '\"'))")
            params["agent"] = self.agent
        if self.text:
            clauses.append("(a.summary ILIKE $text OR a.alert_id ILIKE $text OR a.instrument "
                           "ILIKE $text OR array_to_string(a.agents, ' ') ILIKE $text)")
            params["text"] = f"%{self.text}%"
        if self.start:
            clauses.append("a.ts >= $start")
            params["start"] = self.start
        if self.end:
            clauses.append("a.ts <= $end")
            params["end"] = self.end
        if self.disposition == "none":
            clauses.append("m.case_id IS NULL")
        elif self.disposition:
            clauses.append("c.disposition = $disposition")
            params["disposition"] = self.disposition
        return " AND ".join(clauses), params


def alert_page(reader: StoreReader, flt: AlertFilter, *, sort: str = "time",
               descending: bool = True, offset: int = 0,
               limit: int = 50) -> tuple[int, pl.DataFrame]:
    """``(total matching, one page)`` of alerts with their case (id, disposition, assignee)."""
    where, params = flt.where()
    joins = (f"FROM alerts a LEFT JOIN ({_MEMBERSHIP}) m USING (alert_id) "
             f"LEFT JOIN ({_CASE_FOLD}) c ON c.case_id = m.case_id WHERE {where}")
    ((total,),) = reader.rows(f"SELECT count(*) {joins}", **params)
    direction = "DESC" if descending else "ASC"
    page = reader.frame(
        "SELECT a.ts, a.kind, a.score, a.instrument, a.venue, a.summary, a.agents, "
        "m.case_id, c.disposition, c.assignee, a.alert_id "
        f"{joins} ORDER BY {SORTS[sort]} {direction} NULLS LAST, a.ts DESC, a.alert_id "
        "LIMIT $limit OFFSET $offset", **params, limit=limit, offset=offset)
    return int(total), page


def case_states(reader: StoreReader) -> pl.DataFrame:
    """Every case's current state (the SQL fold), most recently updated first."""
    return reader.frame(f"SELECT * FROM ({_CASE_FOLD}) ORDER BY updated_at DESC")


def audit(reader: StoreReader, case_id: str | None = None, *, limit: int = 500) -> pl.DataFrame:
    """The audit trail, newest first: who did what, when and why (one case, or all)."""
    return reader.frame(
        "SELECT ts, actor, role, action, case_id, disposition, assignee, note, reason, "
        "alert_ids, instrument, venue, state, action_id FROM cases "
        "WHERE $case_id::VARCHAR IS NULL OR case_id = $case_id "
        "ORDER BY ts DESC, action_id LIMIT $limit", case_id=case_id, limit=limit)


def related_alerts(reader: StoreReader, alert: Mapping[str, Any], *,
                   limit: int = 20) -> pl.DataFrame:
    """Other alerts sharing an agent, or on the same instrument within an hour."""
    return reader.frame(
        "SELECT ts, kind, score, instrument, summary, agents, alert_id FROM alerts "
        "WHERE alert_id <> $id AND (len(list_intersect(agents, $agents)) > 0 OR "
        "(instrument = $instrument AND abs(epoch(ts) - epoch($ts::TIMESTAMPTZ)) <= 3600)) "
        "ORDER BY abs(epoch(ts) - epoch($ts::TIMESTAMPTZ)) LIMIT $limit",
        id=alert["alert_id"], agents=list(alert.get("agents") or []),
        instrument=alert.get("instrument"), ts=alert["ts"], limit=limit)


@dataclass
class CaseState:
    """A case folded from its actions."""

    case_id: str
    disposition: str = "new"
    assignee: str | None = None
    alert_ids: list[str] = field(default_factory=list)
    notes: list[tuple[datetime, str, str]] = field(default_factory=list)
    opened_at: datetime | None = None
    updated_at: datetime | None = None
    actions: int = 0


def fold(case_id: str, actions: Iterable[Mapping[str, Any]]) -> CaseState | None:
    """The state of ``case_id`` after its actions (any order; folded by time). None = no case.

    >>> from datetime import UTC
    >>> t = [datetime(2024, 1, 1, 0, 0, s, tzinfo=UTC) for s in range(4)]
    >>> acts = [{"ts": t[0], "case_id": "c", "action": "open", "alert_ids": ["c"],
    ...          "disposition": "new", "actor": "al"},
    ...         {"ts": t[2], "case_id": "c", "action": "disposition",
    ...          "disposition": "investigating", "actor": "al"},
    ...         {"ts": t[1], "case_id": "c", "action": "assign", "assignee": "bo", "actor": "al"},
    ...         {"ts": t[3], "case_id": "c", "action": "link", "alert_ids": ["d"], "actor": "bo"}]
    >>> s = fold("c", acts); s.disposition, s.assignee, s.alert_ids, s.actions
    ('investigating', 'bo', ['c', 'd'], 4)
    """
    mine = sorted((a for a in actions if a["case_id"] == case_id
                   and a["action"] not in ("halt_request", "resume_request")),
                  key=lambda a: (a["ts"], a.get("action_id") or ""))
    if not mine:
        return None
    state = CaseState(case_id, opened_at=mine[0]["ts"])
    for a in mine:
        state.actions += 1
        state.updated_at = a["ts"]
        if a.get("disposition"):
            state.disposition = a["disposition"]
        if a["action"] == "assign":
            state.assignee = a.get("assignee")
        if a["action"] in ("open", "link"):
            state.alert_ids = sorted(set(state.alert_ids) | set(a.get("alert_ids") or []))
        if a["action"] == "note" and a.get("note"):
            state.notes.append((a["ts"], a["actor"], a["note"]))
    return state
