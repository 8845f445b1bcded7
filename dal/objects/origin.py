"""Which store and namespace an object was loaded from, and what is refused when that is not the current one.

A stored object remembers the store and namespace it was loaded (or saved) under (``_loaded_from``,
the cache root of that ``configure()``). Used after ``configure()`` switched to another, the object's
document is absent there (or is another copy: ``dal copy`` keeps guids). A save would call it deleted by
another writer, a delete would do nothing, its reverse lists would list nothing, its relations would load
the current store's object of the guid it holds (or find none), and an object linked to it would point at
the current store's object of its guid, if any. Each of these is refused with ``ConfigurationError``
naming the remedy, instead of answering for another store. What the object holds in hand still reads as
loaded: its properties, its ``<relation>_guid`` fields, and a related object it already holds (read
before the switch, or assigned).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from dal.exceptions import ConfigurationError
from dal.structures import Relation

if TYPE_CHECKING:
    from dal.config import Context


def loaded_elsewhere(obj: object, context: Context) -> str | None:
    """Return the store and namespace ``obj`` was loaded from, when it is not ``context``'s; else None
    (not a stored object, or one of this store)."""
    origin: str | None = getattr(obj, "__dict__", {}).get("_loaded_from")
    return origin if origin is not None and origin != context.keys.cache_root else None


def siblings(obj: object) -> list[Any]:
    """Return the members of ``obj``'s list (the objects loaded with it, whose relation reads and mirror
    refreshes one read makes for them all) loaded from the store and namespace ``obj`` was; empty when
    it has no list.

    ``refresh()`` reloads one member under the current ``configure()`` and leaves it in its list, whose
    other members stay of the store they were loaded from: their own reads are refused, so no batch
    made for this one may fill (or refresh) them from the current one. Compared here, at each batch,
    rather than taking a reloaded object out of its list: exact however a member's origin changed, and
    one comparison per member, which the batch makes anyway (nothing on the load of each object).
    """
    state: dict[str, Any] = getattr(obj, "__dict__", {})
    together: list[Any] | None = state.get("_siblings")
    if not together:
        return []
    mine = state.get("_loaded_from")
    return [other for other in together if other.__dict__.get("_loaded_from") == mine]


def check_write(label: str, obj: object, context: Context) -> None:
    """Refuse to write a stored object under a ``configure()`` of another store or namespace."""
    origin = loaded_elsewhere(obj, context)
    if origin is not None:
        raise ConfigurationError(
            f"{label} was loaded from another store or namespace ({origin!r}) than the current "
            "configure()'s; load it again under the current configuration, or configure() its store and "
            "namespace again to write it there")


def check_read(obj: object, relation: Relation, context: Context) -> None:
    """Refuse to load the object ``relation`` of ``obj`` points at, when ``obj`` is of another store or
    namespace: the guid it holds names that store's object, which the current one lacks or holds a copy of."""
    origin = loaded_elsewhere(obj, context)
    if origin is not None:
        raise ConfigurationError(
            f"{obj!r} was loaded from another store or namespace ({origin!r}) than the current "
            f"configure()'s: its {relation.name} would be read from the current one (which lacks it, or "
            "holds another copy of it); configure() its store and namespace again to read it there, or "
            "load the object again under the current configuration")


def check_links(obj: object, related: Mapping[str, object], context: Context) -> None:
    """Refuse to save ``obj`` linked (``related``: the objects it holds, by relation name) to an object of
    another store or namespace: the link would name whatever the current one holds under that guid, if
    anything, not that object. One comparison per related object, nothing read."""
    for name, linked in related.items():
        origin = loaded_elsewhere(linked, context)
        if origin is not None:
            raise ConfigurationError(
                f"{type(obj).__name__}.{name} points at {linked!r}, loaded from another store or namespace "
                f"({origin!r}) than the current configure()'s: saved here, {obj!r} would link whatever this "
                "one holds under that guid, if anything; link an object loaded under the current "
                "configuration, or configure() that store and namespace again to save there")


def check_listing(relation: Relation, target: object, context: Context) -> None:
    """Refuse to list what points at an object of another store or namespace: nothing here would."""
    check_compared(f"its {relation.foreign_key!r}", target, context)


def check_compared(what: str, target: object, context: Context) -> None:
    """Refuse a query (``what``) for the objects pointing at ``target``, an object of another store or
    namespace: nothing here points at it, so the query would find nothing, without a word."""
    origin = loaded_elsewhere(target, context)
    if origin is not None:
        raise ConfigurationError(
            f"{target!r} was loaded from another store or namespace ({origin!r}) than the current "
            f"configure()'s, where nothing is known to point at it: {what} would find nothing. Load it "
            "again under the current configuration, or configure() its store and namespace again")
