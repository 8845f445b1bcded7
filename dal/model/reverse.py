"""Reverse accessors: the attributes a relation installs on its target hybrid.

``target.<foreign_key>`` lists the objects pointing at a target (a one-to-one relation: the
one object, or ``None``) and ``target.<foreign_key>_guids`` (``_guid``) their guids. The
list is a query (``DataList``), which lives in the query engine above this layer: the engine
hands its list maker over when it is imported (:func:`provide_lists`), so the model depends
only on the narrow :class:`PointingList` it needs, never on the engine. Importing :mod:`dal`
imports the engine, so no hybrid exists before the maker is known.

A one-to-one accessor reads who holds its target as of one instant, and the object it returns points
at the target. It reads the reverse list first (one query per hybrid holding the relation, each
cached). One holder listed is the answer of one instant: the query that listed it read it holding the
target, and the one-to-one keys let no other object hold it then, whatever the other hybrids' queries
read before or after. So when the list shows one holder that, loaded, still points at the target, that
is the answer, with no more reads. Otherwise the list cannot tell: several listed may be one holder
handed over between two hybrids' queries (listed in both), none listed one handed over the other way
(listed in neither; a relation of one hybrid runs one query, so none listed is its answer), and the one
listed may have been deleted, or have handed the target over, before it loaded. Then the accessor reads
the link keys of every hybrid at once (the engine's ``Holders``, handed over with the maker), and reads
them again while the holder they name moves away before it loads (see :func:`_one`).
``InvalidRelationError`` says that such a read shows several holders stored at once (data stored
before one-to-one keys existed).
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
    """The objects pointing at a target now, read as of one instant when first used; its ``first()`` skips
    one deleted, or no longer pointing at the target, since that read."""

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
        pointing = pointing_at(self.relation, obj)  # a query per hybrid holding the relation, cached
        found = pointing.first()  # skips a holder deleted since the query read its guid
        listed = len(pointing.guids)
        if listed == 1 and found is not None and getattr(found, self.relation.guid_field) == obj.guid:
            return found  # one listed, and still holding it: the answer of one instant (module docstring)
        if listed == 0 and _one_hybrid(self.relation, obj):
            return None  # one query: read as of one instant
        return _one(self.relation, obj)  # several, none of several hybrids, or the one listed moved


class ReverseOneGuid(ReverseList):
    """``target.<foreign_key>_guid`` of a one-to-one relation."""

    def __get__(self, obj: Target | None, objtype: type | None = None) -> Any:
        if obj is None:
            return self
        listed = pointing_at(self.relation, obj).guids  # a query per hybrid holding the relation, cached
        if len(listed) == 1 or (not listed and _one_hybrid(self.relation, obj)):
            return _only(self.relation, obj, listed)  # the answer of one instant (module docstring)
        return _only(self.relation, obj, holders_now(self.relation, obj).guids)  # several, or none of several


def holders_now(relation: Relation, obj: Target) -> OneInstant:
    """Return the objects whose ``relation`` (or an inherited one) points at ``obj`` now, at one instant."""
    if _holders is None:
        raise ConfigurationError("reverse relations list their objects with the query engine: import dal")
    return _holders(relation, obj)


#: reads of a one-to-one target's link keys, at most, by one accessor read while the holder they name
#: keeps moving away before it loads
HOLDER_READS = 3


def _one_hybrid(relation: Relation, obj: Target) -> bool:
    """Whether one hybrid holds ``relation``: its reverse list is one query, read as of one instant."""
    return holders_now(relation, obj).hybrids == 1  # reads nothing


def _one(relation: Relation, obj: Target) -> Any:
    """Return the object holding ``obj`` now, read from its link keys at once.

    The holder the keys name is loaded after them: one deleted, or that handed the target over, in
    between is no answer, so the keys are read again, up to ``HOLDER_READS`` times in all. A target
    still changing hands by then (each read named a holder that had moved away by its load) reads as
    ``None``, never as an object that no longer points at it.
    """
    for _ in range(HOLDER_READS):
        now = holders_now(relation, obj)
        guids = now.guids
        _only(relation, obj, guids)
        found = now.first()  # skips the holder if it moved away or was deleted since the keys were read
        if found is not None or not guids:
            return found
    return None


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
