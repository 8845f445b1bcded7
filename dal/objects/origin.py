"""Which store and namespace an object was loaded from, and what is refused when that is not the current one.

A stored object remembers the store and namespace it was loaded (or saved) under (``_loaded_from``,
the cache root of that ``configure()``). Used after ``configure()`` switched to another, the object's
document is absent there: a save would call it deleted by another writer, a delete would do nothing,
its reverse lists would list nothing, and an object linked to it would point at nothing stored. Each
of these is refused with ``ConfigurationError`` naming the remedy, instead of answering for another store.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dal.exceptions import ConfigurationError
from dal.structures import Relation

if TYPE_CHECKING:
    from dal.config import Context


def loaded_elsewhere(obj: object, context: Context) -> str | None:
    """Return the store and namespace ``obj`` was loaded from, when it is not ``context``'s; else None
    (not a stored object, or one of this store)."""
    origin: str | None = getattr(obj, "__dict__", {}).get("_loaded_from")
    return origin if origin is not None and origin != context.keys.cache_root else None


def check_write(label: str, obj: object, context: Context) -> None:
    """Refuse to write a stored object under a ``configure()`` of another store or namespace."""
    origin = loaded_elsewhere(obj, context)
    if origin is not None:
        raise ConfigurationError(
            f"{label} was loaded from another store or namespace ({origin!r}) than the current "
            "configure()'s; load it again under the current configuration, or configure() its store and "
            "namespace again to write it there")


def check_link(label: str, relation: Relation, linked: object, context: Context) -> None:
    """Refuse a link to an object of another store or namespace, which the save found not stored here."""
    origin = loaded_elsewhere(linked, context)
    if origin is not None:
        raise ConfigurationError(
            f"{label}.{relation.name} points at {linked!r}, loaded from another store or namespace "
            f"({origin!r}) than the current configure()'s, where it is not stored; link an object loaded "
            "under the current configuration, or configure() that store and namespace again to save there")


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
