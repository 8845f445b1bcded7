"""The query builder builds exactly the grammar a hand-written query is: same dict, same compiled tree,
same cache digest, same plan."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from query_hybrids import Item, Kind

from dal import DataList
from dal.config import Context
from dal.exceptions import InvalidQueryError, NoSuchFieldError, NotAConditionError
from dal.model.expressions import Condition, FieldExpression, Where, where
from dal.query.grammar import compile_query, digest

OP, W = DataList.operator, DataList.where_operator

FORMS: list[tuple[Any, dict[str, Any]]] = [
    (Item.status == "RUNNING", {"type": "AND", "items": [("status", "EQUALS", "RUNNING")]}),
    (Item.status != "NEW", {"type": "AND", "items": [("status", "NOT_EQUALS", "NEW")]}),
    (Item.size < 3, {"type": "AND", "items": [("size", OP.LT, 3)]}),
    (Item.size > 3, {"type": "AND", "items": [("size", OP.GT, 3)]}),
    (Item.size <= 3, {"type": "AND", "items": [("size", OP.LE, 3)]}),
    (Item.size >= 3, {"type": "AND", "items": [("size", OP.GE, 3)]}),
    (Item.status.in_(["NEW", "RUNNING"]), {"type": W.AND, "items": [("status", OP.IN, ["NEW", "RUNNING"])]}),
    (Item.name.contains("prod", case=False), {"type": "AND", "items": [("name", "CONTAINS", "prod", False)]}),
    (Item.name.eq("Prod", case=False), {"type": "AND", "items": [("name", "EQUALS", "Prod", False)]}),
    (Item.tags.contains("gold"), {"type": "AND", "items": [("tags", "CONTAINS", "gold")]}),
    (Item.note.is_(None), {"type": "AND", "items": [("note", "EQUALS", None)]}),
    (Item.note.is_not(None), {"type": "AND", "items": [("note", "NOT_EQUALS", None)]}),
    (Item.kind.code == "k1", {"type": "AND", "items": [("kind.code", "EQUALS", "k1")]}),
    (Item.kind.site.name == "s", {"type": "AND", "items": [("kind.site.name", "EQUALS", "s")]}),
    (Item.kind_guid.is_(None), {"type": "AND", "items": [("kind_guid", "EQUALS", None)]}),
    ((Item.status == "NEW") | (Item.size > 2),
     {"type": "OR", "items": [("status", "EQUALS", "NEW"), ("size", "GT", 2)]}),
    ((Item.status == "NEW") & (Item.size > 2) & (Item.flag == True),  # noqa: E712 -- builds a condition
     {"type": "AND", "items": [("status", "EQUALS", "NEW"), ("size", "GT", 2), ("flag", "EQUALS", True)]}),
    ((Item.status == "NEW") & ((Item.size > 2) | Item.name.contains("x")),
     {"type": "AND", "items": [("status", "EQUALS", "NEW"),
                               {"type": "OR", "items": [("size", "GT", 2), ("name", "CONTAINS", "x")]}]}),
]


@pytest.mark.parametrize(("built", "written"), FORMS, ids=[repr(form[1]["items"][0])[:40] for form in FORMS])
def test_the_builder_builds_the_hand_written_grammar(built: Where, written: dict[str, Any]) -> None:
    assert built.grammar() == written
    assert compile_query(Item._meta, built.grammar()) == compile_query(Item._meta, written)
    assert digest(Item._meta, compile_query(Item._meta, built.grammar())) == \
        digest(Item._meta, compile_query(Item._meta, written))  # the same cached result


def test_where_joins_its_conditions_with_and() -> None:
    assert where() is None
    assert where(Item.status == "NEW", Item.size > 1) == {
        "type": "AND", "items": [("status", "EQUALS", "NEW"), ("size", "GT", 1)]}
    assert where((Item.status == "NEW") | (Item.size > 1)) == {
        "type": "OR", "items": [("status", "EQUALS", "NEW"), ("size", "GT", 1)]}


def test_repr_shows_the_grammar() -> None:
    assert repr(Item.status == "NEW") == "<where ('status', 'EQUALS', 'NEW')>"
    assert repr((Item.status == "NEW") | (Item.size > 1)) == \
        "<where {'type': 'OR', 'items': [('status', 'EQUALS', 'NEW'), ('size', 'GT', 1)]}>"


def test_the_class_reads_fields_as_expressions_and_objects_as_values(context: Context) -> None:
    assert isinstance(Item.status, FieldExpression) and isinstance(Item.guid, FieldExpression)
    assert Item.status.indexed and Item.status.owner is Item  # it reads as the spec it stands for
    assert Item.kind.foreign_key == "items" and Item.kind.code.indexed  # a relation's spec, then its target's
    kind = Kind(code="k1")
    kind.save()
    item = Item(name="a", kind=kind)
    item.save()
    assert item.status == "NEW" and item.kind == kind  # objects read values, as before
    with pytest.raises(TypeError, match="not a truth value"):
        bool(Item.status == "NEW")
    with pytest.raises(TypeError, match="can only join query conditions"):
        (Item.status == "NEW") & True  # type: ignore[operator]


def test_the_plan_and_the_results_are_the_same(context: Context) -> None:
    kind = Kind(code="k1")
    kind.save()
    for number in range(4):
        Item(name=f"Prod-{number}", size=number, kind=kind, status="RUNNING" if number % 2 else "NEW").save()
    built = Item.where(Item.status == "RUNNING", Item.name.contains("prod", case=False),
                       Item.kind.code == "k1")
    written = DataList(Item, {"type": "AND", "items": [("status", "EQUALS", "RUNNING"),
                                                       ("name", "CONTAINS", "prod", False),
                                                       ("kind.code", "EQUALS", "k1")]})
    assert sorted(built.guids) == sorted(written.guids) and len(built) == 2
    assert str(built.explain()).splitlines()[0] == str(written.explain()).splitlines()[0]
    assert DataList(Item, Item.status == "NEW").count() == 2  # a DataList takes a builder too


NAMES = st.sampled_from(["status", "name", "size", "note"])
VALUES = st.one_of(st.none(), st.integers(-5, 5), st.text(max_size=4))
OPERATORS = st.sampled_from(["EQUALS", "NOT_EQUALS", "LT", "GT", "LE", "GE", "IN", "CONTAINS"])


def _leaf(field: str, operator: str, value: Any, case: bool) -> tuple[Condition, tuple[Any, ...]]:
    expression: FieldExpression = getattr(Item, field)
    value = [value] if operator == "IN" else value
    methods = {"EQUALS": expression.eq, "NOT_EQUALS": expression.ne, "IN": expression.in_,
               "CONTAINS": expression.contains}
    if operator in methods:
        built = methods[operator](value, case=case)
        return built, (field, operator, value) if case else (field, operator, value, False)
    compare = {"LT": expression.__lt__, "GT": expression.__gt__,
               "LE": expression.__le__, "GE": expression.__ge__}
    return compare[operator](value), (field, operator, value)


@st.composite
def trees(draw: st.DrawFn, depth: int = 2) -> tuple[Where, Any]:
    if depth == 0 or draw(st.booleans()):
        return _leaf(draw(NAMES), draw(OPERATORS), draw(VALUES), draw(st.booleans()))
    kind = draw(st.sampled_from(["AND", "OR"]))
    parts = draw(st.lists(trees(depth - 1), min_size=2, max_size=3))
    built = parts[0][0]
    items: list[Any] = []
    for part, grammar in parts:
        if isinstance(part, Condition):
            items.append(grammar)
        elif getattr(part, "kind", None) == kind:  # a group of the same kind is flattened into this one
            items.extend(grammar["items"])
        else:
            items.append(grammar)
    for part, _ in parts[1:]:
        built = (built & part) if kind == "AND" else (built | part)
    return built, {"type": kind, "items": items}


@given(trees())
def test_any_tree_builds_its_grammar(tree: tuple[Where, Any]) -> None:
    built, expected = tree
    wanted = expected if isinstance(expected, dict) else {"type": "AND", "items": [expected]}
    assert built.grammar() == wanted


@pytest.mark.parametrize("case", ["no", "false", 0, 1, None, ""])
@pytest.mark.parametrize("method", ["eq", "ne", "in_", "contains"])
def test_case_is_refused_unless_a_bool_as_the_grammar_refuses_it(method: str, case: Any) -> None:
    """``case='no'`` ran case-sensitive and ``case=0`` insensitive (truthiness); the grammar refuses both."""
    value: Any = ["x"] if method == "in_" else "x"
    with pytest.raises(InvalidQueryError, match=r"Item\.name: case must be True or False .*not "):
        getattr(Item.name, method)(value, case=case)
    with pytest.raises(InvalidQueryError, match="case_sensitive must be True or False"):
        compile_query(Item._meta, {"type": "AND", "items": [("name", "EQUALS", "x", case)]})


@pytest.mark.parametrize(("build", "message"), [
    (lambda: Item.kind.cdoe, r"Item\.kind\.cdoe: Kind has no field 'cdoe'\. Fields: guid, properties \(code"),
    (lambda: Item.kind.site.nmae, r"Site has no field 'nmae'"),
    (lambda: Item.kind.items, r"Kind\.items is a reverse relation, .* query Item instead"),
    (lambda: Item.tags.size, r"Item\.tags is a property, not a relation .* walks relations only"),
    (lambda: Item.double.value, r"Item\.double is a dynamic, not a relation"),
    (lambda: Item.kind_guid.code, r"Item\.kind_guid is a guid, not a relation"),
    (lambda: Item.guid.code, r"Item\.guid is a guid, not a relation"),
], ids=["typo", "typo-2-hops", "reverse", "in-a-property", "in-a-dynamic", "relation-guid", "guid"])
def test_a_path_to_no_field_is_an_invalid_query_and_an_attribute_error(build: Any, message: str) -> None:
    """A typo after a relation, a name inside a property and a reverse relation raised a plain
    AttributeError naming dal's spec class (the grammar: InvalidQueryError); both, now, so hasattr works."""
    with pytest.raises(InvalidQueryError, match=message) as raised:
        build()
    assert isinstance(raised.value, AttributeError)
    assert not hasattr(Item.kind, "cdoe") and getattr(Item.tags, "size", None) is None
    assert Item.kind.foreign_key == "items" and Item.kind.code.indexed  # the spec's own attributes still read


