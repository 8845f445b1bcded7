"""``DataList``: a lazy, list-like query over the objects of one hybrid.

The query is validated when the list is made (:mod:`dal.query`), runs on first use through
the planner (:mod:`dal.planner`), and its result, a list of guids, is cached in the volatile
store and invalidated exactly (:mod:`dal.results`). Objects load in batches as the list is
iterated; an object deleted since the query ran is skipped.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, overload

from dal.backends.base import Entry
from dal.config import current
from dal.dataobject import DataObject
from dal.exceptions import InvalidQueryError, ObjectNotFoundError
from dal.planner import BATCH, Planner, Step, describe_node
from dal.query import Group, Operator, WhereOperator, compile_query, resolve_field
from dal.results import cached_guids
from dal.structures import Relation

T = TypeVar("T", bound=DataObject)
#: objects loaded per batched round trip while iterating
LOAD_BATCH = BATCH
SortKey = Callable[[Any], Any] | str | Sequence[str] | None


@dataclass(frozen=True)
class QueryPlan:
    """What ``DataList.explain()`` returns: how the query was (or would be) answered."""

    hybrid: str
    query: str
    cache: str
    steps: tuple[Step, ...]
    count: int | None

    def __str__(self) -> str:
        lines = [f"DataList of {self.hybrid} where {self.query}"]
        lines.append(f"  result cache: {_CACHE_STATES.get(self.cache, self.cache)}")
        lines += [f"  {step}" for step in self.steps]
        if self.count is not None:
            lines.append(f"  {self.count} objects")
        return "\n".join(lines)


_CACHE_STATES = {
    "hit": "hit (guids read from the volatile store; no durable read)",
    "miss": "miss (computed, then cached until a write changes a field it reads)",
    "off": "off (the query reads a dynamic, or the volatile store cannot be trusted to be exact)",
    "not run": "not run yet",
}


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a list: its objects and where it sits in the whole."""

    items: DataList[T]
    number: int
    size: int
    total: int

    @property
    def pages(self) -> int:
        return max(1, math.ceil(self.total / self.size))

    @property
    def has_next(self) -> bool:
        return self.number < self.pages

    @property
    def has_previous(self) -> bool:
        return self.number > 1


