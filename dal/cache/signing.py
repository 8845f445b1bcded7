"""Sealing cache entries: HMAC-SHA256 bound to the cache key when a key is configured.

A sealed entry starts with one byte telling how it was sealed: ``U`` (plain, no key
configured) or ``S`` followed by the digest. With a key, an entry that was tampered with,
forged, or copied under another cache key fails :meth:`Signer.open`.
"""

from __future__ import annotations

import hashlib
import hmac

_SIGNED = b"S"
_PLAIN = b"U"
_DIGEST_SIZE = 32


class Signer:
    """Seal and open cache entries; with a key, entries are HMAC-signed and bound to their cache key."""

    def __init__(self, key: bytes | None) -> None:
        self._key = key

    @property
    def signing(self) -> bool:
        return self._key is not None

    def seal(self, cache_key: str, payload: bytes) -> bytes:
        if self._key is None:
            return _PLAIN + payload
        return _SIGNED + self._digest(cache_key, payload) + payload

    def open(self, cache_key: str, raw: bytes) -> bytes | None:
        """Return the payload, or ``None`` when the entry is not one this signer accepts."""
        if self._key is None:
            return raw[1:] if raw[:1] == _PLAIN else None
        if raw[:1] != _SIGNED or len(raw) < 1 + _DIGEST_SIZE:
            return None
        digest, payload = raw[1:1 + _DIGEST_SIZE], raw[1 + _DIGEST_SIZE:]
        if not hmac.compare_digest(digest, self._digest(cache_key, payload)):
            return None
        return payload

    def _digest(self, cache_key: str, payload: bytes) -> bytes:
        assert self._key is not None
        # the key is part of the message, so an entry copied under another key fails
        message = cache_key.encode() + b"\x00" + payload
        return hmac.new(self._key, message, hashlib.sha256).digest()
