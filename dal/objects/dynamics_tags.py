"""The tag of a cached dynamic: ``[<value>,<revision>,"<digest>"]``.

``<revision>`` is the revision of the object the value was computed from, ``<digest>`` names the
type the computing process's class declares (:attr:`dal.validators.Validator.digest`). A reader
serves a value only under its own type's digest: during a rolling deploy that changes a dynamic's
type, each version reads the other's values as misses, never as its own type (an ``int`` for a
``str``, an ``int`` converted to a ``datetime``, a value outside the allowed values).

The common case, a value tagged exactly as this reader's object would tag it, is told by the
payload's end (:func:`tail`, compared by :func:`dal.objects.decoding.loads_value`), so checking
the type costs a hit nothing. :func:`loads_typed` reads any other payload.
"""

from __future__ import annotations

import json
import re
from typing import Any

from dal.objects.decoding import _scan

#: the end of a payload as dal writes it, after the value
_TAG = re.compile(r',([0-9]+),"([0-9a-f]+)"\]')


def dumps(value: Any, revision: int, digest: str) -> bytes:
    """Return the payload of ``value`` (its JSON form), computed from ``revision``, of the type ``digest``."""
    return b'[%b,%d,"%b"]' % (json.dumps(value).encode(), revision, digest.encode())


def tail(revision: int, digest: str) -> str:
    """Return how a payload computed from ``revision``, of the type ``digest``, ends after its value."""
    return f',{revision},"{digest}"]'


def loads_typed(raw: bytes) -> tuple[Any, int, str] | None:
    """Return ``(value, revision, digest)`` of a cached dynamic; None for anything else.

    Anything else (``[<value>,<revision>]`` or ``[<value>]`` cached by an earlier dal, which name no
    type, or any other JSON or none) is not an error but a miss: the caller computes the value again.
    """
    try:
        text = raw.decode()
        if text[:1] == "[":
            value, end = _scan(text, 1)
            tag = _TAG.fullmatch(text, end)
            if tag is not None:
                return value, int(tag[1]), tag[2]
    except (ValueError, StopIteration, RecursionError):  # RecursionError: another client's, nested deep
        pass
    try:  # the fast path takes exactly what dal writes; whatever else json.loads reads
        item = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    if type(item) is list and len(item) == 3 and type(item[1]) is int and type(item[2]) is str:
        return item[0], item[1], item[2]
    return None