class DataList(Generic[T]):
    """The objects of ``hybrid`` matching ``query`` (all of them without one), evaluated lazily."""

    operator = Operator
    where_operator = WhereOperator

    def __init__(self, hybrid: type[T], query: Mapping[str, Any] | None = None, *,
                 guids: Iterable[str] | None = None) -> None:
        if not (isinstance(hybrid, type) and issubclass(hybrid, DataObject)) or hybrid is DataObject:
            raise InvalidQueryError(f"DataList needs a hybrid class, not {hybrid!r}")
        self.hybrid = hybrid
        self._root: Group = compile_query(hybrid._meta, query)
        self._guids: list[str] | None = list(guids) if guids is not None else None
        self._cache = "given" if guids is not None else "not run"
        self._planner: Planner | None = None
        #: documents the query already read (and decoded), used once by the first iteration
        self._entries: dict[str, Entry] = {}
        self._documents: dict[str, dict[str, Any]] = {}
        #: objects every loaded member already points at (the owner of a reverse list)
        self._seed: dict[str, DataObject] = {}

    @classmethod
    def pointing_at(cls, relation: Relation, target: DataObject) -> DataList[Any]:
        """Return the objects whose ``relation`` points at ``target`` (their link keys, cached)."""
        assert relation.owner is not None
        result: DataList[Any] = DataList(
            relation.owner, {"type": WhereOperator.AND,
                             "items": [(relation.guid_field, Operator.EQUALS, target.guid)]})
        result._seed = {relation.name: target}
        return result

    # --- running --------------------------------------------------------------------------

    @property
    def guids(self) -> list[str]:
        """Return the guids of the matching objects (runs the query on first use)."""
        return list(self._run())

    def _run(self) -> list[str]:
        if self._guids is None:
            context = current()
            planner = Planner(context, self.hybrid._meta, self._root)
            guids, state = cached_guids(context, self.hybrid._meta, self._root, planner.guids)
            self._guids, self._cache = guids, state
            self._planner = planner
            # handed over (the list drops them once iterated); the planner keeps only its steps
            self._entries, self._documents = planner.run.entries, planner.run.documents
            planner.run.entries, planner.run.documents = {}, {}
        return self._guids

    def explain(self) -> QueryPlan:
        """Run the query if it has not run, and return how it was answered."""
        self._run()
        planner = self._planner
        steps: tuple[Step, ...] = ()
        if planner is not None:  # a cached result ran no plan: show the one it would run
            steps = tuple(planner.describe() if self._cache == "hit" else planner.run.steps)
        if self._cache == "given":
            steps = (Step(f"{len(self._guids or [])} guids", "given (a slice, a sum or a sorted copy)"),)
        return QueryPlan(self.hybrid.__name__, describe_node(self._root), self._cache, steps, len(self))

    def __len__(self) -> int:
        return len(self._run())

    def __bool__(self) -> bool:
        return bool(self._run())

    def __contains__(self, obj: object) -> bool:
        return isinstance(obj, self.hybrid) and obj.guid in self._run()

    def __iter__(self) -> Iterator[T]:
        guids = list(self._run())
        entries, documents, self._entries, self._documents = self._entries, self._documents, {}, {}
        for start in range(0, len(guids), LOAD_BATCH):
            batch = guids[start:start + LOAD_BATCH]
            loaded = self._load(batch, entries, documents)
            # an object deleted since the query ran is skipped
            yield from (loaded[guid] for guid in batch if guid in loaded)

    def _load(self, guids: list[str], entries: Mapping[str, Entry],
              documents: Mapping[str, dict[str, Any]] | None = None) -> dict[str, T]:
        loaded = self.hybrid._load_many(guids, entries, documents)
        for obj in loaded.values():
            obj._objects.update(self._seed)
        return loaded

    # --- list behaviour -------------------------------------------------------------------

    @overload
    def __getitem__(self, index: int) -> T: ...
    @overload
    def __getitem__(self, index: slice) -> DataList[T]: ...
    def __getitem__(self, index: int | slice) -> T | DataList[T]:
        if isinstance(index, slice):
            return self._copy(self._run()[index])
        return self._object(self._run()[index])

    def _object(self, guid: str) -> T:
        obj = self._load([guid], self._entries).get(guid)
        if obj is None:
            raise ObjectNotFoundError(f"{self.hybrid.__name__} {guid} in this list was deleted since the "
                                      "query ran; iterate to skip deleted objects")
        return obj

    def _copy(self, guids: Iterable[str]) -> DataList[T]:
        result = DataList(self.hybrid, guids=guids)
        result._seed = self._seed
        return result

    def __add__(self, other: DataList[T]) -> DataList[T]:
        if not isinstance(other, DataList) or other.hybrid is not self.hybrid:
            raise TypeError(f"can only add a DataList of {self.hybrid.__name__} to this one, not {other!r}")
        return self._copy(self._run() + other._run())

    def index(self, obj: T) -> int:
        """Return the position of ``obj``; ValueError when it is not in the list."""
        try:
            return self._run().index(obj.guid)
        except ValueError:
            raise ValueError(f"{obj!r} is not in this DataList") from None

    def remove(self, obj: T) -> None:
        """Take ``obj`` out of this list (the object itself is untouched); ValueError when absent."""
        self._run()
        assert self._guids is not None
        try:
            self._guids.remove(obj.guid)
        except ValueError:
            raise ValueError(f"{obj!r} is not in this DataList") from None

    def pop(self, index: int = -1) -> T:
        """Take the object at ``index`` out of this list and return it."""
        self._run()
        assert self._guids is not None
        return self._object(self._guids.pop(index))

    def reverse(self) -> None:
        self._run()
        assert self._guids is not None
        self._guids.reverse()

    def sort(self, key: SortKey = None, reverse: bool = False) -> None:
        """Sort in place, strings in natural order (``disk2`` before ``disk10``).

        ``key`` is a function of an object, a field name (dotted paths allowed) or a list of
        them for a multi-key sort. By default: by ``name`` when the hybrid has one, else by
        guid. Unset values sort first.
        """
        objects = list(self)
        keyer = self._sort_key(key)
        objects.sort(key=lambda obj: _natural(keyer(obj)), reverse=reverse)
        self._guids = [obj.guid for obj in objects]

    def _sort_key(self, key: SortKey) -> Callable[[T], Any]:
        if callable(key):
            return key
        if key is None:
            key = ["name", "guid"] if "name" in self.hybrid._meta.properties else ["guid"]
        names = [key] if isinstance(key, str) else list(key)
        for name in names:
            resolve_field(self.hybrid._meta, name, "sort key")
        return lambda obj: tuple(_attribute(obj, name) for name in names)

    # --- paging ---------------------------------------------------------------------------

    def page(self, number: int, size: int) -> Page[T]:
        """Return page ``number`` (from 1) of ``size`` objects, with the total count."""
        if not isinstance(number, int) or not isinstance(size, int) or number < 1 or size < 1:
            raise InvalidQueryError(f"page({number!r}, {size!r}): the number counts from 1, the size is >= 1")
        guids = self._run()
        start = (number - 1) * size
        return Page(self._copy(guids[start:start + size]), number, size, len(guids))

    def pages(self, size: int) -> Iterator[Page[T]]:
        """Yield every page of ``size`` objects in turn."""
        first = self.page(1, size)
        yield first
        for number in range(2, first.pages + 1):
            yield self.page(number, size)

    # --- output ---------------------------------------------------------------------------

    def serialize(self, depth: int = 0) -> list[dict[str, Any]]:
        """Return every object serialized; relations of the whole list load in batches."""
        return [obj.serialize(depth) for obj in self]

    def __repr__(self) -> str:
        state = f"{len(self._guids)} objects" if self._guids is not None else "not run yet"
        return f"<DataList of {self.hybrid.__name__}: {state}>"


def _attribute(obj: DataObject, path: str) -> Any:
    value: Any = obj
    for part in path.split("."):
        if value is None:
            return None
        value = getattr(value, part)
    return value


def _natural(value: Any) -> Any:
    """Return a sort key: strings split into text and numbers, None first, tuples element-wise."""
    if isinstance(value, tuple):
        return tuple(_natural(item) for item in value)
    if value is None:
        return (0,)
    if isinstance(value, str):
        return (1, tuple((0, int(part), "") if part.isdigit() else (1, 0, part)
                         for part in re.split(r"(\d+)", value) if part))
    return (1, value)

