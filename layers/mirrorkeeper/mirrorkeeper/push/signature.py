"""The push contract's signature: ``X-Mirrorkeeper-Signature: sha256=<hex>``, the HMAC-SHA256 of
``<timestamp>.<body>`` under the mirror's push secret, with ``X-Mirrorkeeper-Timestamp`` (epoch
seconds) as the timestamp. Shared by the endpoint and ``mirrorkeeper push``, so they cannot disagree."""

import hashlib
import hmac
import re

TIMESTAMP_HEADER = "X-Mirrorkeeper-Timestamp"
SIGNATURE_HEADER = "X-Mirrorkeeper-Signature"
WINDOW = 300  # seconds a timestamp may be off the endpoint's clock, either way
MAX_BODY = 64 * 1024
_PREFIX = "sha256="
_SIGNATURE = re.compile(_PREFIX + "[0-9a-f]{64}")
_DIGITS = re.compile("[0-9]+")
_TIMESTAMP_CHARS = 20  # epoch seconds are 10 digits for centuries; longer is not a timestamp


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    """The signature header's value for ``body`` sent at ``timestamp``."""
    return _PREFIX + hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def well_formed(timestamp: str, signature: str) -> bool:
    """Whether the two headers are worth an HMAC: a short timestamp and ``sha256=`` with 64 hex digits."""
    return 0 < len(timestamp) <= _TIMESTAMP_CHARS and timestamp.isascii() and bool(_SIGNATURE.fullmatch(signature))


def signature_matches(secret: bytes, timestamp: str, body: bytes, signature: str) -> bool:
    """Whether ``signature`` is ``body``'s at ``timestamp`` under ``secret``, compared in constant time."""
    return hmac.compare_digest(sign(secret, timestamp, body), signature)


def skew(timestamp: str, now: float) -> float | None:
    """How far ``timestamp`` is from ``now``, in seconds; None when it is not whole epoch seconds."""
    if not _DIGITS.fullmatch(timestamp):
        return None
    return abs(now - int(timestamp))


def replay_digest(signature: str) -> str:
    """What marks a signature used: its SHA-256, so the key says nothing of the signature."""
    return hashlib.sha256(signature.encode()).hexdigest()
