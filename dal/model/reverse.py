"""Reverse accessors: the attributes a relation installs on its target hybrid.

``target.<foreign_key>`` lists the objects pointing at a target (a one-to-one relation: the
one object, or ``None``) and ``target.<foreign_key>_guids`` (``_guid``) their guids. The
list is a query (``DataList``), which lives in the query engine above this layer: the engine
hands its list maker over when it is imported (:func:`provide_lists`), so the model depends
only on the narrow :class:`PointingList` it needs, never on the engine. Importing :mod:`dal`
imports the engine, so no hybrid exists before the maker is known.

A one-to-one accessor reads who holds its target as of one instant. The reverse list of a relation
that subclass hybrids hold too queries one hybrid after another (a target handed over between them
meanwhile would show twice, or not at all), so its accessors read the link keys of every hybrid at
once instead (the engine's ``Holders``, handed over with the maker). A relation of one hybrid reads
its list (one query, cached), and reads at once again only when the list shows several holders or
the one it shows was deleted before it loaded. ``InvalidRelationError`` says that such a read shows
several holders stored at once (data stored before one-to-one keys existed).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from dal.exceptions import ConfigurationError, InvalidRelationError
from dal.structures import Relation


class Target(Protocol):
    """The object a reverse accessor is read on: all the accessor needs of a ``DataObject``."""

    @property
    def guid(self) -> str: ...


class PointingList(Protocol):
    """What a reverse accessor needs of the list of objects pointing at a target."""

    @property
    def guids(self) -> list[str]: ...

    def first(self) -> Any:
        """The first object still stored (each of its own hybrid), or ``None``."""
        ...


class OneInstant(PointingList, Protocol):
    """The objects pointing at a target now, read as of one instant when first used."""

    #: how many hybrids hold the relation (its declaring one and its subclass hybrids)
    hybrids: int


#: makes the list of the objects whose relation points at a target (``DataList.pointing_at``)
ListMaker = Callable[[Relation, Any], PointingList]
_list_maker: ListMaker | None = None
#: reads who points at a target now, as of one instant (``dal.query.holders.Holders``)
_holders: Callable[[Relation, Any], OneInstant] | None = None


def provide_lists(maker: ListMaker, holders: Callable[[Relation, Any], OneInstant]) -> None:
    """Hand over the maker of reverse lists and the reader of a one-to-one target's holders as of one
    instant (the query engine calls this when it is imported)."""
    global _list_maker, _holders
    _list_maker, _holders = maker, holders


def pointing_at(relation: Relation, obj: Target) -> PointingList:
    """Return the list of the objects whose ``relation`` points at ``obj``."""
    if _list_maker is None:
        raise ConfigurationError("reverse relations list their objects with the query engine: import dal")
    return _list_maker(relation, obj)


class ReverseList:
    """``target.<foreign_key>``: the objects pointing here, a ``DataList`` evaluated anew on each access."""

    def __init__(self, relation: Relation, name: str | None = None) -> None:
        self.relation = relation
        #: the attribute it is installed as (``<foreign_key>_guids`` for the guids), named by its errors
        self.name = relation.foreign_key if name is None else name

    def __get__(self, obj: Target | None, objtype: type | None = None) -> Any:
        if obj is None:
            return self
        return pointing_at(self.relation, obj)

    def __set__(self, obj: object, value: Any) -> None:
        raise AttributeError(f"{type(obj).__name__}.{self.name} is a reverse relation and "
                             f"read-only; set {self.relation.qualified} on the other side instead")


class ReverseGuids(ReverseList):
    """``target.<foreign_key>_guids``: the guids of the objects pointing here."""

    def __get__(self, obj: Target | None, objtype: type | None = None) -> Any:
        if obj is None:
            return self
        return pointing_at(self.relation, obj).guids


class ReverseOne(ReverseList):
    """``target.<foreign_key>`` of a one-to-one relation: the one object pointing here, or ``None``."""

    def __get__(self, obj: Target | None, objtype: type | None = None) -> Any:
        if obj is None:
            return self
        now = holders_now(self.relation, obj)  # nothing read yet
        if now.hybrids > 1:  # their list would query one hybrid after another: read all at once
            return _one(self.relation, obj, now)
        pointing = pointing_at(self.relation, obj)  # one hybrid: one query, cached
        found = pointing.first()  # skips a holder deleted since the query read its guid
        listed = len(pointing.guids)
        if listed == 0 or (listed == 1 and found is not None):
            return found
        return _one(self.relation, obj, now)  # several, or the one listed is gone: who holds it now


class ReverseOneGuid(ReverseList):
    """``target.<foreign_key>_guid`` of a one-to-one relation."""

    def __get__(self, obj: Target | None, objtype: type | None = None) -> Any:
        if obj is None:
            return self
        now = holders_now(self.relation, obj)
        pointing = now if now.hybrids > 1 else pointing_at(self.relation, obj)
        return _only(self.relation, obj, pointing.guids)


def holders_now(relation: Relation, obj: Target) -> OneInstant:
    """Return the objects whose ``relation`` (or an inherited one) points at ``obj`` now, at one instant."""
    if _holders is None:
        raise ConfigurationError("reverse relations list their objects with the query engine: import dal")
    return _holders(relation, obj)


def _one(relation: Relation, obj: Target, now: OneInstant) -> Any:
    _only(relation, obj, now.guids)
    return now.first()


def _only(relation: Relation, obj: Target, guids: list[str]) -> str | None:
    if len(guids) > 1:
        raise InvalidRelationError(
            f"{relation.qualified} is one-to-one, but {len(guids)} objects point at {type(obj).__name__} "
            f"{obj.guid}: {', '.join(guids)}; unlink all but one")
    return guids[0] if guids else None


def reverse_accessors(relation: Relation) -> dict[str, ReverseList]:
    """Return the attributes a relation installs on its target, by name."""
    name = relation.foreign_key
    if relation.onetoone:
        return {name: ReverseOne(relation), f"{name}_guid": ReverseOneGuid(relation, f"{name}_guid")}
    return {name: ReverseList(relation), f"{name}_guids": ReverseGuids(relation, f"{name}_guids")}
