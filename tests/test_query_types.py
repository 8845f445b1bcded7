"""Queries on fields declared the ways pydantic spells types (``Annotated``, ``constr``, ``conlist``,
``Literal``, fixed-shape tuples) answer as on their plain forms; malformed queries, sort keys and
pages, and stored documents that are not JSON objects, raise dal's typed errors."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal
from enum import Enum
from typing import Annotated, Any, Literal

import pytest
from hybrids import Gadget
from pydantic import Field, HttpUrl, conlist, constr

from dal import DataList, DataObject, Property, Relation
from dal.backends.base import Put
from dal.config import Context
from dal.exceptions import BackendError, InvalidQueryError
from dal.model.expressions import MAX_DEPTH
from dal.query.grammar import compile_query

PLUS2 = dt.timezone(dt.timedelta(hours=2))
NINE_UTC = dt.datetime(2024, 1, 1, 9, 0, tzinfo=dt.timezone.utc)


class Spelled(DataObject, hybrid_name="qtspelled"):
    """Each field a type pydantic users write, wrapped in ``Annotated`` or not."""

    __properties: list[Property[Any]] = [
        Property("code", constr(max_length=20), mandatory=False),
        Property("tags", conlist(str, max_length=5), default=[], mandatory=False),
        Property("kind", Literal["alpha", "beta"], mandatory=False),
        Property("bag", frozenset, mandatory=False),
        Property("pair", tuple[int, str], mandatory=False),
        Property("mixed", tuple[float, int], mandatory=False),
        Property("at", Annotated[dt.datetime | None, Field(description="when")], mandatory=False),
        Property("price", Annotated[Decimal | None, Field(description="how much")], mandatory=False)]


class Holder(DataObject, hybrid_name="qtholder"):
    """Reaches Spelled through a relation: a path's documents are decoded per batch."""

    __properties: list[Property[Any]] = [Property("name", str)]
    __relations = [Relation("spelled", Spelled, "holders", mandatory=False)]


def count(*item: Any) -> int:
    return len(DataList(Spelled, {"items": [item]}))


def test_contains_and_ranges_work_on_annotated_and_constrained_fields(context: Context) -> None:
    Spelled(data={"code": "disk-12", "tags": ["gold"], "kind": "alpha", "bag": frozenset({1}),
                  "pair": (1, "x"), "mixed": (3.0, 4),
                  "at": dt.datetime(2024, 1, 1, 10, 0, tzinfo=PLUS2),  # 08:00 UTC
                  "price": Decimal("10")}).save()
    assert count("code", "CONTAINS", "disk") == 1
    assert count("tags", "CONTAINS", "gold") == 1 and count("tags", "CONTAINS", "iron") == 0
    assert count("kind", "CONTAINS", "alp") == 1
    assert count("bag", "CONTAINS", 1) == 1 and count("bag", "CONTAINS", 2) == 0
    assert count("pair", "CONTAINS", "x") == 1 and count("pair", "CONTAINS", 1) == 1
    assert count("pair", "CONTAINS", "1") == 0  # the str element '1': an int place takes no text
    # 3 is 3.0 in the float place and 3 in the int place (dal tells 3 from 3.0): either is contained
    assert count("mixed", "CONTAINS", 3) == 1 and count("mixed", "CONTAINS", 4) == 1
    # 4.0 is no int (strict, as an assignment): only the float place takes it, which holds 3.0
    assert count("mixed", "CONTAINS", 4.0) == 0 and count("mixed", "CONTAINS", 5) == 0
    # ordered as values: the instant (its text, '10:00+02:00', is after '09:00Z'), the number ('10' < '9')
    assert count("at", "LT", NINE_UTC) == 1 and count("at", "GT", NINE_UTC) == 0
    assert count("price", "LT", Decimal("9")) == 0 and count("price", "GT", Decimal("9")) == 1


def test_contains_refuses_an_element_no_element_type_takes() -> None:
    with pytest.raises(InvalidQueryError, match=r"Spelled\.pair holds int or str elements"):
        compile_query(Spelled._meta, {"items": [("pair", "CONTAINS", 2.5)]})
    with pytest.raises(InvalidQueryError, match=r"Spelled\.code is a string; CONTAINS on it takes a"):
        compile_query(Spelled._meta, {"items": [("code", "CONTAINS", 1)]})


@pytest.mark.parametrize("query", [{1: "x", "items": []}, {("a",): 1, "items": []}])
def test_a_query_with_keys_that_are_not_strings_is_refused_typed(query: Any) -> None:
    with pytest.raises(InvalidQueryError, match="query has keys"):
        compile_query(Spelled._meta, query)


def _nested(depth: int) -> dict[str, Any]:
    query: dict[str, Any] = {"items": [("code", "EQUALS", "a")]}
    for _ in range(depth - 1):
        query = {"type": "OR", "items": [query, ("code", "EQUALS", "b")]}
    return query


def test_groups_nested_too_deeply_are_refused_typed() -> None:
    for depth in (MAX_DEPTH + 1, 1200):  # 1200: beyond Python's recursion limit, once a RecursionError
        with pytest.raises(InvalidQueryError, match="flatten the query"):
            compile_query(Spelled._meta, _nested(depth))


