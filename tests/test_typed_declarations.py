"""Declarations and conditions the typed API took without a word, and now reads or refuses.

- Fields declared on an ``abstract=True`` base (annotated or listed) are inherited by the hybrids
  deriving from it, as a dataclass base's fields are (and as type checkers already believed through
  ``dataclass_transform``); they were silently dropped.
- A condition built on another hybrid's field (``Store.where(Kind.name == 'x')``) is refused with
  ``InvalidQueryError``; it silently filtered the queried hybrid's field of the same name.
- A relation annotated ``Optional["Target"]`` (a ``typing.ForwardRef``) names its target; an
  annotation that cannot be evaluated (``"Target" | None`` under ``from __future__ import
  annotations``) raises ``ConfigurationError`` naming the field, not a bare ``TypeError``.
- A field named like its type (``date: date = Property()``, ``list: list[str]``) raises
  ``ConfigurationError`` saying the field's name hides the type in the class body, and how to spell
  it; dal read the spec as the type (``InvalidValueError``) or advised a quoting that failed too.
- ``Cls.where()``, ``&`` and ``|`` given something that is not a condition raise an
  ``InvalidQueryError`` that is also a ``TypeError``.
"""

from __future__ import annotations

import datetime
import re
from datetime import date
from typing import Any, Literal, Optional

import pydantic
import pytest

from dal import DataList, DataObject, Dynamic, Property, Relation, TypedObject
from dal.config import Context
from dal.exceptions import ConfigurationError, DalError, InvalidQueryError, InvalidValueError
from dal.model.registry import hybrids


class Named(TypedObject, abstract=True):
    """An abstract base declaring fields by annotation."""

    name: str = Property(unique=True)
    rank: int = Dynamic(timeout=5)

    def _rank(self) -> int:
        return len(self.name)


class Tool(Named, hybrid_name="tdtool"):
    size: int = Property(mandatory=False)


class Gadget(Named, hybrid_name="tdgadget"):
    weight: float = Property(mandatory=False)


class ListNamed(DataObject, abstract=True):
    """An abstract base declaring fields in the lists."""

    __properties: list[Property[Any]] = [Property("name", str, unique=True)]


class ListTool(ListNamed, hybrid_name="tdlisttool"):
    __properties: list[Property[Any]] = [Property("size", int, mandatory=False)]


class Parent(TypedObject, hybrid_name="tdparent"):
    title: str = Property()


class Middle(Parent, abstract=True):
    """An abstract class between two hybrids: the leaf gets the parent's fields and its own."""

    extra: int = Property(mandatory=False)


class Leaf(Middle, hybrid_name="tdleaf"):
    more: str = Property(mandatory=False)


class TdKind(TypedObject, hybrid_name="tdkind"):
    name: str = Property()


class TdStore(TypedObject, hybrid_name="tdstore"):
    name: str = Property()
    kind: TdKind | None = Relation(foreign_key="stores", mandatory=False)


class TdBase(TypedObject, hybrid_name="tdbase"):
    name: str = Property()


class TdChild(TdBase, hybrid_name="tdchild"):
    extra: int = Property(mandatory=False)


# --- abstract bases -------------------------------------------------------------------------------


def test_an_abstract_base_s_annotated_fields_are_inherited() -> None:
    assert list(Tool._meta.properties) == ["name", "size"]
    assert list(Tool._meta.dynamics) == ["rank"]
    assert Tool._meta.properties["name"].unique and Tool._meta.properties["name"].owner is Tool
    tool = Tool(name="x", size=2)
    assert (tool.name, tool.size, tool.rank) == ("x", 2, 1)


def test_each_hybrid_of_an_abstract_base_has_its_own_copy_of_the_specs() -> None:
    assert list(Gadget._meta.properties) == ["name", "weight"]
    assert Gadget._meta.properties["name"] is not Tool._meta.properties["name"]
    assert Gadget._meta.properties["name"].owner is Gadget


def test_an_abstract_base_s_listed_fields_are_inherited() -> None:
    assert list(ListTool._meta.properties) == ["name", "size"]
    assert ListTool(data={"name": "x"}).name == "x"


def test_an_abstract_class_between_hybrids_passes_on_both() -> None:
    assert list(Leaf._meta.properties) == ["title", "extra", "more"]
    assert Leaf(title="t", extra=1, more="m").extra == 1
    assert "_meta" not in vars(Middle)  # not a hybrid itself
    assert hybrids.get("tdleaf") is Leaf


def test_an_abstract_base_s_misplaced_specs_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="__propertys"):
        class Misspelled(DataObject, abstract=True):
            __propertys: list[Property[Any]] = [Property("name", str)]


