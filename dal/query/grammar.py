"""Queries: validated against their hybrid into an immutable tree, then tested against documents.

A caller writes ``{'type': AND|OR, 'items': [(field, operator, value[, case_sensitive]) |
subquery, ...]}``. :func:`compile_query` checks every field, operator and value against
the hybrid before anything runs and builds a frozen tree; the caller's dict is only read.
Values are converted to their stored JSON form once, so a condition is tested directly
against stored documents (with defaults filled in for fields they lack) without building
objects. Values are compared as everywhere else in dal (``dal/values.py``): typed at any depth.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any, Literal

from dal.config import current
from dal.exceptions import InvalidQueryError, InvalidValueError
from dal.model.expressions import MAX_DEPTH
from dal.model.registry import hybrids
from dal.objects.dataobject import DataObject
from dal.objects.origin import check_compared
from dal.query.contains import Either, contained
from dal.query.declared import allowed_spelling, bare
from dal.query.ordering import COMPARE, Parse, comparable, orderable, ordering_test
from dal.structures import GUID_RULE, Dynamic, Property, Relation, is_guid
from dal.validators import Validator, non_finite
from dal.values import fold, same

if TYPE_CHECKING:
    from dal.model.meta import HybridMeta


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


ORDERING = frozenset({Operator.LT, Operator.GT, Operator.LE, Operator.GE})
FieldKind = Literal["guid", "property", "relation", "dynamic"]
_SHAPE = ("a query is {'type': 'AND' or 'OR', 'items': [(field, operator, value[, case_sensitive]) or "
          "a nested query, ...]}")


@dataclass(frozen=True)
class Field:
    """A resolved field: the relations walked from the queried hybrid, then a field of the last one."""

    text: str
    hops: tuple[Relation, ...]
    meta: HybridMeta
    name: str
    kind: FieldKind
    #: converts query values to their stored JSON form (None for guids)
    validator: Validator | None
    #: the value a document that lacks the field reads as
    default: Any


@dataclass(frozen=True)
class Condition:
    field: Field
    operator: Operator
    #: the JSON form of the value; a tuple for IN
    value: Any
    sensitive: bool
    #: LT/GT/LE/GE on a type whose stored text orders unlike its values (a datetime, a time, a
    #: Decimal, a timedelta): parses a stored value into one that orders (dal.query.ordering)
    moment: Parse | None = None

    def describe(self) -> str:
        flag = "" if self.sensitive else " (case-insensitive)"
        value = list(self.value) if isinstance(self.value, tuple) else self.value
        return f"{self.field.text} {self.operator.value} {value!r}{flag}"


@dataclass(frozen=True)
class Group:
    kind: WhereOperator
    items: tuple[Node, ...]


Node = Condition | Group


def compile_query(meta: HybridMeta, query: Mapping[str, Any] | None) -> Group:
    """Validate ``query`` against a hybrid and return its tree; ``None`` matches every object."""
    if query is None:
        return Group(WhereOperator.AND, ())
    return _group(meta, query, "query", 0)


def _group(meta: HybridMeta, query: Any, where: str, depth: int) -> Group:
    if not isinstance(query, Mapping):
        raise InvalidQueryError(f"{where} is {query!r}; {_SHAPE}")
    if depth >= MAX_DEPTH:
        raise InvalidQueryError(f"{where}: groups nest {depth + 1} deep, more than {MAX_DEPTH}; "
                                "flatten the query (an AND or OR takes any number of items)")
    unknown = sorted(set(query) - {"type", "items"}, key=repr)
    if unknown or "items" not in query:
        raise InvalidQueryError(f"{where} has keys {sorted(query, key=repr)}; {_SHAPE}")
    try:
        kind = WhereOperator(query.get("type", WhereOperator.AND))
    except ValueError:
        raise InvalidQueryError(f"{where} has type {query.get('type')!r}; use DataList.where_operator.AND "
                                "or .OR") from None
    items = query["items"]
    if isinstance(items, (str, bytes, Mapping)) or not isinstance(items, Sequence):
        raise InvalidQueryError(f"{where}['items'] must be a list, not {items!r}; {_SHAPE}")
    nodes: list[Node] = []
    for index, item in enumerate(items):
        label = f"{where}['items'][{index}]"
        node = (_group(meta, item, label, depth + 1) if isinstance(item, Mapping)
                else _condition(meta, item, label))
        nodes.append(node)
    return Group(kind, tuple(nodes))


def _condition(meta: HybridMeta, item: Any, where: str) -> Node:
    if isinstance(item, (str, bytes)) or not isinstance(item, Sequence) or len(item) not in (3, 4):
        raise InvalidQueryError(f"{where} is {item!r}; a condition is (field, operator, value) or "
                                "(field, operator, value, case_sensitive)")
    text, operator_text, value = item[0], item[1], item[2]
    sensitive = item[3] if len(item) == 4 else True
    if not isinstance(sensitive, bool):
        raise InvalidQueryError(f"{where}: case_sensitive must be True or False, not {sensitive!r}")
    try:
        operator = Operator(operator_text)
    except ValueError:
        raise InvalidQueryError(
            f"{where}: unknown operator {operator_text!r}; use one of "
            f"{', '.join(op.value for op in Operator)} (DataList.operator.EQUALS, ...)") from None
    field = resolve_field(meta, text, where)
    if field.kind == "relation" and field.name != text.rsplit(".", 1)[-1]:
        value = _guid_of(value, field, where)
    label = f"{where}: {field.meta.cls.__name__}.{field.name}"
    _storable(value, label)  # first: the repr of an int past Python's digit limit raises, in any message
    converted = _value(field, operator, value, label, sensitive)
    if isinstance(converted, Either):  # an element stored in several forms: any of them is contained
        return Group(WhereOperator.OR, tuple(Condition(field, operator, form, sensitive)
                                             for form in converted.forms))
    _storable(converted, label)
    moment = _orderable(field) if operator in ORDERING else None
    return Condition(field, operator, converted, sensitive, moment)


def resolve_field(meta: HybridMeta, text: Any, where: str = "field") -> Field:
    """Resolve ``guid``, a property, ``<relation>_guid``, a dynamic or a dotted path of them."""
    if not isinstance(text, str) or not text:
        raise InvalidQueryError(f"{where}: a field is a non-empty string like 'name' or "
                                f"'backend_type.code', not {text!r}")
    parts = text.split(".")
    hops: list[Relation] = []
    current = meta
    for part in parts[:-1]:
        relation = current.relations.get(part)
        if relation is None:
            raise InvalidQueryError(
                f"{where}: {current.cls.__name__}.{part} in {text!r} is not a relation; a dotted path walks "
                f"relations of {current.cls.__name__}: {_names(current.relations)}")
        if relation.target is None:  # not declared yet, or an abstract base
            raise InvalidQueryError(f"{where}: in {text!r}, {hybrids.undeclared(relation)}")
        hops.append(relation)
        current = relation.target._meta
    name = parts[-1]
    owner = current.cls.__name__
    prop: Property[Any] | None = current.properties.get(name)
    if name == "guid":
        return Field(text, tuple(hops), current, "guid", "guid", None, None)
    if prop is not None:
        return Field(text, tuple(hops), current, name, "property", prop.validator,
                     prop.validator.to_json(prop.default))
    relation = current.relations.get(name) or next(
        (r for r in current.relations.values() if r.guid_field == name), None)
    if relation is not None:  # `backend_type` (an object or None) or `backend_type_guid`
        return Field(text, tuple(hops), current, relation.guid_field, "relation", None, None)
    dynamic: Dynamic | None = current.dynamics.get(name)
    if dynamic is not None:
        return Field(text, tuple(hops), current, name, "dynamic", dynamic.validator, None)
    reverse = f"; {name} is a reverse relation, query {current.reverse[name].source.__name__} instead" \
        if name in current.reverse else ""
    raise InvalidQueryError(
        f"{where}: {owner} has no field {name!r}{reverse}. Fields: guid, properties "
        f"({_names(current.properties)}), relations ({_names(current.relations)}, or <relation>_guid), "
        f"dynamics ({_names(current.dynamics)}), and dotted paths through relations")


def _names(specs: Mapping[str, Any]) -> str:
    return ", ".join(sorted(specs)) or "none"


def _guid_of(value: Any, field: Field, where: str) -> Any:
    """Let ``('backend_type', EQUALS, obj)`` mean ``('backend_type_guid', EQUALS, obj.guid)``."""
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_guid_of(item, field, where) for item in value]
    if isinstance(value, DataObject):
        relation = next(r for r in field.meta.relations.values() if r.guid_field == field.name)
        target = relation.target
        if target is not None and type(value) is not target:
            # as assigning it refuses (a subclass is another hybrid): its guid could never be stored here
            raise InvalidQueryError(f"{where}: {relation.qualified} holds a {target.__name__}, not "
                                    f"{value!r}; compare it with a {target.__name__} (or its guid)")
        check_compared(where, value, current())
        return value.guid
    return value


def _storable(value: Any, label: str) -> None:
    """Refuse a value no document holds (a lone surrogate, an int too long for JSON), not fail running."""
    try:  # objects not JSON yet (a datetime, a model) are the validators' to judge
        json.dumps(value, ensure_ascii=False, skipkeys=True, default=_opaque).encode()
    except (TypeError, ValueError, RecursionError) as exc:  # UnicodeEncodeError is a ValueError; nested
        raise InvalidQueryError(f"{label}: the query holds a value JSON cannot store ({exc}); no stored "
                                "value is one, so compare with a value the field can hold") from None


def _opaque(value: Any) -> Any:
    return list(value) if isinstance(value, (set, frozenset)) else None


def _value(field: Field, operator: Operator, value: Any, label: str, sensitive: bool = True) -> Any:
    if problem := non_finite(value):  # no stored value is (or nests) one: JSON and assignments refuse them
        fix = "no stored value does" if "nests" in problem else "compare with a finite number, or EQUALS None"
        raise InvalidQueryError(f"{label}: {problem}; {fix}")
    if operator is Operator.IN:
        if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, (Sequence, set, frozenset)):
            raise InvalidQueryError(f"{label} IN needs a list of values, not {value!r}")
        items = sorted(value, key=repr) if isinstance(value, (set, frozenset)) else list(value)
        return tuple(_one(field, item, label, sensitive) for item in items)
    if operator is Operator.CONTAINS:
        return contained(_declared_type(field), field.kind, field.validator, value, label)
    if operator in ORDERING:
        if value is None:
            raise InvalidQueryError(f"{label} {operator.value} None compares with nothing; "
                                    "use EQUALS None for unset values")
        if _numeric(field) and isinstance(value, (int, float)) and not isinstance(value, bool):
            return value  # `size LT 2.5` on an int field is meaningful
        if field.validator is None and isinstance(value, str):
            return value  # a range of guids may end anywhere: it reads no key named by the value
    return _one(field, value, label, sensitive)


def _one(field: Field, value: Any, label: str, sensitive: bool = True) -> Any:
    """Return ``value`` checked against the field's type, in its stored JSON form (compared
    case-insensitively, a string enum's allowed value spelt in other case: that value)."""
    if value is None:
        return None
    if field.validator is None:  # a guid or a relation's guid
        if not is_guid(value):  # a guid becomes part of the keys the query reads
            raise InvalidQueryError(f"{label} holds guids, not {value!r}: {GUID_RULE}")
        return value
    try:
        return field.validator.to_json(field.validator(value))
    except InvalidValueError as exc:
        spelt = None if sensitive or not isinstance(value, str) else \
            allowed_spelling(bare(_declared_type(field)), field.validator, value)
        if spelt is not None:  # 'ok' finds 'OK' case-insensitively
            return spelt
        raise InvalidQueryError(f"{label}: the value does not fit the field: {exc}") from None