def test_a_built_query_nested_too_deeply_is_refused_typed_as_it_is_built() -> None:
    built = Spelled.code == "a"
    for number in range(MAX_DEPTH // 2 - 1):  # alternating | and &: two groups deeper each round
        built = (built | (Spelled.code == str(number))) & (Spelled.kind == "alpha")
    assert compile_query(Spelled._meta, built.grammar())
    with pytest.raises(InvalidQueryError, match="flatten it"):
        for _ in range(400):  # far past Python's recursion limit, unless refused first
            built = (built | (Spelled.code == "x")) & (Spelled.kind == "alpha")


def test_a_query_nested_to_the_limit_runs_on_every_path(context: Context) -> None:
    """Validated, planned, filtered, cached and explained within Python's recursion limit."""
    Spelled(data={"code": "b"}).save()
    deepest = _nested(MAX_DEPTH)
    found = DataList(Spelled, deepest)
    assert len(found) == 1 and "code" in str(found.explain())
    assert len(DataList(Spelled, deepest)) == 1  # the result cached, read back


@pytest.mark.parametrize("key", [[], (), b"code", bytearray(b"code")])
def test_an_empty_or_bytes_sort_key_is_refused_typed(context: Context, key: Any) -> None:
    Spelled(data={"code": "a"}).save()
    with pytest.raises(InvalidQueryError, match="a non-empty list of field names"):
        DataList(Spelled).sort(key=key)


@pytest.mark.parametrize(("number", "size"), [(True, 2), (1, True), (False, 1)])
def test_a_page_number_or_size_given_as_a_boolean_is_refused(number: Any, size: Any) -> None:
    with pytest.raises(InvalidQueryError, match="the number counts from 1"):
        DataList(Spelled, guids=[]).page(number, size)


@pytest.mark.parametrize("stored", [b"{not json", b"[1]"])
def test_a_stored_document_that_is_not_a_json_object_is_a_backend_error(context: Context,
                                                                        stored: bytes) -> None:
    """Scanned, or reached through a path: the same typed error, naming the object and `dal check`."""
    spelled = Spelled(data={"code": "a"})
    spelled.save()
    Holder(data={"name": "h", "spelled": spelled}).save()
    assert context.persistent.commit([], [Put(context.keys.doc("qtspelled", spelled.guid), stored)]).ok
    context.volatile.delete(context.keys.cached_doc("qtspelled", spelled.guid))  # read from the store
    named = f"Spelled {spelled.guid} is not a JSON object .* run `dal check`"
    with pytest.raises(BackendError, match=named):
        DataList(Spelled, {"items": [("code", "EQUALS", "a")]}).count()
    with pytest.raises(BackendError, match=named):
        DataList(Holder, {"items": [("spelled.code", "EQUALS", "a")]}).count()


class Linked(DataObject, hybrid_name="qtlinked"):
    """Types pydantic stores as JSON strings: a URL, a UUID; and a datetime, whose text is no words."""

    __properties: list[Property[Any]] = [Property("url", HttpUrl, mandatory=False),
                                         Property("ref", uuid.UUID, mandatory=False),
                                         Property("at", dt.datetime, mandatory=False)]


def test_contains_takes_a_substring_of_a_type_stored_as_text(context: Context) -> None:
    Linked(data={"url": "https://example.org/path", "ref": uuid.UUID(int=5)}).save()

    def found(*item: Any) -> int:
        return len(DataList(Linked, {"items": [item]}))

    assert found("url", "CONTAINS", "example.org") == 1 and found("url", "CONTAINS", "nowhere") == 0
    assert found("ref", "CONTAINS", "0005") == 1
    with pytest.raises(InvalidQueryError, match=r"Linked\.url is stored as text; CONTAINS on it takes a"):
        compile_query(Linked._meta, {"items": [("url", "CONTAINS", 5)]})
    with pytest.raises(InvalidQueryError, match="not a string or a list"):  # compare a time with LT/GT
        compile_query(Linked._meta, {"items": [("at", "CONTAINS", "2024")]})


def test_contains_on_a_union_of_text_and_other_types_is_refused() -> None:
    """docs/queries.md: a union that may hold text and numbers is not text (`str | None` is)."""
    with pytest.raises(InvalidQueryError, match="not a string or a list"):
        compile_query(Gadget._meta, {"items": [("token", "CONTAINS", "gold")]})
    compile_query(Gadget._meta, {"items": [("label", "CONTAINS", "gold")]})  # str, not mandatory


class Shade(str, Enum):
    RED = "Red"
    BLUE = "Blue"


class Lamp(DataObject, hybrid_name="qtlamp"):
    """String enums of each kind: a list of allowed values (indexed), a Literal, an Enum."""

    __properties: list[Property[Any]] = [Property("status", ["OK", "FAILED"], indexed=True),
                                         Property("mode", Literal["Alpha", "Beta"], default="Alpha"),
                                         Property("shade", Shade, default=Shade.RED)]


def test_a_string_enum_compared_case_insensitively_takes_any_spelling(context: Context) -> None:
    """`False` compares strings case-insensitively: on a string enum, 'ok' finds a stored 'OK' (it was
    refused as no allowed value); a value no allowed value spells, or another case compared
    case-sensitively, is still refused."""
    lamp = Lamp(data={"status": "OK"})
    lamp.save()
    Lamp(data={"status": "FAILED", "mode": "Beta", "shade": Shade.BLUE}).save()
    for condition in [("status", "EQUALS", "ok", False), ("status", "IN", ["oK"], False),
                      ("mode", "EQUALS", "ALPHA", False), ("shade", "EQUALS", "RED", False),
                      ("shade", "IN", ["red"], False)]:
        assert [obj.guid for obj in DataList(Lamp, {"type": "AND", "items": [condition]})] == [lamp.guid]
    assert len(DataList(Lamp, {"type": "AND", "items": [("status", "NOT_EQUALS", "failed", False)]})) == 1
    for refused in [("status", "EQUALS", "ok", True), ("status", "EQUALS", "okay", False),
                    ("mode", "EQUALS", "ALPHA"), ("status", "IN", ["ok", "bad"], False)]:
        with pytest.raises(InvalidQueryError, match="the value does not fit the field"):
            DataList(Lamp, {"type": "AND", "items": [refused]})
