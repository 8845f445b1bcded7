"""How memcached keys are sent: as they are, percent-encoded, or hashed; and read back.

memcached takes keys of 1 to 250 printable ASCII characters without spaces. A key of plain
characters is sent as it is (its form before this encoding existed: a rolling upgrade keeps one
keyspace); any other is percent-encoded, injective and readable back (``dal cache``); one still
too long is hashed. A hit counter's key (:func:`counter_key`) is derived the same way from the
entry's key and the suffix, so counting, reading and deleting it agree and it never exceeds 250.
"""

from __future__ import annotations

import hashlib
import re
from urllib.parse import unquote_to_bytes

from dal.backends.base import HIT_SUFFIX

#: keys sent as they are: 1 to 250 printable ASCII characters without space, "~" (which only hashed
#: keys contain) and "%" (the escape); every other key is percent-encoded (UTF-8 first), so a sent key
#: never stands for two different keys and can be read back (``dal cache ls``)
_PLAIN_KEY = re.compile(r"[!-$&-}]{1,250}")
_ESCAPED = re.compile(rb"[^!-$&-}]")
#: the longest wire key memcached takes
KEY_LIMIT = 250
#: the visible start of a hashed key: its encoded form, cut (enough to tell a namespace's cache root)
_READABLE = 64


def encoded_key(key: str) -> str:
    """Return ``key`` percent-encoded (its UTF-8 bytes outside ``!``..``}``, and ``%``, as ``%XX``)."""
    if _PLAIN_KEY.fullmatch(key):
        return key
    raw = key.encode("utf-8", "surrogatepass")
    return _ESCAPED.sub(lambda found: b"%%%02X" % found[0][0], raw).decode("ascii")


def wire_key(key: str) -> str:
    """Return the memcached key for ``key``: itself when memcached takes it as is, else its
    percent-encoded form, else (still over 250 bytes, or empty) a hashed form.

    A key of plain characters only is sent exactly as before this encoding existed (a rolling
    upgrade keeps one keyspace); a hashed key is its encoded form's first 64 characters, ``~`` and
    the SHA-256 of the key, so it still shows which namespace it is of. A hit counter's key (one
    ending in :data:`~dal.backends.base.HIT_SUFFIX`) hashed keeps that suffix (135 characters), so a
    listing still tells it from an entry.
    """
    if _PLAIN_KEY.fullmatch(key):
        return key
    encoded = encoded_key(key)
    if 0 < len(encoded) <= KEY_LIMIT:
        return encoded
    digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()
    suffix = HIT_SUFFIX if key.endswith(HIT_SUFFIX) else ""
    return f"{encoded[:_READABLE]}~{digest}{suffix}"


#: wire keys already worked out, as bytes (the text connection's): the same key always gives the same
#: wire key, so this is exact; a lookup (~0.05 us) instead of a regex match and an encode (~0.25 us),
#: once per key of every cached load and batch. Emptied when full (about 2 MiB with dal's keys).
WIRE_MEMO = 1 << 13
_wired: dict[str, bytes] = {}


def wire_bytes(key: str) -> bytes:
    """Return :func:`wire_key` of ``key`` encoded."""
    sent = _wired.get(key)
    if sent is None:
        sent = wire_key(key).encode()
        if len(_wired) >= WIRE_MEMO:
            _wired.clear()
        _wired[key] = sent
    return sent


def counter_key(key: str) -> str:
    """Return the wire key of ``key``'s hit counter: :func:`wire_key` of ``key`` and the suffix, the
    one form counting, reading (``hit_counts``) and ``dal cache rm`` use; hashed when too long."""
    return wire_key(key + HIT_SUFFIX)


def logical_key(sent: str) -> str | None:
    """Return the key whose wire key is ``sent``; ``None`` for a hashed key (it cannot be read back)."""
    if "~" in sent:
        return None
    if "%" not in sent:
        return sent
    try:
        return unquote_to_bytes(sent).decode("utf-8", "surrogatepass")
    except UnicodeDecodeError:
        return sent  # no key dal encoded: listed as it is


def may_be_under(sent: str, wanted: str) -> bool:
    """Tell whether the wire key ``sent`` may be of a key under the prefix whose encoded form
    (:func:`encoded_key`, computed once per listing) is ``wanted``: for a readable key, whether it is;
    for a hashed one, whether its visible start agrees with it (certain when it holds all of it)."""
    readable, hashed, _ = sent.partition("~")
    if not hashed:
        return sent.startswith(wanted)
    return readable.startswith(wanted) or (len(readable) == _READABLE and wanted.startswith(readable))
