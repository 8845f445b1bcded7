"""The settings ``configure()`` reads that are not store URLs: an argument, else a ``DAL_*`` variable,
else the default, each checked before any store is opened."""

from __future__ import annotations

import os
import unicodedata

from dal.exceptions import ConfigurationError
from dal.values import encodable


def setting(given: str | None, variable: str, default: str, what: str) -> str:
    """Return ``given``, else the environment variable ``variable``, else ``default``.

    Only an unset setting falls back. An empty one (a deployment whose value came out empty) is
    refused with ConfigurationError, never taken for the default: that would quietly open the
    embedded store, or write into the namespace of whatever else uses the default.
    """
    value = given if given is not None else os.environ.get(variable)
    if value is None:
        return default
    if not isinstance(value, str):
        raise ConfigurationError(f"the {what} must be text (a str), not {type(value).__name__} {value!r}")
    if not value.strip():
        where = f" (from {variable}, which is set to nothing)" if given is None else ""
        raise ConfigurationError(f"the {what} is empty{where}; give one, or leave it unset for {default!r}")
    return value


def namespace_setting(given: str | None) -> str:
    """Return the namespace: ``given``, else ``DAL_NAMESPACE``, else ``dal``.

    ConfigurationError, naming the first bad character, for a ``/`` (it separates key components), a
    lone surrogate (what os.environ makes of a variable's bytes that are not UTF-8: no store can hold
    it in a key, so every save and sweep would fail) or a control character: no name holds one, and a
    NUL starts the keys kept outside every namespace (etcd's leadership leases,
    ``dal/backends/etcd/leadership.py``), which a namespace ``'\\0leadership'`` would scan and clear.
    """
    name = setting(given, "DAL_NAMESPACE", "dal", "namespace")
    bad = [char for char in name if char == "/" or unicodedata.category(char) in ("Cc", "Cs")]
    if bad:
        kept = "".join(char for char in name if char not in bad) or "dal"
        raise ConfigurationError(
            f"namespace {name!r} holds {bad[0]!r} (U+{ord(bad[0]):04X}); a namespace is UTF-8 text without "
            f"'/' or control characters (such as NUL, tab or newline): leave them out, e.g. {kept!r}")
    return name


def hmac_key_setting(given: object) -> bytes | None:
    """Return the cache's signing key (:func:`_hmac_key`); ConfigurationError if shorter than 16 bytes."""
    key = _hmac_key(given)
    if key is not None and len(key) < 16:
        raise ConfigurationError("hmac_key (or DAL_HMAC_KEY) must be at least 16 bytes; use e.g. "
                                 "`openssl rand -hex 32`, or leave it unset for an unsigned cache")
    return key


def _hmac_key(given: object) -> bytes | None:
    """Return the signing key as bytes: ``given`` (str or bytes), else ``DAL_HMAC_KEY``'s bytes as the
    environment holds them (a key of random bytes need not be UTF-8), else None."""
    if given is None:
        text = os.environ.get("DAL_HMAC_KEY")  # undone surrogateescape: the variable's own bytes
        return None if text is None else text.encode("utf-8", "surrogateescape")
    if isinstance(given, (bytes, bytearray)):
        return bytes(given)
    if not isinstance(given, str):
        raise ConfigurationError(f"hmac_key must be str or bytes, not {type(given).__name__}")
    if not encodable(given):
        raise ConfigurationError("hmac_key holds a lone surrogate, which UTF-8 cannot encode; give the key "
                                 "as bytes, or as text such as `openssl rand -hex 32` prints")
    return given.encode()
