"""One notion of value identity, for every place dal compares stored values.

Query evaluation, changed-field detection and the merge on save, unique and index keys and
the version tokens of cached query results all decide whether two stored (JSON) values are
"the same". They must agree, or an index answers differently from a scan and a cached result
outlives a write that changed it. The rule, at any depth of a list or a dict:

- types are part of the value: ``True``, ``1``, ``1.0`` and ``'1'`` all differ, so ``[True]``,
  ``[1]`` and ``[1.0]`` differ too (a float field stores floats: its validator turns ``1``
  into ``1.0``, so within one field this only separates what the model lets differ);
- ``-0.0`` is ``0.0`` (they compare equal, and one key must name both);
- dicts compare by their items, whatever their order; lists by their items, in order;
- case-insensitive comparisons fold every string (dict keys excepted) with ``str.casefold``.

NaN and infinities never get here: JSON cannot hold them, and validation refuses them.
"""

from __future__ import annotations

import json
import json.encoder
from collections.abc import Callable
from typing import Any


def _canonical_encoder() -> Callable[[Any], str]:
    """Return ``json.dumps(value, sort_keys=True, separators=(",", ":"))`` as a function, made once.

    The C encoder is made once here instead of on every call (as ``json.dumps`` does), which
    was a third of the time of a small value. Without circular-reference checks: a circular value
    recurses until RecursionError, as :func:`_normalized` always made it do. Used only if it
    writes exactly what ``json.dumps`` writes.
    """
    slow = json.JSONEncoder(sort_keys=True, separators=(",", ":"))
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return slow.encode
    try:
        # markers, default, string encoder, indent, separators, sort_keys, skipkeys, allow_nan
        fast = make(None, slow.default, json.encoder.encode_basestring_ascii, None, ":", ",",
                    True, False, True)
    except TypeError:  # another interpreter's private signature
        return slow.encode

    def encode(value: Any) -> str:
        return "".join(fast(value, 0))

    probe = {"b": [1.5, -0.0, 1e300, "\u00e9\n\"", None, True, 10 ** 20], "a": {"z": {}, "y": []}, "é": ""}
    return encode if encode(probe) == slow.encode(probe) else slow.encode


_encode_canonical = _canonical_encoder()


def canonical(value: Any) -> str:
    """Return ``value`` as text in which two values are equal exactly when they are the same."""
    # the same text as keys stored before this module existed (ASCII-escaped): index keys of
    # lists and dicts stay valid
    text = _encode_canonical(value)
    # -0.0 is the only value normalizing changes, and it is written "-0.0": without that text
    # there is nothing to normalize (the common case, which then skips a walk of the whole value)
    return text if "-0.0" not in text else _encode_canonical(_normalized(value))


def same(left: Any, right: Any) -> bool:
    """Tell whether two stored values are the same value (types included, at any depth)."""
    if type(left) is not type(right):
        return False
    if isinstance(left, (list, dict)):
        return canonical(left) == canonical(right)
    return bool(left == right)


def fold(value: Any) -> Any:
    """Return ``value`` with every string in it casefolded (dict keys kept), for case-insensitive tests."""
    if isinstance(value, str):
        return value.casefold()
    if isinstance(value, list):
        return [fold(item) for item in value]
    if isinstance(value, tuple):
        return tuple(fold(item) for item in value)
    if isinstance(value, dict):
        return {key: fold(item) for key, item in value.items()}
    return value


def has_text(value: Any) -> bool:
    """Tell whether a string occurs anywhere in ``value`` (so case-insensitivity can change its matches)."""
    if isinstance(value, str):
        return True
    if isinstance(value, (list, tuple)):
        return any(has_text(item) for item in value)
    if isinstance(value, dict):
        return any(has_text(item) for item in value.values())
    return False


def _normalized(value: Any) -> Any:
    if isinstance(value, float):
        return value + 0.0  # -0.0 + 0.0 is 0.0
    if isinstance(value, list):
        return [_normalized(item) for item in value]
    if isinstance(value, dict):
        return {key: _normalized(item) for key, item in value.items()}
    return value
