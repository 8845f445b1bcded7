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
from typing import Any


def canonical(value: Any) -> str:
    """Return ``value`` as text in which two values are equal exactly when they are the same."""
    # the same text as keys stored before this module existed (ASCII-escaped): index keys of
    # lists and dicts stay valid
    return json.dumps(_normalized(value), sort_keys=True, separators=(",", ":"))


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
