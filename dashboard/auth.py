"""Users and roles of the desk: argon2-hashed passwords in a TOML file, OIDC when configured.

The users file is ``$SURVEIL_USERS_FILE``, else ``$SURVEIL_DATA_DIR/users.toml``::

    [users.alice]
    name = "Alice Analyst"
    role = "analyst"                      # viewer | analyst | supervisor
    password_hash = "$argon2id$v=19$..."  # python -m dashboard.auth hash

    [oidc]                                # roles of users who log in with st.login
    default_role = "viewer"
    roles = { "carol@regulator.example" = "supervisor" }

Passwords are never stored: only argon2id hashes (argon2-cffi). OIDC is offered when Streamlit's
``[auth]`` secrets are configured (``st.login``). Without a users file and without OIDC the desk
runs read-only: everyone is an anonymous *viewer*.

>>> rank("viewer") < rank("analyst") < rank("supervisor")
True
>>> u = User("al", "Al", "analyst"); u.can("analyst"), u.can("supervisor")
(True, False)
>>> h = hash_password("s3cret"); verify(h, "s3cret"), verify(h, "guess")
(True, False)
"""

from __future__ import annotations

import os
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

__all__ = ["ROLES", "User", "UsersConfig", "demo_users", "hash_password", "load_users", "rank",
           "users_file", "verify", "write_users"]

ROLES: Final = ("viewer", "analyst", "supervisor")
_hasher = PasswordHasher()


def rank(role: str) -> int:
    return ROLES.index(role) if role in ROLES else -1


@dataclass(frozen=True)
class User:
    """Who is at the desk. ``method``: ``password``, ``oidc`` or ``anonymous``."""

    username: str
    name: str
    role: str
    method: str = "password"

    def can(self, role: str) -> bool:
        """Whether this user holds at least ``role``."""
        return rank(self.role) >= rank(role)


@dataclass(frozen=True)
class UsersConfig:
    users: dict[str, dict[str, Any]]
    oidc_roles: dict[str, str]
    oidc_default_role: str

    @property
    def configured(self) -> bool:
        return bool(self.users)

    def login(self, username: str, password: str) -> User | None:
        """The user when the password matches its hash, else None (same cost either way)."""
        entry = self.users.get(username)
        stored = entry.get("password_hash", "") if entry else ""
        ok = verify(stored or _DUMMY, password) and entry is not None
        if not ok or entry is None:
            return None
        role = entry.get("role", "viewer")
        return User(username, entry.get("name", username), role if role in ROLES else "viewer")

    def oidc_user(self, email: str, name: str | None) -> User:
        role = self.oidc_roles.get(email, self.oidc_default_role)
        return User(email, name or email, role if role in ROLES else "viewer", "oidc")


def hash_password(password: str) -> str:
    return _hasher.hash(password)


_DUMMY: Final = hash_password("not a password")


def verify(stored: str, password: str) -> bool:
    try:
        return _hasher.verify(stored, password)
    except (VerificationError, InvalidHashError):
        return False


def users_file() -> Path:
    explicit = os.environ.get("SURVEIL_USERS_FILE")
    if explicit:
        return Path(explicit)
    return Path(os.environ.get("SURVEIL_DATA_DIR", "var")) / "users.toml"


def load_users(path: Path | None = None) -> UsersConfig:
    """The users file (an empty configuration when it does not exist)."""
    path = path or users_file()
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        data = {}
    oidc = data.get("oidc", {})
    return UsersConfig(users=dict(data.get("users", {})), oidc_roles=dict(oidc.get("roles", {})),
                       oidc_default_role=oidc.get("default_role", "viewer"))


def _toml_str(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_users(path: Path, users: dict[str, tuple[str, str, str]]) -> None:
    """Write a users file: ``{username: (name, role, password)}`` (passwords are hashed)."""
    lines = ["# Desk users: python -m dashboard.auth hash  prints a hash for a new password", ""]
    for username, (name, role, password) in users.items():
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}; expected one of {ROLES}")
        lines += [f"[users.{_toml_str(username)}]", f"name = {_toml_str(name)}",
                  f"role = {_toml_str(role)}",
                  f"password_hash = {_toml_str(hash_password(password))}", ""]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))
    path.chmod(0o600)


def demo_users(data_dir: Path) -> list[str]:
    """For ``surveil up``: one user per role with a random password, made once; the lines that
    tell how to log in. The passwords live only in ``demo-logins.txt`` (mode 600) beside the
    users file, which holds their hashes."""
    import secrets

    path, logins = data_dir / "users.toml", data_dir / "demo-logins.txt"
    if not path.exists():
        users = {role: (f"Demo {role}", role, secrets.token_urlsafe(9)) for role in ROLES}
        write_users(path, users)
        logins.write_text("".join(f"{u} {pw}\n" for u, (_, _, pw) in users.items()))
        logins.chmod(0o600)
    if not logins.exists():
        return [f"desk users: {path} (python -m dashboard.auth hash makes a password hash)"]
    pairs = [line.split(" ", 1) for line in logins.read_text().splitlines() if " " in line]
    roles = {u: e.get("role", "?") for u, e in load_users(path).users.items()}
    return [f"log in as {u!r} with password {pw!r} ({roles.get(u, '?')})"
            for u, pw in pairs] + [f"desk users: {path}"]


if __name__ == "__main__":  # python -m dashboard.auth hash
    import getpass

    if sys.argv[1:] != ["hash"]:
        sys.exit("usage: python -m dashboard.auth hash   (prints an argon2id hash of a password)")
    print(hash_password(getpass.getpass("password: ")))
