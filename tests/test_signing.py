"""Signed halt channel, without a broker: canonical form, keys and rotation, what HaltBook rejects
(and why), heartbeats, expiry at ``resume_at`` and the regulator's manual layer."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path
from typing import Any

import msgspec
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from exchange.haltbook import HaltBook, StateChange
from streams.contracts import Halt, iso
from streams.heartbeat import Heartbeats
from streams.outputs import halt_record
from streams.settings import Settings
from streams.signing import PUBLIC_FILE, KeyRing, Signer, canonical, load_signer, rotate

__all__: list[str] = []

GPU = "GPU-H100-1H"
NOW = 1_700_000_000.0  # the wall clock of these tests


class Clock:
    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def halt(t: float, state: str = "HALTED", *, reason: str = "SPIKE", instrument: str = GPU,
         resume_at: float | None = None, seq: int | None = None) -> dict[str, Any]:
    h = Halt(seq=round(t * 1e6) if seq is None else seq, ts=iso(t), emitted_at=iso(t),
             venue="v1", instrument=instrument, state=state, reason=reason,
             resume_at=None if resume_at is None else iso(resume_at), reference_price=2.0,
             band_low=None, band_high=None, alert_ids=["a1"])
    return msgspec.to_builtins(h)  # type: ignore[no-any-return]


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Signer, Signer, KeyRing]:
    det = rotate(tmp_path, "detector", now=NOW)
    reg = rotate(tmp_path, "regulator", now=NOW)
    return det, reg, KeyRing.load(tmp_path / PUBLIC_FILE)


def book_with(ring: KeyRing, **kw: Any) -> HaltBook:
    return HaltBook(keys=ring, wall_clock=lambda: NOW + 10, **kw)


def enc(message: dict[str, Any]) -> bytes:
    return msgspec.json.encode(message)


# ---------------------------------------------------------------------- signing
def test_canonical_form_is_sorted_compact_and_excludes_sig() -> None:
    msg = {"sig": "zz", "z": {"b": 1, "a": [1.5, {"y": None, "x": "é"}]}, "a": 10**18}
    assert canonical(msg) == '{"a":1000000000000000000,"z":{"a":[1.5,{"x":"é","y":null}],"b":1}}'\
        .encode()
    assert canonical(msg) == canonical(msgspec.json.decode(enc(msg)))  # survives the wire


def test_sign_and_verify_and_every_failure(keys: tuple[Signer, Signer, KeyRing]) -> None:
    det, reg, ring = keys
    msg = det.sign(halt(NOW))
    assert msg["kid"] == det.kid
    assert det.kid.startswith("detector-")
    assert reg.kid.startswith("regulator-")
    assert ring.verify(msg) == "detector"
    assert ring.verify(msgspec.json.decode(enc(msg))) == "detector"
    assert ring.verify({**msg, "state": "TRADING"}) == "bad_signature"  # altered
    assert ring.verify({**msg, "extra": 1}) == "bad_signature"  # a field added
    assert ring.verify({**msg, "sig": "!!"}) == "bad_signature"
    assert ring.verify({**msg, "sig": base64.b64encode(b"x" * 64).decode()}) == "bad_signature"
    assert ring.verify(halt(NOW)) == "unsigned"
    stranger = Signer(Ed25519PrivateKey.generate(), "detector-0000000000000000", "detector")
    assert ring.verify(stranger.sign(halt(NOW))) == "unknown_key"
    forged = Signer(Ed25519PrivateKey.generate(), det.kid, "detector")  # right kid, wrong key
    assert ring.verify(forged.sign(halt(NOW))) == "bad_signature"


def test_key_files_rotation_and_grace(tmp_path: Path) -> None:
    old = rotate(tmp_path, "detector", now=NOW)
    running = KeyRing.load(tmp_path / PUBLIC_FILE)  # an exchange started before the rotation
    assert stat.S_IMODE(os.stat(tmp_path / "detector.pem").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(tmp_path).st_mode) == 0o700
    new = rotate(tmp_path, "detector", grace_s=3600, now=NOW + 100)
    assert new.kid != old.kid
    loaded = load_signer(tmp_path, "detector")
    assert loaded is not None
    assert loaded.kid == new.kid
    ring = KeyRing.load(tmp_path / PUBLIC_FILE)
    assert set(ring.keys) == {old.kid, new.kid}
    signed_old = old.sign(halt(NOW))
    assert ring.verify(signed_old, now=NOW + 3000) == "detector"  # within the grace period
    assert ring.verify(signed_old, now=NOW + 3800) == "expired_key"
    assert ring.verify(new.sign(halt(NOW)), now=NOW + 10**6) == "detector"
    assert running.verify(new.sign(halt(NOW)), now=NOW + 200) == "detector"  # re-read the file
    rotate(tmp_path, "detector", now=NOW + 4000)  # expired keys leave the file
    assert old.kid not in KeyRing.load(tmp_path / PUBLIC_FILE).keys
    (tmp_path / "bad.json").write_text('{"schema": "halt-keys/1", "keys": [{"kid": "detector-'
                                       'x", "role": "detector", "public_key": "'
                                       + base64.b64encode(b"k" * 32).decode() + '"}]}')
    with pytest.raises(ValueError, match="kid does not match"):
        KeyRing.load(tmp_path / "bad.json")


def test_worker_signs_topic_halts_only_when_it_has_a_key(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    h = msgspec.convert(halt(NOW), Halt)
    assert "sig" not in msgspec.json.decode(halt_record(settings, h)[2])
    rotate(tmp_path / "signing", "detector")  # (a key appearing later is seen within 2 s)
    fresh = Settings(data_dir=tmp_path, keys_dir=str(tmp_path / "signing"))
    topic, key, value = halt_record(fresh, h)
    assert (topic, key) == ("halts", GPU.encode())
    ring = KeyRing.load(tmp_path / "signing" / PUBLIC_FILE)
    assert ring.verify(msgspec.json.decode(value)) == "detector"


# ---------------------------------------------------------------------- what the book rejects
def test_book_rejects_forged_unsigned_replayed_and_implausible(
        keys: tuple[Signer, Signer, KeyRing]) -> None:
    det, reg, ring = keys
    book = book_with(ring)
    attacker = Signer(Ed25519PrivateKey.generate(), det.kid, "detector")
    assert book.apply(enc(attacker.sign(halt(NOW, "TRADING", reason="RESUME",
                                             seq=2**62)))) is None
    assert book.apply(enc(halt(NOW, seq=2**62))) is None  # unsigned
    real = det.sign(halt(NOW))
    assert book.apply(enc(real)) is not None
    assert book.state("v1", GPU) == "HALTED"
    assert book.apply(enc(real)) is None  # replayed
    assert book.apply(enc(det.sign(halt(NOW - 1, "TRADING", reason="RESUME")))) is None
    assert book.apply(enc(det.sign(halt(NOW + 1, "TRADING", reason="RESUME",
                                        seq=2**62)))) is None  # seq_ahead, even when signed
    assert book.apply(enc(det.sign(halt(NOW + 10**6, "TRADING", reason="RESUME")))) is None
    assert book.apply(enc(det.sign(halt(NOW + 1, reason="MANUAL")))) is None  # wrong role
    assert book.apply(enc(reg.sign(halt(NOW + 1, reason="SPIKE")))) is None  # wrong role
    assert book.state("v1", GPU) == "HALTED"
    assert book.apply(enc(det.sign(halt(NOW + 2, "TRADING", reason="RESUME")))) is not None
    assert book.state("v1", GPU) == "TRADING"  # the real resumption was not locked out
    assert book.counters.rejected == {"bad_signature": 1, "unsigned": 1, "replayed": 2,
                                      "seq_ahead": 1, "future_ts": 1, "wrong_role": 2}
    assert (book.counters.stale, book.counters.applied) == (2, 2)


def test_unsigned_feed_cannot_be_locked_by_a_huge_seq() -> None:
    book = HaltBook(wall_clock=lambda: NOW)
    assert book.apply(enc(halt(NOW, "TRADING", reason="RESUME", seq=2**62))) is None
    assert book.apply(enc(halt(NOW + 4e6, "TRADING", reason="RESUME"))) is None  # 46 days ahead
    assert book.apply(enc(halt(NOW))) is not None
    assert book.state("v1", GPU) == "HALTED"
    assert book.counters.rejected == {"seq_ahead": 1, "future_ts": 1}


def test_signatures_optional_when_not_required(keys: tuple[Signer, Signer, KeyRing]) -> None:
    det, _, ring = keys
    book = book_with(ring, require_signatures=False)
    assert book.apply(enc(halt(NOW))) is not None
    assert book.apply(enc({**det.sign(halt(NOW + 1, "TRADING")), "state": "HALTED"})) is None
    assert book.counters.rejected == {"bad_signature": 1}
    with pytest.raises(ValueError, match="public keys"):
        HaltBook(require_signatures=True)


# ---------------------------------------------------------------------- heartbeats and expiry
def beat(signer: Signer | None, worker: str, seq: int, emitted: float,
         watermarks: dict[str, float] | None = None) -> bytes:
    body = {"schema": "heartbeat/1", "worker": worker, "seq": seq, "emitted_at": iso(emitted),
            "watermarks": {v: iso(t) for v, t in (watermarks or {}).items()}, "partitions": [0]}
    return enc(signer.sign(body) if signer is not None else body)


def test_heartbeats_keep_the_book_live_and_are_checked(
        keys: tuple[Signer, Signer, KeyRing]) -> None:
    det, reg, ring = keys
    mono, seen = Clock(), list[StateChange]()
    book = book_with(ring, heartbeat_timeout_s=3.0, clock=mono, on_change=seen.append)
    assert book.silent
    assert book.state("v1", GPU) == "QUOTE_ONLY"
    assert book.apply(beat(det, "w1", 1, NOW - 3600)) is None  # an old one (re-read): not alive
    assert book.silent
    assert book.apply(beat(det, "w1", 2, NOW + 10)) is None
    assert book.state("v1", GPU) == "TRADING"
    assert book.counters.heartbeats == 1
    mono.now += 2.5
    assert book.apply(beat(det, "w1", 2, NOW + 10)) is None  # replayed
    assert book.apply(beat(None, "w1", 3, NOW + 10)) is None  # unsigned
    assert book.apply(beat(reg, "w1", 3, NOW + 10)) is None  # not a detector key
    assert book.apply(beat(det, "w2", 1, NOW + 3600)) is None  # from the future
    mono.now += 1.0
    assert book.state("v1", GPU) == "QUOTE_ONLY"  # heartbeats stopped
    book.check()
    assert book.apply(beat(det, "w1", 3, NOW + 11)) is None
    assert book.state("v1", GPU) == "TRADING"
    assert [c.reason for c in seen] == ["FEED_LIVE", "HEARTBEAT_LOST", "FEED_LIVE"]
    assert book.counters.rejected == {"stale_heartbeat": 1, "replayed": 1, "unsigned": 1,
                                      "wrong_role": 1, "future_heartbeat": 1}


def test_lost_resume_expires_at_resume_at_but_not_mwc3_or_manual(
        keys: tuple[Signer, Signer, KeyRing]) -> None:
    det, reg, ring = keys
    book = book_with(ring)
    t = NOW - 600
    book.apply(enc(det.sign(halt(t, "PAUSED", reason="LUDP", resume_at=t + 120))))
    book.apply(enc(det.sign(halt(t, "HALTED", reason="MWC3", instrument="*",
                                 resume_at=t + 120))))
    book.apply(enc(reg.sign(halt(t, "HALTED", reason="MANUAL", instrument="KWH",
                                 resume_at=t + 120))))
    book.apply(beat(det, "w1", 1, NOW, {"v1": t + 121}))
    assert book.last("v1", GPU).state == "PAUSED"  # type: ignore[union-attr]  # within grace
    book.apply(beat(det, "w1", 2, NOW, {"v1": t + 123}))
    assert book.last("v1", GPU).state == "TRADING"  # type: ignore[union-attr]
    assert book.counters.expired == 1
    assert book.snapshot() == {("v1", GPU): "TRADING", ("v1", "*"): "HALTED",
                               ("v1", "KWH"): "HALTED"}
    book.advance("v1", t + 10**5)
    assert book.counters.expired == 1


def test_manual_layer_outlives_detector_resumptions(
        keys: tuple[Signer, Signer, KeyRing]) -> None:
    det, reg, ring = keys
    book = book_with(ring)
    book.apply(enc(det.sign(halt(NOW - 5, "PAUSED", reason="LUDP"))))
    book.apply(enc(reg.sign(halt(NOW - 4, "HALTED", reason="MANUAL"))))
    book.apply(enc(det.sign(halt(NOW - 3, "TRADING", reason="RESUME"))))
    assert book.state("v1", GPU) == "HALTED"  # the detector cannot lift the regulator's halt
    book.apply(enc(det.sign(halt(NOW - 2, "PAUSED", reason="VELOCITY"))))
    book.apply(enc(reg.sign(halt(NOW - 1, "TRADING", reason="MANUAL"))))
    assert book.state("v1", GPU) == "TRADING"  # the regulator lifts both
    book.apply(enc(det.sign(halt(NOW, "PAUSED", reason="LUDP"))))
    assert book.state("v1", GPU) == "PAUSED"  # and the detectors keep working


def test_worker_heartbeat_record_has_watermarks_per_venue(tmp_path: Path) -> None:
    rotate(tmp_path / "keys", "detector")

    class VC:
        def __init__(self, timer: float) -> None:
            self.timer = timer

    class State:
        def __init__(self, **clocks: float) -> None:
            self.clocks = {v: VC(t) for v, t in clocks.items()}

    settings = Settings(data_dir=tmp_path, keys_dir=str(tmp_path / "keys"))
    beats = Heartbeats(settings, worker_id="w", clock=lambda: NOW)
    assert beats.enabled()
    topic, key, value = beats.record({0: State(v1=NOW - 5, v2=float("-inf")), 1: State(v1=NOW)})
    body = msgspec.json.decode(value)
    assert (topic, key, body["schema"], body["worker"]) == ("halts", b"~heartbeat",
                                                            "heartbeat/1", "w")
    assert body["watermarks"] == {"v1": iso(NOW - 5)}
    assert body["partitions"] == [0, 1]
    assert KeyRing.load(tmp_path / "keys" / PUBLIC_FILE).verify(body) == "detector"
    assert msgspec.json.decode(beats.record({})[2])["seq"] > body["seq"]
    assert not Heartbeats(Settings(data_dir=tmp_path / "none")).enabled()


def test_the_store_keeps_only_heartbeats_a_detector_key_signed(tmp_path: Path) -> None:
    """With public keys, a forged, unsigned or regulator-signed heartbeat is dropped and
    counted: it must not make a dead pipeline look alive on the desk."""
    from streams.signing import ensure_keys, public_keys
    from streams.store import StoreWriter, _genuine

    settings = Settings(data_dir=tmp_path)
    assert public_keys(settings)[0] is None  # no keys yet: every beat is kept
    ensure_keys(tmp_path / "keys")
    keys, path = public_keys(settings)
    assert keys is not None
    assert path == tmp_path / "keys" / PUBLIC_FILE
    beat = msgspec.json.decode(Heartbeats(settings, worker_id="w1", clock=lambda: 10.0)
                               .record({})[2])
    assert keys.verify(beat) == "detector"
    forged = {**beat, "worker": "w2"}  # the signature no longer matches
    unsigned = {k: v for k, v in beat.items() if k not in ("kid", "sig")}
    by_regulator = load_signer(tmp_path / "keys", "regulator").sign(  # type: ignore[union-attr]
        {k: v for k, v in unsigned.items()})
    writer = StoreWriter(tmp_path / "store")
    kept = _genuine([beat, forged, unsigned, by_regulator], keys, writer, "halts")
    assert kept == [beat]
    assert writer.stats["forged_heartbeats"] == 3
    assert _genuine([forged], None, writer, "halts") == [forged]
