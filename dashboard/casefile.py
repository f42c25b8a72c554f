"""An alert read like a case file, and the case panel beside it (Streamlit rendering).

:func:`evidence` shows, per alert: the headline figures, the thresholds crossed in words, the
price around the event (halts shaded, the trigger marked, log scale when it helps), the agents'
network for wash / cycle / Sybil alerts (edges from the evidence, funders from the registry),
the registry facts, the involved agents' trades around the alert (from the trade store, the
evidence's trade ids highlighted) and every other figure, all rounded once by
:mod:`dashboard.fmt`.
:func:`case_panel` opens the alert as a case or works the case it belongs to; every action
goes to the ``cases`` topic (:mod:`dashboard.session`) and comes back in the audit trail.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any, Final, cast

import polars as pl
import streamlit as st

from dashboard import agents, charts, fmt, session, ui
from dashboard import evidence as words
from dashboard.auth import User
from dashboard.cases import fold
from streams.cases import DISPOSITIONS, TRANSITIONS

__all__ = ["audit_table", "case_panel", "evidence"]

GRAPH_KINDS = ("wash_trade", "circular_trading", "sybil_cluster")
AROUND = timedelta(minutes=15)


def evidence(alert: dict[str, Any]) -> None:
    ev = alert["evidence"] or {}
    st.subheader(alert["summary"])
    score, kind, where, who = st.columns([2, 3, 4, 2])
    score.metric("Score", fmt.score(alert["score"]), border=True)
    kind.metric("Kind", ui.kind_label(alert["kind"]), border=True)
    where.metric("Instrument", alert["instrument"] or fmt.DASH, border=True)
    who.metric("Agents", len(alert["agents"]), border=True)
    st.caption(f"{fmt.when(alert['ts'])} · venue {alert['venue']} · detector "
               f"{alert['detector']} · id `{alert['alert_id']}`")
    found = words.findings(ev)
    if found:
        st.markdown("**What crossed which threshold**\n\n" + "\n".join(f"- {f}" for f in found))

    if alert["instrument"]:
        _price_around(alert)
    edges = agents.edges_of(ev)
    named = list(alert["agents"] or ev.get("agents") or [])
    registry = ui.query("registry", sorted({*named, *(e["buyer"] for e in edges),
                                            *(e["seller"] for e in edges)}))
    if edges or alert["kind"] in GRAPH_KINDS:
        st.markdown("**Who traded with whom**")
        if edges:
            funders = {r["agent_id"]: r["funded_by"] for r in registry.iter_rows(named=True)
                       if r["funded_by"]}
            st.altair_chart(charts.network(edges, highlight=named, funders=funders),
                            width="stretch")
            st.caption(f"{len(edges)} pairs from the evidence; line width = notional; red: "
                       "agents the alert names; squares: their funders (registry). Drag to "
                       "pan, scroll to zoom.")
        else:
            st.caption("This alert's evidence carries no trade edges to draw.")
    st.markdown("**Registry facts**")
    if registry.is_empty():
        st.caption("The registry (topic `agents`) knows none of these agents.")
    else:
        st.dataframe(registry, hide_index=True, key=f"registry_{alert['alert_id']}")
    involved = sorted({*named, *(e["buyer"] for e in edges), *(e["seller"] for e in edges)})
    _trades_around(alert, involved, [str(i) for i in ev.get("trade_ids") or []])
    rows = words.facts(ev)
    if rows:
        with st.expander("Every figure of the evidence"):
            st.dataframe(pl.DataFrame(rows, schema=["figure", "value"], orient="row"),
                         hide_index=True, key=f"facts_{alert['alert_id']}")
            st.json(fmt.tidy(ev), expanded=1)


def _price_around(alert: dict[str, Any]) -> None:
    start, end = alert["ts"] - AROUND, alert["ts"] + AROUND
    bars = ui.reader().bars_between(alert["instrument"], start, end)
    if bars.is_empty():
        st.caption(f"No bars of {alert['instrument']} around {fmt.when(alert['ts'])}.")
        return
    halts = ui.halts(alert["instrument"])
    log = st.toggle("Log scale", value=_wide(bars),
                    key=f"log_{alert['alert_id']}")
    st.altair_chart(charts.price(bars, halts, log=log, trigger=alert["ts"],
                                 trigger_label=ui.kind_label(alert["kind"])), width="stretch")
    st.caption(f"{alert['instrument']} from {fmt.when(start)} to {fmt.when(end)}: the line "
               "breaks where no trades printed; shading and the band below: halt states; "
               "dotted rule: the alert.")


_EVIDENCE_CSS: Final = "background-color: #fff3cd; color: #664d03; font-weight: 600"


def _trades_around(alert: dict[str, Any], agent_ids: list[str], trade_ids: list[str]) -> None:
    """The involved agents' trades within ``AROUND`` of the alert; the evidence's highlighted."""
    st.markdown("**Their trades around the alert**")
    start, end = alert["ts"] - AROUND, alert["ts"] + AROUND
    trades = ui.query("trades_around", agent_ids, trade_ids, start, end)
    if trades.is_empty():
        st.caption(f"No stored trades of {', '.join(agent_ids) or 'these agents'} from "
                   f"{fmt.when(start)} to {fmt.when(end)}"
                   + (f" (the evidence names {len(trade_ids)} trade ids)" if trade_ids else "")
                   + ". Trades are kept when the store writer runs with `store_trades` on.")
        return
    found = int(trades["in_evidence"].sum())
    styled = trades.to_pandas().style.apply(
        lambda row: [_EVIDENCE_CSS if row["in_evidence"] else ""] * len(row), axis=1)
    st.dataframe(styled, hide_index=True, key=f"trades_{alert['alert_id']}", column_config={
        "ts": st.column_config.DatetimeColumn("Time (UTC)", format="YYYY-MM-DD HH:mm:ss.SSS"),
        "in_evidence": st.column_config.CheckboxColumn("In evidence")})
    st.caption(f"{trades.height:,} trades of {len(agent_ids)} agents from {fmt.when(start)} to "
               f"{fmt.when(end)}" + (f"; {found} of the {len(trade_ids)} trade ids in the "
                                     "evidence are among them (highlighted)" if trade_ids
                                     else "") + ".")


def _wide(bars: pl.DataFrame) -> bool:
    low, high = cast(float, bars["low"].min() or 0), cast(float, bars["high"].max() or 0)
    return low > 0 and high / low > charts.LOG_SPAN


def audit_table(df: pl.DataFrame, *, key: str) -> None:
    """The audit trail: newest first; nothing here can be edited."""
    shown = df.select("ts", "actor", "role", "action", "disposition", "assignee", "note",
                      "reason", "alert_ids", "case_id", "instrument", "state")
    st.dataframe(shown, hide_index=True, key=key, column_config={
        "ts": st.column_config.DatetimeColumn("When (UTC)", format="YYYY-MM-DD HH:mm:ss"),
        "actor": "Who", "role": "Role", "action": "What", "note": "Note", "reason": "Why",
        "alert_ids": st.column_config.ListColumn("Alerts")})


def case_panel(alert: dict[str, Any], case_id: str | None, user: User) -> None:
    st.markdown("### Case")
    if case_id is None:
        st.caption("This alert is not part of a case.")
        if user.can("analyst"):
            with st.form(f"open_{alert['alert_id']}"):
                why = st.text_input("Why open a case?", key="open_reason")
                if st.form_submit_button("Open as a case", type="primary"):
                    _done(lambda: session.act(
                        user, "open", case_id=alert["alert_id"], alert_ids=[alert["alert_id"]],
                        reason=why, instrument=alert["instrument"], venue=alert["venue"]),
                        need=why)
        return
    trail = ui.query("audit", case_id)
    state = fold(case_id, trail.to_dicts())
    if state is None:
        st.caption(f"Case `{case_id}` was opened; its record is on its way to the store.")
        return
    status, owner, notes = st.columns(3)
    status.metric("Disposition", state.disposition, border=True)
    owner.metric("Assigned to", state.assignee or "nobody", border=True)
    notes.metric("Notes", len(state.notes), border=True)
    st.caption(f"Case `{case_id}` · opened {fmt.when(state.opened_at)} · "
               f"{len(state.alert_ids)} alerts: {', '.join(state.alert_ids)}")
    if user.can("analyst"):
        _case_actions(alert, case_id, state.disposition, user)
    st.markdown("**Audit trail**")
    audit_table(trail, key=f"audit_{case_id}")


def _case_actions(alert: dict[str, Any], case_id: str, current: str, user: User) -> None:
    related = ui.query("related_alerts", alert)
    with st.form(f"act_{case_id}", clear_on_submit=True):
        targets = [current, *TRANSITIONS.get(current, ())]
        disposition = st.selectbox("Disposition", targets, key="case_disposition",
                                   help="new → investigating → escalated / dismissed / "
                                        "confirmed; " + ", ".join(DISPOSITIONS))
        assignee = st.text_input("Assign to (user name; empty = keep)", key="case_assignee")
        link = st.multiselect("Link related alerts", related["alert_id"].to_list(),
                              key="case_link", format_func=lambda i: _label(related, i))
        note = st.text_area("Note", key="case_note")
        why = st.text_input("Why (required)", key="case_reason")
        if st.form_submit_button("Record", type="primary"):
            from streams.cases import new_action

            common = {"case_id": case_id, "actor": user.username, "role": user.role,
                      "reason": why, "instrument": alert["instrument"], "venue": alert["venue"]}
            actions = []
            if disposition != current:
                actions.append(new_action("disposition", disposition=disposition, **common))
            if assignee.strip():
                actions.append(new_action("assign", assignee=assignee.strip(), **common))
            if link:
                actions.append(new_action("link", alert_ids=list(link), **common))
            if note.strip():
                actions.append(new_action("note", note=note.strip(), **common))
            if not actions:
                st.warning("Nothing to record: change the disposition, assign, link or write "
                           "a note.")
            else:
                _done(lambda: session.send(actions), need=why, n=len(actions))


def _label(related: pl.DataFrame, alert_id: str) -> str:
    row = related.row(related["alert_id"].to_list().index(alert_id), named=True)
    return ui.alert_label(row)


def _done(send: Callable[[], str | None], *, need: str, n: int = 1) -> None:
    if not need.strip():
        st.error("Say why: the audit trail records the reason of every action.")
    elif error := send():
        st.error(error)
    else:
        st.cache_data.clear()
        st.success(f"{n} action(s) sent to the `cases` topic; they appear in the audit trail "
                   "as soon as the store writer has stored them (a second or two).")
