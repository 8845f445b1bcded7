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
from dal.objects.dynamics import read_many
from dal.query.grammar import Field, resolve_field
from dal.query.ordering import related, sortable

SortKey = Callable[[Any], Any] | str | Sequence[str] | None


class Ranker:
    """How ``DataList.sort()`` ranks its objects: the ranked key of each, from a function or fields.

    A dynamic of the sorted hybrid itself is read for a batch of objects at a time, in one multi-get
    of its cached values (:func:`~dal.objects.dynamics.read_many`), never one cache read per object.
    """

    def __init__(self, function: Callable[[Any], Any] | None = None,
                 fields: Sequence[tuple[Field, str]] = ()) -> None:
        self._function = function
        self._fields = fields

    def key(self, obj: DataObject) -> Any:
        """Return the ranked key of one object."""
        return self.ranks([obj], 1)[0]

    def ranks(self, objs: Sequence[DataObject], batch: int) -> list[Any]:
        """Return the ranked key of each of ``objs``, reading their dynamics ``batch`` objects at a time;
        ranked field by field, as :func:`sortable` ranks a tuple's elements."""
        if self._function is not None:
            function = self._function
            return [sortable(function(obj)) for obj in objs]
        ranks: list[Any] = []
        for start in range(0, len(objs), batch):
            part = objs[start:start + batch]
            columns = [_dynamic_ranks(part, field.name) if field.kind == "dynamic" and not field.hops
                       else [_ranked(obj, field, name) for obj in part] for field, name in self._fields]
            ranks += zip(*columns, strict=True)
        return ranks


def sort_key(meta: HybridMeta, key: SortKey) -> Ranker:
    """Return how to rank objects for ``sort(key=...)`` (see :class:`Ranker`).

    By default: by ``name`` when the hybrid has one, then by guid. A field name unknown to the
    hybrid, or a key that is neither a function, a field name nor a list of them, raises
    InvalidQueryError here, before any object is read.
    """
    if callable(key):
        return Ranker(key)
    if key is None:
        key = ["name", "guid"] if "name" in meta.properties else ["guid"]
    if not isinstance(key, (str, Sequence)) or isinstance(key, (bytes, bytearray)) or not key:
        raise InvalidQueryError(f"sort(key={key!r}): a key is a function of an object, a field name "
                                "or a non-empty list of field names")
    names = [key] if isinstance(key, str) else list(key)
    fields = [(field, field.text.rsplit(".", 1)[-1])
              for field in (resolve_field(meta, name, "sort key") for name in names)]
    return Ranker(fields=fields)


def _dynamic_ranks(objs: Sequence[DataObject], name: str) -> list[Any]:
    """Return the rank of dynamic ``name`` of each of ``objs``, read for the objects of each hybrid
    together, through that hybrid's own spec (a subclass hybrid may redeclare the dynamic)."""
    groups: dict[type[DataObject], list[int]] = {}
    for index, obj in enumerate(objs):
        groups.setdefault(type(obj), []).append(index)
    ranks: list[Any] = [None] * len(objs)
    for hybrid, indexes in groups.items():
        group = [objs[index] for index in indexes]
        for index, value in zip(indexes, read_many(group, hybrid._meta.dynamics[name]), strict=True):
            ranks[index] = sortable(value)
    return ranks


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
