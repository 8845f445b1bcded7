"""Version tokens: the cache keys a write must delete so cached query results stay exact.

A cached query result (:mod:`dal.query.results`) depends on the versions of what it read:
``v/<hybrid>/<field>/=<value>`` for an exact match of a value, ``v/<hybrid>/<field>/*`` for
any change of a field, ``v/<hybrid>/guid/*`` for a create or a delete. A writer deletes the
versions of what its commit changed, in the same invalidation as the object's cached
document; :func:`changed_versions` names them. It needs no query, only the key layout
(:class:`dal.keys.Keys`) and each stored field's default, so every writer (a save, a delete,
an unlink, a migration, a load) computes them from here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from dal.keys import Keys
from dal.values import same


class Stored(Protocol):
    """What version tokens need of a hybrid (its ``_meta``): its name and its stored fields' defaults."""

    @property
    def name(self) -> str: ...

    @property
    def stored_defaults(self) -> Mapping[str, Any]: ...


def changed_versions(keys: Keys, meta: Stored, guid: str, before: Mapping[str, Any] | None,
                     after: Mapping[str, Any] | None) -> list[str]:
    """Return the version keys a write from ``before`` to ``after`` (``None``: absent) must delete."""
    changed: list[str] = []
    if (before is None) != (after is None):
        changed += [keys.field_version(meta.name, "guid"), keys.value_version(meta.name, "guid", guid)]
    for name, default in meta.stored_defaults.items():
        old = before.get(name, default) if before is not None else _ABSENT
        new = after.get(name, default) if after is not None else _ABSENT
        if old is not _ABSENT and new is not _ABSENT and same(old, new):
            continue
        changed.append(keys.field_version(meta.name, name))
        for value in (old, new):
            if value is not _ABSENT:
                changed.append(keys.value_version(meta.name, name, value))
    return changed


_ABSENT = object()