def test_a_hybrid_of_an_abstract_base_is_stored_and_queried(local: Context) -> None:
    Tool(name="hammer", size=3).save()
    assert Tool.get_by(name="hammer").size == 3
    assert Tool.where(Tool.name == "hammer").count() == 1


class Owned(TypedObject, abstract=True):
    kind: TdKind | None = Relation(foreign_key="owned_a", mandatory=False)


class OwnedA(Owned, hybrid_name="tdowneda"):
    pass


def test_a_relation_of_an_abstract_base_names_one_reverse_accessor() -> None:
    assert TdKind._meta.reverse["owned_a"].source is OwnedA
    with pytest.raises(ConfigurationError, match="both name the reverse accessor"):
        class OwnedClash(Owned, hybrid_name="tdownedclash"):
            pass

    class OwnedB(Owned, hybrid_name="tdownedb"):  # the relation redeclared with an accessor of its own
        kind: TdKind | None = Relation(foreign_key="owned_b", mandatory=False)

    assert TdKind._meta.reverse["owned_b"].source is OwnedB


# --- conditions on another hybrid -----------------------------------------------------------------


def test_a_condition_on_another_hybrid_s_field_is_refused() -> None:
    with pytest.raises(InvalidQueryError, match=r"TdKind.*TdStore\.kind\.name"):
        TdStore.where(TdKind.name == "ALBA")
    with pytest.raises(InvalidQueryError, match="TdKind"):
        TdStore.where((TdStore.name == "a") | (TdKind.name == "b"))
    with pytest.raises(InvalidQueryError, match="TdKind"):
        TdStore.where(TdStore.name == "a", TdKind.guid == "0e5c1f6a-1b2c-4a1b-8c9d-0123456789ab")
    with pytest.raises(InvalidQueryError, match="TdKind"):
        DataList(TdStore, TdKind.name == "ALBA")


def test_a_condition_through_the_relation_runs(local: Context) -> None:
    alba = TdKind(name="ALBA")
    alba.save()
    ceph = TdKind(name="CEPH")
    ceph.save()
    TdStore(name="prod", kind=alba).save()
    TdStore(name="ALBA", kind=ceph).save()
    assert [store.name for store in TdStore.where(TdStore.kind.name == "ALBA")] == ["prod"]
    assert [store.name for store in DataList(TdStore, TdStore.kind.name == "ALBA")] == ["prod"]


def test_a_parent_s_condition_queries_a_subclass_but_not_the_other_way(local: Context) -> None:
    TdChild(name="c1", extra=1).save()
    assert TdChild.where(TdBase.name == "c1").count() == 1  # the child's field is the parent's
    with pytest.raises(InvalidQueryError, match="TdChild"):
        TdBase.where(TdChild.name == "c1")  # written about children, would select parents


# --- forward references ---------------------------------------------------------------------------


def test_an_optional_forward_reference_names_the_target() -> None:
    later = type("TdLaterStore", (TypedObject,), {
        "__module__": __name__, "__annotations__": {"kind": Optional["TdLaterKind"]},  # noqa: F821
        "kind": Relation(foreign_key="later_stores", mandatory=False)})
    assert later._meta.relations["kind"].foreign_type == "TdLaterKind"
    target = type("TdLaterKind", (TypedObject,), {"__module__": __name__})
    assert later._meta.relations["kind"].target is target
    known = type("TdKnownStore", (TypedObject,), {
        "__module__": __name__, "__annotations__": {"kind": Optional["TdKind"]},
        "kind": Relation(foreign_key="known_stores", mandatory=False)})
    assert known._meta.relations["kind"].target is TdKind


def test_an_optional_forward_reference_to_itself_is_a_self_relation() -> None:
    node = type("TdNode", (TypedObject,), {
        "__module__": __name__, "__annotations__": {"parent": Optional["TdNode"]},  # noqa: F821
        "parent": Relation(foreign_key="children", mandatory=False)})
    assert node._meta.relations["parent"].target is node


def test_a_string_annotation_evaluating_to_optional_forward_reference() -> None:
    class TdStringStore(TypedObject, hybrid_name="tdstringstore"):  # this module's annotations are strings
        kind: Optional["TdKind"] = Relation(foreign_key="string_stores", mandatory=False)  # noqa: UP045, UP037

    assert TdStringStore._meta.relations["kind"].target is TdKind


def test_an_annotation_that_cannot_be_evaluated_names_the_field() -> None:
    with pytest.raises(ConfigurationError, match=r"TdBroken\.kind.*\"TdKind \| None\"") as raised:
        class TdBroken(TypedObject, hybrid_name="tdbroken"):
            kind: "TdKind" | None = Relation(foreign_key="broken", mandatory=False)  # type: ignore[operator]  # noqa: UP037
    assert isinstance(raised.value.__cause__, TypeError)