def test_a_reverse_accessor_compared_as_a_field_says_it_is_none() -> None:
    """``Kind.items.name == 'x'`` compares the accessor's own name with 'x': False, refused saying why."""
    with pytest.raises(NotAConditionError, match=r"not False, .*reverse accessor .* is not a field"):
        Kind.where(Kind.items.name == "x")


@pytest.mark.parametrize("name", ["name", "doc", "owner", "qualified", "guid_field"])
def test_a_name_the_target_lacks_is_no_field_though_the_relation_spec_has_it(name: str) -> None:
    """``Item.kind.name`` (Kind has no ``name``) read the Relation spec's ``name``, 'kind': the comparison
    was a bool, refused as a reverse accessor; the grammar said Kind has no field 'name'."""
    with pytest.raises(NoSuchFieldError, match=rf"Item\.kind\.{name}: Kind has no field '{name}'\. Fields:"):
        getattr(Item.kind, name)
    assert not hasattr(Item.kind, name)
    with pytest.raises(InvalidQueryError, match=f"Kind has no field '{name}'"):
        compile_query(Item._meta, {"type": "AND", "items": [(f"kind.{name}", "EQUALS", "x")]})
    # the target's fields first, then the relation's own settings; a property still reads its spec
    assert Item.kind.code.indexed and Item.kind.site.name.name == "name"  # Site has a name
    assert (Item.kind.foreign_key, Item.kind.foreign_type, Item.kind.mandatory, Item.kind.onetoone,
            Item.kind.target) == ("items", Kind, False, False, Kind) and Item.name.name == "name"
    assert Item.kind_guid.foreign_key == "items"  # a relation's guid is no path into its target


def test_a_comparison_of_no_field_says_one_side_was_no_field_expression() -> None:
    """A bool where a condition belongs was blamed on a reverse accessor, whatever gave it."""
    with pytest.raises(NotAConditionError, match=r"not False, .*one side was no field expression"):
        Item.where(Item.kind.foreign_key == "box")
