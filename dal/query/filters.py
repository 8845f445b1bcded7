"""A compiled query as one closure per node: the test a scan runs on every document.

Walking the query tree for each document (which node kind, which operator, fold the value
again, look the default up again) cost about 30% of a scan's time. :func:`compile_filter` does
that once per query: each condition becomes a predicate on the stored value with its operator
chosen, its value folded and, for ``EQUALS`` and ``IN`` on plain values, its type identity
(:func:`dal.values.same`) reduced to a type check and an ``==`` or a set lookup. Conditions on a
document's own fields read the document directly; the others (dotted paths, dynamics) ask the
batch, which resolves them for every document of the batch at once.

Every predicate answers exactly as :func:`dal.query.grammar.satisfies` does, for every value
(``tests/test_query_filters.py`` compares them with hypothesis over odd values).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any, Protocol

from dal.query.grammar import Condition, Group, Node, Operator, WhereOperator
from dal.query.ordering import COMPARE, CONVERTED, comparable, ordering_test
from dal.values import fold, same

#: a predicate on one stored (JSON) value
Test = Callable[[Any], bool]


class Documents(Protocol):
    """What a compiled filter reads: a batch's decoded documents, and the slow path for the rest."""

    data: dict[str, dict[str, Any]]

    def matches(self, node: Node, guid: str) -> bool: ...


#: a compiled filter: does the document of ``guid`` in a batch match
Filter = Callable[[Documents, str], bool]
#: a compiled filter of a query that reads only a document's own fields: does (guid, document) match
DocumentFilter = Callable[[str, dict[str, Any]], bool]


def compile_filter(node: Node) -> Filter:
    """Return the filter of a compiled query (the same answers as walking ``node`` per document)."""
    if isinstance(node, Group):
        return _group(node.kind, tuple(compile_filter(item) for item in node.items))
    field = node.field
    if field.hops or field.kind == "dynamic":
        return lambda batch, guid: batch.matches(node, guid)  # resolved per batch by the batch itself
    test = predicate(node)
    if field.kind == "guid":
        return lambda batch, guid: test(guid)
    name, default = field.name, field.meta.stored_defaults.get(field.name)
    return lambda batch, guid: test(batch.data[guid].get(name, default))


def compile_document_filter(node: Node) -> DocumentFilter | None:
    """Return the filter of a query that needs nothing but each document (no dotted path, no
    dynamic), called with a guid and its decoded document; ``None`` when it needs a batch."""
    if isinstance(node, Group):
        parts = tuple(compile_document_filter(item) for item in node.items)
        if any(part is None for part in parts):
            return None
        return _group(node.kind, tuple(part for part in parts if part is not None))
    field = node.field
    if field.hops or field.kind == "dynamic":
        return None
    test = predicate(node)
    if field.kind == "guid":
        return lambda guid, document: test(guid)
    name, default = field.name, field.meta.stored_defaults.get(field.name)
    return lambda guid, document: test(document.get(name, default))


def _group(kind: WhereOperator, parts: tuple[Callable[[Any, Any], bool], ...]) -> Callable[[Any, Any], bool]:
    """Combine the filters of a group's items; one or two items without a generator per call."""
    every = kind is WhereOperator.AND
    if len(parts) == 1:
        return parts[0]
    if len(parts) == 2:
        first, second = parts
        if every:
            return lambda a, b: first(a, b) and second(a, b)
        return lambda a, b: first(a, b) or second(a, b)
    if every:
        return lambda a, b: all(part(a, b) for part in parts)
    return lambda a, b: any(part(a, b) for part in parts)


def predicate(condition: Condition) -> Test:
    """Return the test of one condition on a stored value, its operator and value bound once."""
    if condition.moment is not None:  # a type whose text orders unlike it: parsed per document, only here
        return ordering_test(condition.operator, condition.moment, condition.value)
    if condition.sensitive:
        return _test(condition.operator, condition.value)
    inner = _test(condition.operator, fold(condition.value))
    return lambda actual: inner(fold(actual))


def _test(operator: Operator, value: Any) -> Test:
    if operator is Operator.EQUALS:
        return _equals(value)
    if operator is Operator.NOT_EQUALS:
        equal = _equals(value)
        return lambda actual: not equal(actual)
    if operator is Operator.IN:
        return _one_of(value)
    if operator is Operator.CONTAINS:
        return _contains(value)
    return _ordered(operator, value)


def _equals(value: Any) -> Test:
    if isinstance(value, (list, dict)):
        return lambda actual: same(actual, value)
    kind = type(value)
    # same(): equal only with the same type (True is not 1, 1.0 is not 1)
    return lambda actual: type(actual) is kind and bool(actual == value)


def _one_of(values: tuple[Any, ...]) -> Test:
    if not all(isinstance(value, Hashable) and not isinstance(value, tuple) for value in values):
        return lambda actual: any(same(actual, value) for value in values)
    # a value and its type, so True, 1 and 1.0 stay apart as same() keeps them
    keys = frozenset((type(value), value) for value in values)

    def test(actual: Any) -> bool:
        if isinstance(actual, (list, dict)):
            return False  # no plain value is the same as a container
        return (type(actual), actual) in keys

    return test


def _contains(value: Any) -> Test:
    def test(actual: Any) -> bool:
        if isinstance(actual, str):
            return isinstance(value, str) and value in actual
        return isinstance(actual, list) and any(same(item, value) for item in actual)

    return test


def _ordered(operator: Operator, value: Any) -> Test:
    compare, bound = COMPARE[operator], comparable(value)

    def test(actual: Any) -> bool:
        if actual is None:
            return False
        if type(actual) in CONVERTED:  # a boolean never orders against a number (True is not 1)
            actual = comparable(actual)
        try:
            return bool(compare(actual, bound))
        except TypeError:  # a stored value of another type (data of an older model) matches nothing
            return False

    return test
