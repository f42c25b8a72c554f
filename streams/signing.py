"""Ed25519 signatures on the ``halts`` topic (DESIGN §3.6 optional fields ``kid`` and ``sig``).

Canonical form
--------------
A signed message is a JSON object with two more fields: ``kid`` (the signing key's id) and
``sig`` (base64 of the 64-byte Ed25519 signature). The signature covers the **canonical bytes of
the object without** ``sig`` (``kid`` included, so a signature cannot be moved to another key):

    canonical = msgspec.json.encode({k: v for k, v in message.items() if k != "sig"},
                                    order="sorted")

that is UTF-8 JSON, object keys sorted at every depth, no whitespace, strings with only the
mandatory escapes (non-ASCII as raw UTF-8), integers as integers and floats in their shortest
round-trip form (``1.1``, ``2.5e-07``). The verifier re-encodes the object it *decoded*, so every
field it received — known or not — is covered, and adding or changing any field breaks the
signature. The same form signs heartbeats (``heartbeat/1``) and audit records (``action/1``); the
``schema`` field inside the signed bytes keeps one kind from passing for another.

Keys
----
``kid = "<role>-" + sha256(raw public key)[:16 hex]``; ``role`` is ``detector`` (halts and
heartbeats of the workers) or ``regulator`` (manual actions, reason ``MANUAL``). The key folder
(:func:`keys_dir`, ``<data_dir>/keys`` by default, mode 0700) holds ``<role>.pem`` (the current
private key, PKCS#8, mode 0600) and ``public.json``, the file exchanges read::

    {"schema": "halt-keys/1",
     "keys": [{"kid": "detector-1a2b…", "role": "detector", "public_key": "<base64 raw 32 B>",
               "created_at": "…Z", "not_after": null | "…Z"}]}

:func:`rotate` makes a new key for a role and gives the previous public key a ``not_after`` of
now + grace (default 24 h, longer than the longest halt, since subscribers re-read the topic from
the beginning); keys past their ``not_after`` are dropped from the file at the next rotation.
Old private keys are not kept. A :class:`KeyRing` loaded from a file re-reads it (at most once a
second) when it meets an unknown ``kid``, so running exchanges follow a rotation.

>>> import tempfile
>>> with tempfile.TemporaryDirectory() as d:
...     signer = rotate(Path(d), "detector")
...     ring = KeyRing.load(Path(d) / PUBLIC_FILE)
...     msg = signer.sign({"schema": "halt/1", "seq": 1, "note": "é"})
...     ring.verify(msg), ring.verify({**msg, "seq": 2})
('detector', 'bad_signature')
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import msgspec
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

__all__ = [
    "DEFAULT_GRACE_S",
    "PUBLIC_FILE",
    "ROLES",
    "KeyRing",
    "Signer",
    "canonical",
    "ensure_keys",
    "keys_dir",
    "kid_of",
    "load_signer",
    "rotate",
    "signer_for",
]

log = logging.getLogger(__name__)

ROLES: Final = ("detector", "regulator")
PUBLIC_FILE: Final = "public.json"
#: Grace period of a rotated-out public key (seconds).
DEFAULT_GRACE_S: Final = 86_400.0
_canon = msgspec.json.Encoder(order="sorted")


def canonical(message: Mapping[str, Any]) -> bytes:
    """The bytes a signature covers: ``message`` without ``sig``, keys sorted, compact JSON.

    >>> canonical({"sig": "x", "b": [1, {"d": 1, "c": 2.5}], "a": "é"}).decode()
    '{"a":"é","b":[1,{"c":2.5,"d":1}]}'
    """
    return _canon.encode({k: v for k, v in message.items() if k != "sig"})


def _raw(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def kid_of(public: Ed25519PublicKey, role: str) -> str:
    return f"{role}-{hashlib.sha256(_raw(public)).hexdigest()[:16]}"


def _iso(ts: float) -> str:
    from streams.contracts import iso

    return iso(ts)


@dataclass(frozen=True)
class Signer:
    """Signs messages with one private key."""

    key: Ed25519PrivateKey
    kid: str
    role: str

    def sign(self, message: Mapping[str, Any]) -> dict[str, Any]:
        """A copy of ``message`` with ``kid`` and ``sig`` set."""
        out = {k: v for k, v in message.items() if k != "sig"}
        out["kid"] = self.kid
        out["sig"] = base64.b64encode(self.key.sign(canonical(out))).decode("ascii")
        return out

    def sign_bytes(self, obj: Any) -> bytes:
        """JSON bytes of a contract object (msgspec struct or mapping), signed."""
        return msgspec.json.encode(self.sign(msgspec.to_builtins(obj)))


@dataclass(frozen=True)
class _PublicKey:
    kid: str
    role: str
    key: Ed25519PublicKey
    not_after: float | None


class KeyRing:
    """Public keys a subscriber trusts, with their role and end of validity."""

    def __init__(self, keys: Mapping[str, _PublicKey] | None = None,
                 source: Path | None = None) -> None:
        self.keys = dict(keys or {})
        self.source = source

    def __len__(self) -> int:
        return len(self.keys)

    def _reloaded(self) -> bool:
        """Re-read the source file if it changed (a rotation); at most once a second."""
        now = time.monotonic()
        if self.source is None or now < getattr(self, "_next_check", 0.0):
            return False
        self._next_check = now + 1.0
        try:
            fresh = KeyRing.load(self.source)
        except ValueError as exc:
            log.warning("keeping the loaded public keys: %s", exc)
            return False
        changed = set(fresh.keys) != set(self.keys)
        self.keys = fresh.keys
        if changed:
            log.info("public keys reloaded from %s: %s", self.source, sorted(self.keys))
        return changed

    @classmethod
    def load(cls, path: Path) -> KeyRing:
        """Read a public keys file (``halt-keys/1``); raises ``ValueError`` when malformed."""
        from streams.contracts import parse_ts

        try:
            doc = json.loads(Path(path).read_text())
            rows = doc["keys"] if doc.get("schema") == "halt-keys/1" else None
            if not isinstance(rows, list):
                raise ValueError("not a halt-keys/1 document")
            keys: dict[str, _PublicKey] = {}
            for row in rows:
                public = Ed25519PublicKey.from_public_bytes(base64.b64decode(row["public_key"]))
                role = row["role"]
                if role not in ROLES or row["kid"] != kid_of(public, role):
                    raise ValueError(f"key {row.get('kid')!r}: kid does not match key and role")
                end = row.get("not_after")
                keys[row["kid"]] = _PublicKey(row["kid"], role, public,
                                              None if end is None else parse_ts(end))
        except (OSError, KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"cannot read public keys {path}: {exc}") from None
        return cls(keys, Path(path))

    def verify(self, message: Mapping[str, Any], *, now: float | None = None) -> str:
        """The signer's role, or why the message is rejected: ``unsigned``, ``unknown_key``,
        ``expired_key`` or ``bad_signature`` (all roles are lower case, reasons have ``_`` or
        are ``unsigned``)."""
        kid, sig = message.get("kid"), message.get("sig")
        if kid is None and sig is None:
            return "unsigned"
        if not isinstance(kid, str) or not isinstance(sig, str):
            return "bad_signature"
        entry = self.keys.get(kid)
        if entry is None and self._reloaded():
            entry = self.keys.get(kid)
        if entry is None:
            return "unknown_key"
        if entry.not_after is not None and (time.time() if now is None else now) > entry.not_after:
            return "expired_key"
        try:
            entry.key.verify(base64.b64decode(sig, validate=True), canonical(message))
        except (InvalidSignature, ValueError):
            return "bad_signature"
        return entry.role


def public_keys(settings: Any) -> tuple[KeyRing | None, Path]:
    """The public keys a subscriber of ``settings`` trusts: ``halt_public_keys``, else
    ``<keys folder>/public.json`` when it exists (``None``: no keys, nothing is verified), and
    the path looked at. Raises ``ValueError`` when a named file is unreadable."""
    path = (Path(settings.halt_public_keys) if settings.halt_public_keys
            else keys_dir(settings) / PUBLIC_FILE)
    keys = KeyRing.load(path) if settings.halt_public_keys or path.exists() else None
    return keys, path


# ---------------------------------------------------------------------- key files
def keys_dir(settings: Any) -> Path:
    """The key folder of ``settings`` (``keys_dir`` or ``<data_dir>/keys``)."""
    given = str(getattr(settings, "keys_dir", "") or "")
    return Path(given) if given else Path(settings.data_dir) / "keys"


def _write_private(path: Path, key: Ed25519PrivateKey) -> None:
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, pem)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def _write_public(path: Path, rows: list[dict[str, Any]]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"schema": "halt-keys/1", "keys": rows}, indent=1) + "\n")
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def load_signer(folder: Path, role: str) -> Signer | None:
    """The current signer of ``role`` in ``folder`` (``None`` when there is no key)."""
    path = Path(folder) / f"{role}.pem"
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except FileNotFoundError:
        return None
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path} is not an Ed25519 private key")
    return Signer(key, kid_of(key.public_key(), role), role)


def rotate(folder: Path, role: str, *, grace_s: float = DEFAULT_GRACE_S,
           now: float | None = None) -> Signer:
    """Make a new key for ``role`` (creating the folder and files as needed); the previous
    public key of the role stays valid for ``grace_s`` seconds. Returns the new signer."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, got {role!r}")
    from streams.contracts import parse_ts

    now = time.time() if now is None else now
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    public = folder / PUBLIC_FILE
    rows: list[dict[str, Any]] = []
    if public.exists():
        KeyRing.load(public)  # refuse to rewrite a file we cannot read
        rows = json.loads(public.read_text())["keys"]
    old = load_signer(folder, role)
    for row in rows:
        if old is not None and row["kid"] == old.kid and row.get("not_after") is None:
            row["not_after"] = _iso(now + grace_s)
    rows = [r for r in rows if r.get("not_after") is None or parse_ts(r["not_after"]) > now]
    key = Ed25519PrivateKey.generate()
    signer = Signer(key, kid_of(key.public_key(), role), role)
    rows.append({"kid": signer.kid, "role": role,
                 "public_key": base64.b64encode(_raw(key.public_key())).decode("ascii"),
                 "created_at": _iso(now), "not_after": None})
    _write_private(folder / f"{role}.pem", key)
    _write_public(public, rows)
    log.info("new %s key %s in %s", role, signer.kid, folder)
    return signer


