"""``DataList``: a lazy, list-like query over the objects of one hybrid.

This first engine scans the hybrid's documents in batches and filters them in Python; it
is exact (it reads the durable store, never a cached list). The index-backed planner,
cached results and query validation are tracked in the queries issue.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from enum import Enum
from typing import Any, Generic, TypeVar, overload

from dal.config import current
from dal.dataobject import DataObject
from dal.exceptions import InvalidQueryError
from dal.relations import linked, scan_batches
from dal.structures import Relation

T = TypeVar("T", bound=DataObject)
SCAN_BATCH = 500
#: objects loaded per batched round trip while iterating
LOAD_BATCH = 500


class Operator(str, Enum):
    EQUALS = "EQUALS"
    NOT_EQUALS = "NOT_EQUALS"
    LT = "LT"
    GT = "GT"
    LE = "LE"
    GE = "GE"
    IN = "IN"
    CONTAINS = "CONTAINS"


class WhereOperator(str, Enum):
    AND = "AND"
    OR = "OR"


class DataList(Generic[T]):
    """The objects of ``hybrid`` matching ``query`` (all of them without one), evaluated lazily."""

    operator = Operator
    where_operator = WhereOperator

    def __init__(self, hybrid: type[T], query: dict[str, Any] | None = None, *,
                 guids: Sequence[str] | None = None) -> None:
        if not (isinstance(hybrid, type) and issubclass(hybrid, DataObject)):
            raise InvalidQueryError(f"DataList needs a hybrid class, not {hybrid!r}")
        self.hybrid = hybrid
        self.query = query
        self._guids: list[str] | None = list(guids) if guids is not None else None
        self._source: Callable[[], list[str]] = lambda: [obj.guid for obj in self._scan()]
        #: objects every loaded member already points at (the owner of a reverse list)
        self._seed: dict[str, DataObject] = {}

    @classmethod
    def pointing_at(cls, relation: Relation, target: DataObject) -> DataList[Any]:
        """Return the objects whose ``relation`` points at ``target``: one link scan, lazily."""
        assert relation.owner is not None
        result: DataList[Any] = DataList(relation.owner)
        result._source = lambda: [guid for guid, _ in linked(current(), relation, target.guid)]
        result._seed = {relation.name: target}
        return result

    @property
    def guids(self) -> list[str]:
        """Return the guids of the matching objects (runs the query on first use)."""
        if self._guids is None:
            self._guids = self._source()
        return self._guids

    def _scan(self) -> Iterator[T]:
        context = current()
        prefix = context.keys.docs(self.hybrid._meta.name)
        for batch in scan_batches(context, prefix, SCAN_BATCH):
            for key, entry in batch:
                obj = self.hybrid._from_entry(key[len(prefix):], entry)
                if self.query is None or _matches(obj, self.query):
                    yield obj

    def __len__(self) -> int:
        return len(self.guids)

    def __iter__(self) -> Iterator[T]:
        guids = list(self.guids)
        for start in range(0, len(guids), LOAD_BATCH):
            batch = guids[start:start + LOAD_BATCH]
            loaded = self.hybrid._load_many(batch)
            for obj in loaded.values():
                obj._objects.update(self._seed)
            # an object deleted since the query ran is skipped
            yield from (loaded[guid] for guid in batch if guid in loaded)

    @overload
    def __getitem__(self, index: int) -> T: ...
    @overload
    def __getitem__(self, index: slice) -> DataList[T]: ...
    def __getitem__(self, index: int | slice) -> T | DataList[T]:
        if isinstance(index, slice):
            return DataList(self.hybrid, self.query, guids=self.guids[index])
        return self.hybrid(self.guids[index])

    def __add__(self, other: DataList[T]) -> DataList[T]:
        if other.hybrid is not self.hybrid:
            raise TypeError(
                f"cannot add a DataList of {other.hybrid.__name__} to one of {self.hybrid.__name__}")
        return DataList(self.hybrid, guids=self.guids + other.guids)

    def index(self, obj: T) -> int:
        return self.guids.index(obj.guid)

    def remove(self, obj: T) -> None:
        self.guids.remove(obj.guid)

    def pop(self, index: int = -1) -> T:
        return self.hybrid(self.guids.pop(index))

    def reverse(self) -> None:
        self.guids.reverse()

    def serialize(self, depth: int = 0) -> list[dict[str, Any]]:
        """Return every object serialized; relations of the whole list load in batches."""
        return [obj.serialize(depth) for obj in self]

    def sort(self, key: Callable[[T], Any] | None = None, reverse: bool = False) -> None:
        """Sort in place; by default by guid in natural order."""
        objects = list(self)
        chosen: Callable[[T], Any] = key if key is not None else (lambda obj: _natural(obj.guid))
        objects.sort(key=chosen, reverse=reverse)
        self._guids = [obj.guid for obj in objects]

    def __repr__(self) -> str:
        return f"<DataList of {self.hybrid.__name__}: {len(self)} objects>"


def _natural(text: str) -> list[Any]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def _matches(obj: DataObject, query: dict[str, Any]) -> bool:
    items = query.get("items", [])
    combine = all if WhereOperator(query.get("type", "AND")) is WhereOperator.AND else any
    return combine(_matches(obj, item) if isinstance(item, dict) else _test(obj, item) for item in items)


def _test(obj: DataObject, item: Sequence[Any]) -> bool:
    field, operator, value = item[0], Operator(item[1]), item[2]
    sensitive = item[3] if len(item) > 3 else True
    actual = _resolve(obj, field)
    if not sensitive:
        actual = actual.lower() if isinstance(actual, str) else actual
        value = value.lower() if isinstance(value, str) else value
    if operator is Operator.EQUALS:
        return bool(actual == value)
    if operator is Operator.NOT_EQUALS:
        return bool(actual != value)
    if operator is Operator.IN:
        return actual in value
    if operator is Operator.CONTAINS:
        return actual is not None and value in actual
    if actual is None:
        return False
    comparisons = {Operator.LT: actual < value, Operator.GT: actual > value,
                   Operator.LE: actual <= value, Operator.GE: actual >= value}
    return bool(comparisons[operator])


def _resolve(obj: DataObject | None, field: str) -> Any:
    for part in field.split("."):
        if obj is None:
            return None
        obj = getattr(obj, part)
    return obj
