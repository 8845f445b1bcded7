"""Reverse accessors: the attributes a relation installs on its target hybrid.

``target.<foreign_key>`` lists the objects pointing at a target (a one-to-one relation: the
one object, or ``None``) and ``target.<foreign_key>_guids`` (``_guid``) their guids. The
list is a query (``DataList``), which lives in the query engine above this layer: the engine
hands its list maker over when it is imported (:func:`provide_lists`), so the model depends
only on the narrow :class:`PointingList` it needs, never on the engine. Importing :mod:`dal`
imports the engine, so no hybrid exists before the maker is known.
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

    def __getitem__(self, index: int, /) -> Any: ...


#: makes the list of the objects whose relation points at a target (``DataList.pointing_at``)
ListMaker = Callable[[Relation, Any], PointingList]
_list_maker: ListMaker | None = None


def provide_lists(maker: ListMaker) -> None:
    """Hand over the maker of reverse lists (the query engine calls this when it is imported)."""
    global _list_maker
    _list_maker = maker


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
        pointing = pointing_at(self.relation, obj)  # loads a subclass hybrid's object as one
        return pointing[0] if _only(self.relation, obj, pointing.guids) is not None else None


class ReverseOneGuid(ReverseList):
    """``target.<foreign_key>_guid`` of a one-to-one relation."""

    def __get__(self, obj: Target | None, objtype: type | None = None) -> Any:
        if obj is None:
            return self
        return _only(self.relation, obj, pointing_at(self.relation, obj).guids)


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