def ensure_keys(folder: Path) -> None:
    """Create a key for every role that has none (``surveil up``)."""
    for role in ROLES:
        if load_signer(folder, role) is None:
            rotate(folder, role)


class _ReloadingSigner:
    """The current signer of a role, re-read when its file changes (rotation), checked at most
    every ``check_s`` seconds."""

    def __init__(self, folder: Path, role: str, check_s: float = 2.0) -> None:
        self.path, self.role, self.check_s = Path(folder) / f"{role}.pem", role, check_s
        self._stamp: tuple[int, int] | None = None
        self._signer: Signer | None = None
        self._next = 0.0
        self._lock = threading.Lock()

    def get(self) -> Signer | None:
        with self._lock:
            now = time.monotonic()
            if now < self._next:
                return self._signer
            self._next = now + self.check_s
            try:
                st = self.path.stat()
                stamp = (st.st_mtime_ns, st.st_ino)
            except FileNotFoundError:
                stamp = None
            if stamp != self._stamp:
                self._stamp = stamp
                try:
                    self._signer = load_signer(self.path.parent, self.role)
                except (OSError, ValueError) as exc:
                    log.error("cannot load the %s key (%s); not signing", self.role, exc)
                    self._signer = None
                if self._signer is not None:
                    log.info("signing with %s key %s", self.role, self._signer.kid)
            return self._signer


_signers: dict[tuple[Path, str], _ReloadingSigner] = {}


def signer_for(settings: Any, role: str = "detector") -> Signer | None:
    """The current signer of ``role`` for ``settings``' key folder (``None``: sign nothing)."""
    key = (keys_dir(settings).resolve(), role)
    holder = _signers.get(key)
    if holder is None:
        holder = _signers.setdefault(key, _ReloadingSigner(*key))
    return holder.get()
