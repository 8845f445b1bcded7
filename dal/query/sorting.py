"""The keys ``DataList.sort()`` orders objects by: a function of an object, a field name (a dotted
path through relations) or a list of them, each value ranked by :func:`dal.query.ordering.sortable`.

Sorting never raises, whatever is stored, nor whatever another process deleted since the list
loaded its objects: a relation's name reads the linked guid without loading its target, and a hop
of a dotted path to an object deleted meanwhile reads as unset, as ``serialize()`` has it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from dal.exceptions import InvalidQueryError, ObjectNotFoundError
from dal.model.meta import HybridMeta
from dal.objects.dataobject import DataObject
from dal.query.grammar import Field, resolve_field
from dal.query.ordering import related, sortable

SortKey = Callable[[Any], Any] | str | Sequence[str] | None


def sort_key(meta: HybridMeta, key: SortKey) -> Callable[[Any], Any]:
    """Return the function giving an object's ranked key, for ``list.sort(key=...)``.

    By default: by ``name`` when the hybrid has one, then by guid. A field name unknown to the
    hybrid, or a key that is neither a function, a field name nor a list of them, raises
    InvalidQueryError here, before any object is read.
    """
    if callable(key):
        function = key
        return lambda obj: sortable(function(obj))
    if key is None:
        key = ["name", "guid"] if "name" in meta.properties else ["guid"]
    if not isinstance(key, (str, Sequence)):
        raise InvalidQueryError(f"sort(key={key!r}): a key is a function of an object, a field name "
                                "or a list of field names")
    names = [key] if isinstance(key, str) else list(key)
    fields = [(field, field.text.rsplit(".", 1)[-1])
              for field in (resolve_field(meta, name, "sort key") for name in names)]
    # ranked field by field, as sortable() ranks a tuple's elements
    return lambda obj: tuple(_ranked(obj, field, name) for field, name in fields)


def _ranked(obj: DataObject, field: Field, name: str) -> Any:
    """Return the rank of ``obj``'s ``field`` (``name``: its last part, as the path writes it)."""
    value: Any = obj
    for relation in field.hops:
        try:
            value = getattr(value, relation.name)
        except ObjectNotFoundError:  # deleted by another process since the list loaded
            return sortable(None)
        if value is None:
            return sortable(None)
    if field.kind == "relation" and name != field.name:  # the relation's name, not `<relation>_guid`
        # read as `<relation>_guid` reads it (a stale mirrored object refreshed first), never loading it
        return related(getattr(value, field.name))
    return sortable(getattr(value, name))
