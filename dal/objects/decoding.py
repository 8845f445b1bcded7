"""Decoding the JSON of cached reads with json's own C scanner, called directly.

On a cached read, decoding is most of the time dal spends, and ``json.loads`` adds a good
part again to the scan itself: it detects the encoding of bytes in Python, matches leading
and trailing whitespace, and (for a dynamic's ``[<value>,<revision>,"<digest>"]``) builds a list
to take the value out of. Scanning the UTF-8 text in place measured 1.6x to 2.5x faster on dal's documents
(about 560 bytes) and dynamics (about 140). Whatever the fast path does not take exactly (not
UTF-8, whitespace around the value, anything else after it, any error) is decoded again by
``json.loads``, so what is accepted, the values, and every error are ``json.loads``'s own (a
cached dynamic that is not one reads as a miss: :func:`dal.objects.dynamics_tags.loads_typed`).
"""

from __future__ import annotations

import json
import json.scanner
import sys
from collections.abc import Callable
from typing import Any, cast

#: the scanner ``json.loads`` ends in, with its defaults (typeshed wants a scanner where any decoder does)
_scan: Callable[[str, int], tuple[Any, int]] = json.scanner.make_scanner(cast(Any, json.JSONDecoder()))


def loads(raw: bytes) -> Any:
    """Return ``json.loads(raw)``; a ValueError, as for any JSON it cannot read, for JSON nested deeper
    than Python's recursion limit lets it decode (which ``json.loads`` raises RecursionError for)."""
    try:
        text = raw.decode()
        value, end = _scan(text, 0)
        if end == len(text):
            return value
    except (ValueError, StopIteration):  # not UTF-8, or not JSON there: json.loads says which
        pass
    except RecursionError:
        raise too_deep() from None
    try:
        return json.loads(raw)
    except RecursionError:  # what the fast path did not take, nested as deep
        raise too_deep() from None


def too_deep() -> ValueError:
    """Return the error for JSON nested too deeply to decode here: written by another client, or by a
    process whose recursion limit was raised (dal refuses to store a value nested that deep)."""
    return ValueError(f"it nests lists and objects too deeply to decode at Python's recursion limit "
                      f"({sys.getrecursionlimit()})")


#: what :func:`loads_value` returns for a payload that is not the one it was told of
UNTAGGED: Any = object()


def loads_value(raw: bytes, tail: str) -> Any:
    """Return the value of a cached dynamic ``[<value>,<revision>,"<digest>"]`` ending in ``tail``
    (``,<revision>,"<digest>"]``) as dal writes it; :data:`UNTAGGED` for anything else, for
    :func:`dal.objects.dynamics_tags.loads_typed` to read."""
    try:
        text = raw.decode()
        if text[:1] == "[":
            value, end = _scan(text, 1)
            if text[end:] == tail:
                return value
    except (ValueError, StopIteration, RecursionError):  # RecursionError: nested too deeply to decode
        pass
    return UNTAGGED


def document(raw: bytes) -> dict[str, Any]:
    """Return a stored document decoded; ValueError when it is not a JSON object (``transaction.decode``)."""
    value = loads(raw)
    if not isinstance(value, dict):
        raise ValueError("a stored document must be a JSON object")
    return value