def _declared_type(field: Field) -> Any:
    if field.kind == "property":
        return field.meta.properties[field.name].property_type
    if field.kind == "dynamic":
        return field.meta.dynamics[field.name].return_type
    return str


def _numeric(field: Field) -> bool:
    """Tell whether ``field`` holds numbers: an int or float, optional or constrained (``Annotated``)
    too, so a range bound need not itself be a value the field could hold (``pct LT 200``)."""
    return bare(_declared_type(field)) in (int, float)


def _orderable(field: Field) -> Parse | None:
    """Return the parser of a stored value whose text orders unlike its type (dal.query.ordering)."""
    if field.kind not in ("property", "dynamic"):
        return None
    return orderable(bare(_declared_type(field)), field.validator)


# --- testing values -------------------------------------------------------------------------


def satisfies(condition: Condition, actual: Any) -> bool:
    """Return whether a stored (JSON) value satisfies ``condition``."""
    operator, value = condition.operator, condition.value
    if condition.moment is not None:
        return in_order(condition, actual)
    if not condition.sensitive:
        actual, value = fold(actual), fold(value)
    if operator is Operator.EQUALS:
        return same(actual, value)
    if operator is Operator.NOT_EQUALS:
        return not same(actual, value)
    if operator is Operator.IN:
        return any(same(actual, item) for item in value)
    if actual is None:
        return False
    if operator is Operator.CONTAINS:
        if isinstance(actual, str):
            return isinstance(value, str) and value in actual
        return isinstance(actual, list) and any(same(item, value) for item in actual)
    try:  # a boolean never orders against a number (True is not 1): see comparable()
        return bool(COMPARE[operator](comparable(actual), comparable(value)))
    except TypeError:  # a stored value of another type (data of an older model) matches nothing
        return False


def in_order(condition: Condition, actual: Any) -> bool:
    """Order a stored value by what it is (an instant, a number, a length), not by its JSON text."""
    assert condition.moment is not None
    return ordering_test(condition.operator.value, condition.moment, condition.value)(actual)


# --- describing --------------------------------------------------------------------------------


def fields_of(node: Node) -> list[Field]:
    """Return every field a query reads, in order."""
    if isinstance(node, Condition):
        return [node.field]
    return [field for item in node.items for field in fields_of(item)]


def uses_dynamics(node: Node) -> bool:
    return any(field.kind == "dynamic" for field in fields_of(node))


def digest(meta: HybridMeta, node: Node) -> str:
    """Return a stable digest of a compiled query, naming its cached result."""
    text = json.dumps([meta.name, _canonical(node)], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _canonical(node: Node) -> Any:
    if isinstance(node, Condition):
        value = list(node.value) if isinstance(node.value, tuple) else node.value
        return [node.field.text, node.operator.value, value, node.sensitive]
    return [node.kind.value, [_canonical(item) for item in node.items]]
