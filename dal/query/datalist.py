"""``DataList``: a lazy, list-like query over the objects of one hybrid.

The query is validated when the list is made (:mod:`dal.query.grammar`), runs on first use through
the planner (:mod:`dal.query.planner`), and its result, a list of guids, is cached in the volatile
store and invalidated exactly (:mod:`dal.query.results`). Objects load in batches as the list is
iterated; an object deleted since the query ran is skipped. The documents a query read are
used by the iteration (or ``first()``) that ran it, as current as a load would be; after another
first use they are kept with the store's data stamp and used only while nothing was committed
since (never on a store without a cheap stamp); ``lst[i]`` loads its object again.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, cast, overload

from dal.backends.base import Entry
from dal.config import Context, current
from dal.exceptions import ConfigurationError, InvalidQueryError, InvalidValueError, ObjectNotFoundError
from dal.model.expressions import Where, for_hybrid
from dal.model.registry import family
from dal.model.reverse import provide_lists
from dal.objects.dataobject import DataObject
from dal.objects.dynamics import read_many
from dal.objects.lookups import provide_queries
from dal.objects.models import check_depth, serialized_all
from dal.objects.origin import check_compared, check_listing
from dal.query.explained import QueryPlan
from dal.query.grammar import Group, Operator, WhereOperator, compile_query
from dal.query.holders import Holders
from dal.query.owners import give_owners
from dal.query.planner import BATCH, Planner, Step, describe_node
from dal.query.results import cached_guids
from dal.query.sorting import SortKey, sort_key
from dal.structures import Relation, check_guid

T = TypeVar("T", bound=DataObject)
#: objects loaded per batched round trip while iterating
LOAD_BATCH = BATCH


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

    def __init__(self, hybrid: type[T], query: Mapping[str, Any] | Where | None = None, *,
                 guids: Iterable[str] | None = None) -> None:
        if not (isinstance(hybrid, type) and issubclass(hybrid, DataObject)) or hybrid is DataObject:
            raise InvalidQueryError(f"DataList needs a hybrid class, not {hybrid!r}")
        self.hybrid = hybrid
        if guids is not None and query is not None:  # the guids would be listed, the query never run
            raise InvalidQueryError(f"DataList({hybrid.__name__}, query, guids=...): give a query or guids=, "
                                    "not both")
        meta = hybrid._meta  # an abstract base (no _meta of its own): NotAHybridError, before any query
        query = for_hybrid(hybrid, query)  # built with Cls.field == value: fields of this hybrid only
        self._root: Group = compile_query(meta, query)
        self._guids: list[str] | None = None if guids is None else _given(hybrid, guids)
        self._cache = "given" if guids is not None else "not run"
        self._planner: Planner | None = None
        #: documents the query already read (and decoded), used by the first iteration (and by
        #: ``first()``) while current
        self._entries: dict[str, Entry] = {}
        self._documents: dict[str, dict[str, Any]] = {}
        #: when they were read, if not by that iteration itself: the context and its data stamp
        self._read_at: tuple[Context, tuple[int, int, object]] | None = None
        #: objects every loaded member already points at (the owner of a reverse list)
        self._seed: dict[str, DataObject] = {}
        #: a reverse list's subclass hybrids holding its relation too, and their query
        #: (dal.model.meta.Reverse)
        self._also: list[tuple[type[DataObject], Group]] = []
        #: the members of those hybrids: guid -> hybrid (the others are of ``hybrid``)
        self._members: dict[str, type[DataObject]] = {}
        self._also_steps: list[Step] = []
        #: the context the query ran under and the store it names (its cache root): the guids are
        #: that store's (None for guids given by the caller, which name objects wherever used)
        self._ran_under: tuple[Context, str] | None = None

    @classmethod
    def pointing_at(cls, relation: Relation, target: DataObject) -> DataList[Any]:
        """Return the objects whose ``relation`` points at ``target`` (their link keys, cached).

        Objects of subclass hybrids holding the relation too (inherited) are members as well.
        """
        check_listing(relation, target, current())
        parts = [(member.owner, {"type": WhereOperator.AND,
                                 "items": [(member.guid_field, Operator.EQUALS, target.guid)]})
                 for member in family(relation) if member.owner is not None]
        result: DataList[Any] = DataList(parts[0][0], parts[0][1])
        result._also = [(owner, compile_query(owner._meta, query)) for owner, query in parts[1:]]
        result._seed = {member.name: target for member in family(relation)}
        return result

    # --- running --------------------------------------------------------------------------

    @property
    def guids(self) -> list[str]:
        """Return the guids of the matching objects (runs the query on first use)."""
        return list(self._run())

    def _run(self, *, iterating: bool = False) -> list[str]:
        """Run the query once; keep what it read for the first iteration and ``first()`` while current.

        An iteration that runs the query uses what it read. After any other first use (``len()``,
        which ``list()`` calls before iterating), the documents are kept with the store's data
        stamp, taken before the query read anything: the iteration uses them only if nothing was
        committed since, and reloads otherwise (always on a store without a cheap stamp).
        """
        if self._guids is None:
            context = current()
            for owner in self._seed.values():  # a reverse list made under another configure()
                check_compared(f"the list of what points at it ({self.hybrid.__name__})", owner, context)
            stamp = None if iterating else context.data_stamp()
            planner = Planner(context, self.hybrid._meta, self._root)
            guids, state = cached_guids(context, self.hybrid._meta, self._root, planner.guids)
            for hybrid, root in self._also:  # each its own cached query, invalidated by its own writes
                member_planner = Planner(context, hybrid._meta, root)
                more, how = cached_guids(context, hybrid._meta, root, member_planner.guids)
                self._members.update((guid, hybrid) for guid in more)
                self._also_steps.append(Step(f"{hybrid.__name__}, a subclass hybrid holding the relation too",
                                             f"also listed (result cache: {how})", len(more)))
                guids = [*guids, *more]
            self._guids, self._cache = guids, state
            self._planner = planner
            # handed over (the list drops them once iterated); the planner keeps only its steps
            self._entries, self._documents = planner.run.entries, planner.run.documents
            planner.run.entries, planner.run.documents = {}, {}
            self._read_at = None if stamp is None else (context, stamp)
            self._ran_under = (context, context.keys.cache_root)
            if stamp is None and not iterating:
                self._entries, self._documents = {}, {}  # by the next use, they may be out of date
        elif self._ran_under is not None:
            self._check_store(self._ran_under)
        return self._guids

    def _check_store(self, ran_under: tuple[Context, str]) -> None:
        """Refuse to use guids of another store: under another ``configure()`` they name nothing
        (``len()`` would count them, iterating skip them all, ``[i]`` call them deleted)."""
        context = current()
        if context is ran_under[0] or context.keys.cache_root == ran_under[1]:
            return  # configured again for the same store and namespace: the same objects
        raise ConfigurationError(
            f"this DataList of {self.hybrid.__name__} ran under another configure() (store and namespace "
            f"{ran_under[1]!r}); its results are that store's. Make a new DataList under the current "
            "configuration")

    def explain(self) -> QueryPlan:
        """Run the query if it has not run, and return how it was answered."""
        self._run()
        planner = self._planner
        steps: tuple[Step, ...] = ()
        if planner is not None:  # a cached result ran no plan: show the one it would run
            steps = tuple(planner.describe() if self._cache == "hit" else planner.run.steps)
        if self._cache == "given":
            steps = (Step(f"{len(self._guids or [])} guids", "given (a slice, a sum or a sorted copy)"),)
        steps += tuple(self._also_steps)
        return QueryPlan(self.hybrid.__name__, describe_node(self._root), self._cache, steps, len(self))

    def __len__(self) -> int:
        return len(self._run())

    def count(self) -> int:
        """Return how many objects match (``len()``): guids only, no object is built."""
        return len(self._run())

    def exists(self) -> bool:
        """Return whether any object matches: guids only, no object is built."""
        return bool(self._run())

    def first(self) -> T | None:
        """Return the first object, or ``None`` if none matches (skipping one deleted since the query ran).

        Built from the document the query read, when it read one that is still current, as an
        iteration is: no second read of it. Each object it returns is a new one, sharing nothing.
        """
        if self._guids is None:
            # the query runs now: what it reads is current for this call, which takes it (no stamp read)
            guids = self._run(iterating=True)
            entries, documents = self._kept()
        else:
            # read by an earlier use and kept with a stamp: left kept for a later iteration, whose
            # objects take the decoded documents as their own; this one decodes its entry again
            guids = self._run()
            entries, documents = self._kept(keep=True)[0], None
        for guid in guids:
            obj = self._load([guid], entries, documents).get(guid)
            if obj is not None:
                return obj
        return None

    def __bool__(self) -> bool:
        return bool(self._run())

    def __contains__(self, obj: object) -> bool:
        return isinstance(obj, self.hybrid) and obj.guid in self._run()

    def __iter__(self) -> Iterator[T]:
        guids = list(self._run(iterating=True))
        entries, documents = self._kept()
        for start in range(0, len(guids), LOAD_BATCH):
            batch = guids[start:start + LOAD_BATCH]
            loaded = self._load(batch, entries, documents)
            # an object deleted since the query ran is skipped
            yield from (loaded[guid] for guid in batch if guid in loaded)

    def _kept(self, *, keep: bool = False) -> tuple[Mapping[str, Entry], Mapping[str, dict[str, Any]]]:
        """Return what the query read, or nothing if it may be out of date: kept by an earlier use
        with a data stamp, and something was committed since. Handed over (the list drops it)
        unless ``keep``, which only a use that leaves it stamped may ask."""
        entries, documents, read_at = self._entries, self._documents, self._read_at
        if not keep:
            self._entries, self._documents, self._read_at = {}, {}, None
        if read_at is not None and entries:
            context = current()
            if context is not read_at[0] or context.data_stamp() != read_at[1]:
                self._entries, self._documents, self._read_at = {}, {}, None  # out of date for good
                return {}, {}
        return entries, documents

    def _load(self, guids: list[str], entries: Mapping[str, Entry],
              documents: Mapping[str, dict[str, Any]] | None = None) -> dict[str, T]:
        members = self._members  # a subclass hybrid's members; none in the common case
        own = [guid for guid in guids if guid not in members] if members else guids
        loaded = self.hybrid._load_many(own, entries, documents)
        for hybrid in {members[guid] for guid in guids if guid in members}:
            of_hybrid = [guid for guid in guids if members.get(guid) is hybrid]
            loaded.update(cast(dict[str, T], hybrid._load_many(of_hybrid)))
        if self._seed:
            give_owners(loaded.values(), self._seed)
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
        obj = self._load([guid], {}).get(guid)
        if obj is None:
            raise ObjectNotFoundError(f"no {self.hybrid.__name__} {guid} of this list is stored: deleted "
                                      "since the list was made, or never one (guids= are taken unchecked); "
                                      "iterate to skip such guids")
        return obj

    def _copy(self, guids: Iterable[str]) -> DataList[T]:
        result = DataList(self.hybrid, guids=guids)
        result._ran_under = self._ran_under  # the same store's guids
        result._seed = self._seed
        result._members = dict(self._members)
        return result

    def __add__(self, other: DataList[T]) -> DataList[T]:
        if not isinstance(other, DataList) or other.hybrid is not self.hybrid:
            raise TypeError(f"can only add a DataList of {self.hybrid.__name__} to this one, not {other!r}")
        result = self._copy(self._run() + other._run())
        # a given list's guids name objects anywhere: the sum is the store's the other side ran under
        # (both ran: the same store, or one of them raised in _run())
        result._ran_under = self._ran_under or other._ran_under
        result._members.update(other._members)
        return result

    def index(self, obj: T) -> int:
        """Return the position of ``obj``; ValueError when it is not in the list."""
        try:
            return self._run().index(_guid(obj))
        except ValueError:
            raise ValueError(f"{obj!r} is not in this DataList") from None

    def remove(self, obj: T) -> None:
        """Take ``obj`` out of this list (the object itself is untouched); ValueError when absent."""
        guids = self._run()
        try:
            guids.remove(_guid(obj))
        except ValueError:
            raise ValueError(f"{obj!r} is not in this DataList") from None

    def pop(self, index: int = -1) -> T:
        """Take the object at ``index`` out and return it; ObjectNotFoundError leaves the list as it was."""
        guids = self._run()
        obj = self._object(guids[index])
        del guids[index]
        return obj

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
        if not isinstance(reverse, bool):
            raise InvalidQueryError(f"sort(reverse={reverse!r}): reverse is True or False")
        ranker = sort_key(self.hybrid._meta, key)  # checked before any object loads
        objects = list(self)
        ranks = ranker.ranks(objects, LOAD_BATCH)
        order = sorted(range(len(objects)), key=ranks.__getitem__, reverse=reverse)
        self._guids = [objects[index].guid for index in order]

    # --- paging ---------------------------------------------------------------------------

    def page(self, number: int, size: int) -> Page[T]:
        """Return page ``number`` (from 1) of ``size`` objects, with the total count."""
        if (not isinstance(number, int) or not isinstance(size, int) or isinstance(number, bool)
                or isinstance(size, bool) or number < 1 or size < 1):
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
        """Return every object serialized; relations of the whole list load in batches, and each dynamic
        of each batch is read in one multi-get of its cached values (``serialized_all``); an object
        whose class has a ``serialize`` of its own is left to it."""
        check_depth(depth)  # for an empty list as well
        views: list[dict[str, Any]] = []
        batch: list[T] = []
        for obj in self:
            batch.append(obj)
            if len(batch) == LOAD_BATCH:
                views += _serialized(batch, depth)
                batch = []
        return views + _serialized(batch, depth)

    def __repr__(self) -> str:
        state = f"{len(self._guids)} objects" if self._guids is not None else "not run yet"
        return f"<DataList of {self.hybrid.__name__}: {state}>"


def _serialized(objs: list[T], depth: int) -> list[dict[str, Any]]:
    own = [type(obj).serialize is DataObject.serialize for obj in objs]  # else a serialize of its class's
    batched = [obj for obj, plain in zip(objs, own, strict=True) if plain]
    views = iter(serialized_all(batched, depth, read_many))
    return [next(views) if plain else obj.serialize(depth) for obj, plain in zip(objs, own, strict=True)]


def _guid(obj: object) -> str:
    """The guid ``index()`` and ``remove()`` look for: '' (no guid) for what is not an object, so
    they raise ValueError, as ``list.index`` does for anything it does not hold."""
    return obj.guid if isinstance(obj, DataObject) else ""


def _given(hybrid: type[DataObject], guids: Iterable[str]) -> list[str]:
    """Check the guids a caller gave, each where it enters (a string is one guid, not a list of them)."""
    where = f"DataList({hybrid.__name__}, guids=...)"
    try:
        if isinstance(guids, (str, bytes, bytearray)):
            raise TypeError
        given = iter(guids)
    except TypeError:
        raise InvalidValueError(f"{where}: guids= is a list of guids, not {guids!r}") from None
    return [check_guid(guid, f"{where}: {guid!r}") for guid in given]


provide_lists(DataList.pointing_at, Holders)  # reverse accessors (dal.model.reverse) list with a DataList
provide_queries(DataList)  # Cls.where(...) (dal.objects.lookups)
