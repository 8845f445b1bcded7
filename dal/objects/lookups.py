"""Lookups on a hybrid class: ``Cls.get_by(unique_property=value)``, and the hook ``Cls.where(...)`` runs on.

``get_by`` reads the one unique key of the value (when the store's unique keys of that property
are complete, :func:`dal.objects.schema.ready_indexes`) and loads the object it names: no scan.
Before ``dal migrate`` has built them, it asks the query engine, which scans.

``where`` builds a ``DataList``, which lives in the query engine above this layer: the engine
hands its list class over when it is imported (:func:`provide_queries`), as it does for reverse
accessors (:mod:`dal.model.reverse`). :class:`Query` is what the objects layer knows of it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any, Protocol, TypeVar

from dal.config import current
from dal.exceptions import ConfigurationError, InvalidQueryError, InvalidValueError, ObjectNotFoundError
from dal.model.meta import HybridMeta
from dal.objects.schema import ready_indexes
from dal.values import same

T_co = TypeVar("T_co", covariant=True)


class Query(Protocol[T_co]):
    """A lazy list of the objects a query matches (a ``dal.DataList``)."""

    def __iter__(self) -> Iterator[T_co]: ...
    def __len__(self) -> int: ...
    def __getitem__(self, index: int, /) -> T_co: ...
    @property
    def guids(self) -> list[str]: ...
    def first(self) -> T_co | None: ...
    def count(self) -> int: ...
    def exists(self) -> bool: ...


#: makes the list of the objects of a hybrid matching a query (``DataList``)
QueryMaker = Callable[[Any, Mapping[str, Any] | None], Any]
_query_maker: QueryMaker | None = None


def provide_queries(maker: QueryMaker) -> None:
    """Hand over the maker of query lists (the query engine calls this when it is imported)."""
    global _query_maker
    _query_maker = maker


def query(hybrid: type, grammar: Mapping[str, Any] | None) -> Any:
    """Return the ``DataList`` of ``hybrid`` matching ``grammar``."""
    if _query_maker is None:
        raise ConfigurationError("queries run on the query engine: import dal")
    return _query_maker(hybrid, grammar)


def unique_guid(hybrid: type, meta: HybridMeta, fields: Mapping[str, Any]) -> str:
    """Return the guid of the one object whose unique property holds the value; ObjectNotFoundError if none.

    ``fields`` is one ``property=value``. Reads the unique key (one durable read, no scan) when its
    keys are complete in the store; before that, runs the equivalent query.
    """
    name = meta.cls.__name__
    unique = sorted(prop.name for prop in meta.unique)
    if len(fields) != 1:
        raise InvalidQueryError(f"{name}.get_by() takes one unique property=value, not {len(fields)}; "
                                f"unique: {', '.join(unique) or 'none'} (query others with {name}.where())")
    (field, value), = fields.items()
    prop = meta.properties.get(field)
    if prop is None or not prop.unique:
        what = "not unique" if prop is not None else "not a property"
        raise InvalidQueryError(
            f"{name}.get_by({field}=...): {field} is {what}, so it may match many objects (or none); use a "
            f"query: {name}.where({name}.{field} == value).first(). Unique: {', '.join(unique) or 'none'}")
    if value is None:
        raise InvalidValueError(f"{name}.get_by({field}=None): an unset value is not unique (no key holds "
                                f"it); query {name}.where({name}.{field}.is_(None))")
    try:
        stored = prop.validator.to_json(prop.validator(value))
    except InvalidValueError as exc:
        raise InvalidQueryError(f"{name}.get_by({field}=...): {exc}") from None
    context = current()
    if field in ready_indexes(context, meta):
        entry = context.persistent.get(context.keys.unique(meta.name, field, stored))
        if entry is not None:
            return entry.value.decode()
    else:
        found = query(hybrid, {"type": "AND", "items": [(field, "EQUALS", value)]}).guids
        if found:
            return str(found[0])
    raise ObjectNotFoundError(f"no {name} with {field} {value!r} is stored")


def still_holds(obj: Any, meta: HybridMeta, fields: Mapping[str, Any]) -> bool:
    """Tell whether ``obj``, loaded through a unique key, still holds the value (it was not renamed since)."""
    (field, value), = fields.items()
    prop = meta.properties[field]
    return same(prop.validator.to_json(obj._data[field]), prop.validator.to_json(prop.validator(value)))
