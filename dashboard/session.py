"""Who is at the desk, what they may do, and how their actions leave: through Kafka.

- :func:`user` — the logged-in user (password, OIDC) or an anonymous viewer when the desk has no
  users file and no OIDC; :func:`require` stops a page for a role below the one it needs.
- :func:`login_page` — the log-in form (argon2 hashes from the users file) and the OIDC button.
- :func:`send` — publish case actions to the ``cases`` topic and wait for the broker; the store
  writer persists them and the audit trail shows them a second or two later.
- :func:`manual_halt` — a supervisor's signed manual halt or resumption
  (:func:`surveil.regulator.manual_action`: the audit record on ``cases``, then the halt).
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from dashboard.auth import User, load_users
from streams.cases import CaseAction, new_action, publish
from streams.settings import Settings

__all__ = ["act", "login_page", "logout", "manual_halt", "oidc_configured", "require", "send",
           "user"]

_KEY = "desk_user"


def oidc_configured() -> bool:
    try:
        return "auth" in st.secrets
    except (FileNotFoundError, st.errors.StreamlitSecretNotFoundError):  # no secrets.toml
        return False


def user() -> User | None:
    """The current user; None when log-in is required and nobody has logged in."""
    current = st.session_state.get(_KEY)
    if isinstance(current, User):
        return current
    if isinstance(current, dict):  # tests may set a plain dict
        return User(**current)
    config = load_users()
    if oidc_configured() and getattr(st.user, "is_logged_in", False):
        name = st.user.get("name")
        u = config.oidc_user(str(st.user.get("email") or ""),
                             name if isinstance(name, str) else None)
        st.session_state[_KEY] = u
        return u
    if not config.configured and not oidc_configured():
        return User("anonymous", "anonymous", "viewer", "anonymous")
    return None


def require(role: str) -> User:
    """The current user if they hold ``role``; otherwise say so and stop the page."""
    u = user()
    if u is None or not u.can(role):
        st.warning(f"This page needs the **{role}** role"
                   + (f"; you are logged in as {u.name} ({u.role})." if u else
                      ": log in first."))
        st.stop()
    return u


def login_page() -> None:
    """The log-in page (the only page shown before a log-in)."""
    st.title("Log in to the surveillance desk")
    config = load_users()
    if config.configured:
        with st.form("login"):
            name = st.text_input("User name", key="login_user")
            password = st.text_input("Password", type="password", key="login_password")
            submitted = st.form_submit_button("Log in", type="primary")
        if submitted:
            u = config.login(name.strip(), password)
            if u is None:
                st.error("Unknown user or wrong password.")
            else:
                st.session_state[_KEY] = u
                st.rerun()
    if oidc_configured():
        st.button("Log in with single sign-on", on_click=st.login)
    st.caption("Roles: viewer (read), analyst (cases, replay), supervisor (also manual halts).")


def logout() -> None:
    u = st.session_state.pop(_KEY, None)
    if isinstance(u, User) and u.method == "oidc":
        st.logout()


def send(actions: list[CaseAction]) -> str | None:
    """Publish to the ``cases`` topic; None on success, else why it was NOT recorded."""
    settings = Settings.from_env()
    try:
        publish(settings.brokers, settings.topics.cases, actions, timeout_s=10)
    except Exception as exc:  # noqa: BLE001 - any failure means: not recorded, say so
        return f"NOT recorded — the broker at {settings.brokers} did not take it ({exc!r})"
    return None


def act(u: User, action: str, *, case_id: str, **fields: Any) -> str | None:
    """One action by ``u`` (see :func:`streams.cases.new_action`), published; error or None."""
    return send([new_action(action, case_id=case_id, actor=u.username, role=u.role, **fields)])


def manual_halt(u: User, instrument: str, *, venue: str, state: str, note: str) -> str | None:
    """A signed manual halt (``state`` != TRADING) or resumption; error text or None."""
    import click

    from surveil.regulator import manual_action

    try:
        manual_action(Settings.from_env(), instrument, state=state, note=note, venue=venue,
                      user=u.username)
    except click.ClickException as exc:
        return exc.format_message()
    except Exception as exc:  # noqa: BLE001 - report, never pretend it went out
        return f"NOT sent: {exc!r}"
    return None