# --- a field named like its type ------------------------------------------------------------------


@pytest.mark.parametrize("annotation", ["date", "date | None", "Optional[date]", "'date | None'"])
def test_a_field_named_like_its_type_is_refused_with_the_spelling_to_use(annotation: str) -> None:
    """In the class body the name is the field's spec: it was read as the type ("type Property() cannot be
    validated"), or the error advised quoting the annotation, which then "named nothing defined"."""
    with pytest.raises(ConfigurationError, match=r"TdEvent\.date: the annotation .* names 'date', which in "
                                                 r"the class body is the field TdEvent\.date itself .*"
                                                 r"`datetime\.date`.*`from datetime import date as Date`"):
        type("TdEvent", (TypedObject,), {"__module__": __name__, "__annotations__": {"date": annotation},
                                         "date": Property(mandatory=False)})
    spec = Property(mandatory=False)
    for evaluated in (spec, Optional[spec]):  # evaluated by Python (no __future__ import)  # noqa: UP045
        with pytest.raises(ConfigurationError, match=r"TdEvent\.date: the annotation names 'date'"):
            type("TdEvent", (TypedObject,), {"__module__": __name__, "__annotations__": {"date": evaluated},
                                             "date": spec})
    with pytest.raises(ConfigurationError, match=r"TdBag\.list: the annotation 'list\[str\]' names 'list'.*"
                                                 r"`builtins\.list`"):
        type("TdBag", (TypedObject,), {"__module__": __name__, "__annotations__": {"list": "list[str]"},
                                       "list": Property(default=[])})


def test_a_field_named_like_its_type_takes_it_spelled_another_way() -> None:
    class TdDated(TypedObject, hybrid_name="tddated"):
        date: datetime.date | None = Property(mandatory=False)
        kind: Literal["date", "day"] = Property(mandatory=False)  # a string value is no name

    properties = TdDated._meta.properties
    assert properties["date"].property_type is datetime.date
    assert properties["kind"].property_type == ["date", "day"]
    with pytest.raises(ConfigurationError, match=r"TdDay\.day: .* the field TdDay\.date itself"):
        class TdDay(TypedObject, hybrid_name="tdday"):  # another field's name hides the type as well
            date: datetime.date | None = Property(mandatory=False)
            day: date | None = Property(mandatory=False)


# --- not a condition --------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [
    lambda: TdStore.where(TdStore.name),  # type: ignore[arg-type]
    lambda: TdStore.where([TdStore.name == "a"]),  # type: ignore[arg-type]
    lambda: TdStore.where(TdStore(name="a").name == "a"),  # an object's value, not the class's field
    lambda: (TdStore.name == "a") | True,  # type: ignore[operator]
    lambda: (TdStore.name == "a") & "x",  # type: ignore[operator]
], ids=["field", "list", "object", "or", "and"])
def test_what_is_not_a_condition_is_an_invalid_query_and_a_type_error(make: Any) -> None:
    with pytest.raises(InvalidQueryError, match="can only join query conditions") as raised:
        make()
    assert isinstance(raised.value, TypeError) and isinstance(raised.value, DalError)


def test_an_abstract_base_given_a_hybrid_name_is_refused() -> None:
    """It would name nothing: an abstract base stores no object."""
    with pytest.raises(ConfigurationError, match=r"abstract=True.*hybrid_name='named'"):
        class NamedBase(DataObject, abstract=True, hybrid_name="named"):
            pass


@pytest.mark.parametrize("declared", ["datetime", "NoSuchType", "list[NoSuchType]"])
def test_a_type_named_by_a_string_pydantic_cannot_resolve_is_refused_when_declared(declared: str) -> None:
    """Declared as a string, a type pydantic cannot resolve built a validator it never completes: every
    assignment then raised pydantic's PydanticUserError, no DalError. It is refused when declared."""
    with pytest.raises(InvalidValueError, match=re.escape(f"type {declared!r} names a type pydantic cannot "
                                                          "find; pass the type itself")):
        Property("when", declared)
    assert Property("count", "int").validator is not None  # a name pydantic knows is taken


def test_a_model_whose_forward_reference_is_resolved_later_is_taken() -> None:
    """A model naming a type declared after it is incomplete until ``model_rebuild()``: passed itself, not as
    a string, it is taken when declared (pydantic completes it at its first use), as it was before the
    refusal of unresolvable strings."""
    class Late(pydantic.BaseModel):
        after: After | None = None

    prop = Property("late", Late)

    class After(pydantic.BaseModel):
        x: int

    Late.model_rebuild(_types_namespace={"After": After})
    assert prop.validator(Late(after=After(x=1))) == Late(after=After(x=1))
