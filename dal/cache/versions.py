"""Version tokens: the cache keys a write must delete so cached query results stay exact.

A cached query result (:mod:`dal.query.results`) depends on the versions of what it read:
``v/<hybrid>/<field>/=<value>`` for an exact match of a value, ``v/<hybrid>/<field>/*`` for
any change of a field, ``v/<hybrid>/guid/*`` for a create or a delete (and for a condition a field's
default satisfies: see :func:`dal.query.results.dependencies`). A writer deletes the
versions of what its commit changed, in the same invalidation as the object's cached
document; :func:`changed_versions` names them. It needs no query, only the key layout
(:class:`dal.keys.Keys`) and each stored field's default, so every writer (a save, a delete,
an unlink, a migration, a load) computes them from here.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Protocol

from dal.keys import Keys
from dal.values import same

_NONE: Mapping[str, Any] = MappingProxyType({})


class Stored(Protocol):
    """What version tokens need of a hybrid (its ``_meta``): its name and its stored fields' defaults."""

    @property
    def name(self) -> str: ...

    @property
    def stored_defaults(self) -> Mapping[str, Any]: ...


def changed_versions(keys: Keys, meta: Stored, guid: str, before: Mapping[str, Any] | None,
                     after: Mapping[str, Any] | None, undeclared: Mapping[str, Any] = _NONE) -> list[str]:
    """Return the version keys a write from ``before`` to ``after`` (``None``: absent) must delete.

    ``undeclared``: the fields the hybrid's schema record says its documents hold that ``meta`` does
    not declare (a newer model's, in a rolling deploy), each at the default that model reads when a
    document lacks it (:func:`dal.objects.schema.undeclared_defaults`). A document created or deleted
    here without one of them reads as that default there, so a create or delete names its versions.
    """
    hybrid, defaults = meta.name, meta.stored_defaults
    field_version, value_version = keys.field_version, keys.value_version
    if before is None or after is None:
        # a create or a delete (every save of a new object, every delete): every field changes,
        # from or to absent, so nothing needs comparing
        document = after if before is None else before
        if document is None:  # neither stored
            return [field_version(hybrid, name) for name in defaults]
        changed = [field_version(hybrid, "guid"), keys.object_version(hybrid, guid)]
        get = document.get
        for name, default in defaults.items():
            changed.append(field_version(hybrid, name))
            changed.append(value_version(hybrid, name, get(name, default)))
        # fields this model does not declare (a newer model's, in a rolling deploy): a result cached
        # by that model on their values must not keep an object deleted here
        for name in document.keys() - defaults.keys():
            changed += (field_version(hybrid, name), value_version(hybrid, name, document[name]))
        for name, default in undeclared.items():
            if name not in document:
                changed += (field_version(hybrid, name), value_version(hybrid, name, default))
        return changed
    changed = []
    for name, default in defaults.items():
        old, new = before.get(name, default), after.get(name, default)
        if same(old, new):
            continue
        changed += (field_version(hybrid, name), value_version(hybrid, name, old),
                    value_version(hybrid, name, new))
    return changed
