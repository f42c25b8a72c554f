"""Records between our own processes carry an HMAC: stage 1's window summaries, price buckets and
watermarks on ``flows`` are read by stage 2 only when they are authenticated.

Being able to write to ``flows`` must not be enough to steer stage 2. A forged watermark far
ahead would close every open window at once, so the real summaries would arrive late and be
dropped: the venue-wide detectors would go blind. A forged summary could accuse agents who
never traded. A sealed record is ``b"H1"`` + HMAC-SHA256(key, payload) + payload, under the key
the checkpoints use (:func:`streams.checkpoint.checkpoint_key`: ``SURVEIL_CHECKPOINT_KEY`` or
``$SURVEIL_DATA_DIR/checkpoint.key``), which every worker of a deployment already shares.

>>> value = seal(b"k" * 32, b'{"schema":"watermark/1"}')
>>> unseal(b"k" * 32, value)
b'{"schema":"watermark/1"}'
>>> unseal(b"other", value) is None, unseal(b"k" * 32, value[:-1] + b" ") is None
(True, True)
>>> unseal(b"k" * 32, b'{"schema":"watermark/1"}') is None  # unsealed
True
"""

from __future__ import annotations

import hashlib
import hmac

__all__ = ["seal", "unseal"]

TAG = b"H1"
_MAC = 32


def seal(key: bytes, payload: bytes) -> bytes:
    return TAG + hmac.new(key, payload, hashlib.sha256).digest() + payload


def unseal(key: bytes | None, value: bytes | None) -> bytes | None:
    """The payload of a sealed ``value``; ``None`` if it is not sealed with ``key`` (or there is
    no key to check it with)."""
    if key is None or not value or len(value) < len(TAG) + _MAC or not value.startswith(TAG):
        return None
    mac, payload = value[len(TAG):len(TAG) + _MAC], value[len(TAG) + _MAC:]
    if not hmac.compare_digest(mac, hmac.new(key, payload, hashlib.sha256).digest()):
        return None
    return payload
