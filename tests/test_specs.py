"""The metaclass and value validation: specs, inheritance, names, forward references, defaults."""

from __future__ import annotations

import datetime as dt
import json
import math
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from hybrids import STATUSES, Gadget, Kind, SuperWidget, Widget
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dal
from dal import DataObject, Dynamic, Property, Relation
from dal.exceptions import ConfigurationError, DalError, InvalidValueError
from dal.model.registry import hybrids as registry

# --- strategies ---------------------------------------------------------------------------

json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**53), max_value=2**53),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20))
json_values = st.recursive(
    json_scalars,
    lambda children: st.one_of(st.lists(children, max_size=4),
                               st.dictionaries(st.text(max_size=8), children, max_size=4)),
    max_leaves=12)
json_lists = st.lists(json_values, max_size=5)
json_dicts = st.dictionaries(st.text(max_size=10), json_values, max_size=5)
datetimes = st.one_of(
    st.datetimes(min_value=dt.datetime(1900, 1, 1), max_value=dt.datetime(2200, 1, 1)),
    st.datetimes(min_value=dt.datetime(1900, 1, 1), max_value=dt.datetime(2200, 1, 1),
                 timezones=st.just(dt.timezone.utc)))


def _unique_name(prefix: str) -> str:
    """Return a class name no other test declares (hybrid names are process-wide)."""
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def _declare(name: str, body: dict[str, Any], bases: tuple[type, ...] = (DataObject,), **kw: Any) -> type:
    """Declare a hybrid the way a ``class`` statement would, with name-mangled spec lists."""
    namespace: dict[str, Any] = {"__module__": __name__, "__qualname__": name}
    for key, value in body.items():
        if key in ("properties", "relations", "dynamics"):
            namespace[f"_{name.lstrip('_')}__{key}"] = value
        else:
            namespace[key] = value
    return type(DataObject)(name, bases, namespace, **kw)


@pytest.fixture
def memory_pair(namespace: str) -> Iterator[dal.config.Context]:
    uid = uuid.uuid4().hex[:8]
    yield dal.configure(f"memory://p{uid}", f"memory://v{uid}", namespace=namespace)


# --- the metaclass ------------------------------------------------------------------------


def test_specs_are_collected_into_meta() -> None:
    meta = Widget._meta
    assert meta.name == "widget"
    assert list(meta.properties) == ["name", "count", "ratio", "enabled", "tags", "meta", "status",
                                     "numbers", "created", "serial", "note"]
    assert list(meta.relations) == ["kind", "alt_kind"]
    assert list(meta.dynamics) == ["doubled", "fresh", "spec_name"]
    assert [p.name for p in meta.unique] == ["name", "serial"]
    assert [p.name for p in meta.indexed] == ["name", "count"]
    assert vars(Widget)["name"] is meta.properties["name"]  # the spec is the descriptor
    # read on the class, it is the query builder's field expression, which reads as the spec
    assert repr(Widget.name) == f"<field 'name': {meta.properties['name']!r}>"
    assert Widget.name.owner is Widget


def test_instantiating_does_not_touch_the_class() -> None:
    classes = (Kind, Widget, SuperWidget, Gadget)
    before = {cls: dict(vars(cls)) for cls in classes}
    metas = {cls: (cls._meta, dict(cls._meta.properties), dict(cls._meta.relations)) for cls in classes}
    w = Widget(data={"name": "x", "count": 3})
    SuperWidget()
    Kind()
    Gadget()
    w.tags.append("changed")
    for cls in classes:
        after = dict(vars(cls))
        assert after.keys() == before[cls].keys()
        assert all(after[key] is before[cls][key] for key in after)
        assert (cls._meta, dict(cls._meta.properties), dict(cls._meta.relations)) == metas[cls]


def test_subclass_inherits_and_extends_specs() -> None:
    meta = SuperWidget._meta
    assert meta.name == "superwidget"
    assert list(meta.properties) == [*Widget._meta.properties, "power"]
    assert list(meta.relations) == list(Widget._meta.relations)
    assert list(meta.dynamics) == [*Widget._meta.dynamics, "powered"]
    assert "power" not in Widget._meta.properties and "powered" not in Widget._meta.dynamics
    # inherited specs are bound to the subclass; the parent's stay bound to the parent
    assert SuperWidget.count.owner is SuperWidget
    assert Widget.count.owner is Widget
    s = SuperWidget(data={"name": "s", "count": 2, "power": 3})
    assert (s.count, s.power, s.status, s.tags) == (2, 3, "NEW", [])


def test_error_messages_name_the_class_assigned_to_after_a_subclass_inherits() -> None:
    """Defining SuperWidget must not make Widget's errors talk about SuperWidget."""
    with pytest.raises(InvalidValueError) as parent:
        Widget().count = "x"
    with pytest.raises(InvalidValueError) as child:
        SuperWidget().count = "x"
    assert "SuperWidget.count" in str(child.value)
    assert "Widget.count" in str(parent.value)
    assert "SuperWidget" not in str(parent.value)


def test_dynamic_without_loader_fails_at_class_creation() -> None:
    name = _unique_name("NoLoader")
    with pytest.raises(InvalidValueError, match="_missing"):
        _declare(name, {"properties": [], "dynamics": [Dynamic("missing", int, 10)]})
    assert all(cls.__name__ != name for cls in registry.all())


def test_loader_taking_dynamic_receives_the_spec(memory_pair: dal.config.Context) -> None:
    w = Widget()
    assert w.spec_name == "Widget.spec_name:3600"
    s = SuperWidget()
    assert s.spec_name == "SuperWidget.spec_name:3600"


@pytest.mark.parametrize("bad", ["_private", "with space", "1abc", "", None, 3])
def test_bad_spec_names_raise(bad: Any) -> None:
    with pytest.raises(InvalidValueError):
        Property(bad, str)
    with pytest.raises(InvalidValueError):
        Relation(bad, Kind, "things")
    with pytest.raises(InvalidValueError):
        Relation("thing", Kind, bad)
    with pytest.raises(InvalidValueError):
        Dynamic(bad, int, 1)


@pytest.mark.parametrize("reserved", ["guid", "save", "delete", "export"])
def test_reserved_names_raise(reserved: str) -> None:
    with pytest.raises(InvalidValueError, match=reserved):
        _declare(_unique_name("Reserved"), {"properties": [Property(reserved, str)]})


@pytest.mark.parametrize("name", ["settle", "saved", "document", "plan", "prepare", "load_many",
                                  "data", "raw", "revision", "objects", "extra", "uncertain", "siblings",
                                  "mirror_checked", "meta", "dynamic_names"])
def test_a_dynamic_whose_loader_name_dal_uses_itself_is_refused(name: str) -> None:
    """A loader ``_settle`` would replace the method a save calls (and without one, dal's own method
    would be taken for the loader): refused when the class is made, not broken at the first save."""
    with pytest.raises(InvalidValueError, match=f"loader named _{name}, a name DataObject uses itself"):
        _declare(_unique_name("Clash"), {"dynamics": [Dynamic(name, int, 5)], f"_{name}": lambda self: 1})
    with pytest.raises(InvalidValueError, match=f"_{name}"):
        _declare(_unique_name("Clash"), {"dynamics": [Dynamic(name, int, 5)]})


def test_bad_spec_types_raise() -> None:
    with pytest.raises(InvalidValueError):
        Property("x", object())  # not a type pydantic can validate
    with pytest.raises(InvalidValueError):
        Property("x", [])  # an enum without values
    with pytest.raises(InvalidValueError):
        Property("x", int, default="zero")  # a default of the wrong type
    with pytest.raises(InvalidValueError):
        Relation("x", 42, "xs")  # type: ignore[arg-type]
    for timeout in (-1, "10", True):
        with pytest.raises(InvalidValueError):
            Dynamic("x", int, timeout)  # type: ignore[arg-type]
    with pytest.raises(InvalidValueError):  # a Relation in the properties list
        _declare(_unique_name("Misplaced"), {"properties": [Relation("k", Kind, "misplaced")]})
    with pytest.raises(InvalidValueError):  # one name as a property and a relation
        _declare(_unique_name("Twice"), {"properties": [Property("k", str)],
                                         "relations": [Relation("k", Kind, "twice")]})
    with pytest.raises(InvalidValueError):  # a property shadowing a relation's guid attribute
        _declare(_unique_name("Shadow"), {"properties": [Property("k_guid", str)],
                                          "relations": [Relation("k", Kind, "shadows")]})


@pytest.mark.parametrize(("attribute", "specs", "right"), [
    ("__propertys", [Property("x", int)], "__properties"),
    ("_properties", [Property("x", int)], "__properties"),
    ("properties", (Property("x", int),), "__properties"),
    ("__property", Property("x", int), "__properties"),
    ("x", Property("x", int), "__properties"),  # a spec under its own name, dataclass style
    ("__relation", [Relation("k", Kind, "misspelt")], "__relations"),
    ("relations", [Relation("k", Kind, "misspelt")], "__relations"),
    ("__dynamic", [Dynamic("d", int, 1)], "__dynamics"),
    ("_dynamics", ["not a spec", Dynamic("d", int, 1)], "__dynamics"),
])
def test_specs_under_a_name_dal_does_not_read_are_refused(attribute: str, specs: Any, right: str) -> None:
    name = _unique_name("Misspelt")
    key = f"_{name}{attribute}" if attribute.startswith("__") else attribute  # what `class` would make
    namespace: dict[str, Any] = {"__module__": __name__, "__qualname__": name, key: specs,
                                 "_d": lambda self: 1}
    with pytest.raises(ConfigurationError) as caught:
        type(DataObject)(name, (DataObject,), namespace)
    message = str(caught.value)
    assert attribute in message and f"`{right}" in message and name in message
    with pytest.raises(LookupError):
        registry.get(name)  # nothing registered


def test_class_statement_with_a_misspelt_list_is_refused() -> None:
    with pytest.raises(ConfigurationError, match=r"__propertys.*__properties"):
        class Misspelt(DataObject, hybrid_name=_unique_name("misspelt")):
            __propertys = [Property("name", str)]


def test_specs_in_a_mixin_that_is_not_a_hybrid_are_refused() -> None:
    class Mixin:
        __properties = [Property("colour", str)]

    with pytest.raises(ConfigurationError, match=r"inherits from Mixin(.|\n)*__properties"):
        _declare(_unique_name("Mixed"), {"properties": [Property("x", int)]}, bases=(Mixin, DataObject))


def test_correct_spec_lists_and_other_attributes_are_accepted() -> None:
    """Only specs under an unread name are refused; inherited bound specs and plain data are fine."""
    shared = [Property("x", int, mandatory=False)]
    parent = _declare(_unique_name("Fine"), {"properties": shared, "CHOICES": ["a", "b"], "helper": len})
    child = _declare(_unique_name("FineChild"), {"properties": [Property("y", int, mandatory=False)]},
                     bases=(parent,))
    assert list(child._meta.properties) == ["x", "y"]


# --- value validation -----------------------------------------------------------------------


def test_enum_accepts_only_its_values() -> None:
    w = Widget()
    for status in STATUSES:
        w.status = status
        assert w.status == status
    for bad in ("new", "UNKNOWN", 1, True, b"NEW", ["NEW"]):
        with pytest.raises(InvalidValueError):
            w.status = bad
    assert w.status == STATUSES[-1]  # a rejected value leaves the old one


def test_numeric_enum_does_not_take_bool_for_int() -> None:
    holder = _declare(_unique_name("Levels"), {"properties": [Property("level", [0, 1, 2.5])]})
    obj = holder()
    obj.level = 1
    obj.level = 2.5
    obj.level = 0
    for bad in (True, False, 1.0, 2, "1"):
        with pytest.raises(InvalidValueError):
            obj.level = bad
    assert obj.level == 0 and type(obj.level) is int


def test_none_is_always_assignable() -> None:
    w = Widget()
    for name in Widget._meta.properties:
        setattr(w, name, None)
        assert getattr(w, name) is None
    w.kind = None
    w.kind_guid = None
    assert w.kind is None and w.kind_guid is None


@given(st.integers())
def test_int_accepts_any_int(value: int) -> None:
    w = Widget()
    w.count = value
    assert w.count == value and type(w.count) is int


@given(st.one_of(st.booleans(), st.text(), st.floats(), st.lists(st.integers(), max_size=2)))
def test_int_rejects_everything_else(value: Any) -> None:
    w = Widget()
    with pytest.raises(InvalidValueError):
        w.count = value
    assert w.count == 0


@given(st.one_of(st.integers(), st.floats(allow_nan=False, allow_infinity=False)))
def test_float_accepts_int_and_float(value: float) -> None:
    w = Widget()
    w.ratio = value
    assert w.ratio == float(value) and type(w.ratio) is float


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_float_rejects_what_json_cannot_hold(bad: float) -> None:
    w = Widget()
    with pytest.raises(InvalidValueError):
        w.ratio = bad


@pytest.mark.parametrize("bad", ["0.5", True, [0.5], float])
def test_float_rejects_non_numbers(bad: Any) -> None:
    with pytest.raises(InvalidValueError):
        Widget().ratio = bad


@given(st.text())
def test_str_accepts_any_text(value: str) -> None:
    w = Widget()
    w.name = value
    w.note = value
    assert w.name == value == w.note


@pytest.mark.parametrize("bad", [1, b"bytes", True, ["a"], 1.5])
def test_str_rejects_non_text(bad: Any) -> None:
    with pytest.raises(InvalidValueError):
        Widget().name = bad


@pytest.mark.parametrize("bad", [1, 0, "true", "False", bool])
def test_bool_rejects_non_bools(bad: Any) -> None:
    with pytest.raises(InvalidValueError):
        Widget().enabled = bad


def test_list_and_dict_must_be_json_serializable() -> None:
    w = Widget()
    with pytest.raises(InvalidValueError):
        w.tags = [object()]
    with pytest.raises(InvalidValueError):
        w.meta = {"a": {1, 2}}
    with pytest.raises(InvalidValueError):
        w.tags = ("a", "b")  # a tuple is not a list
    with pytest.raises(InvalidValueError):
        w.meta = [("a", 1)]
    assert w.tags == [] and w.meta == {}


def test_dict_with_non_string_keys_is_rejected_or_round_trips(memory_pair: dal.config.Context) -> None:
    """JSON objects have string keys: {1: 'a'} must not come back as {'1': 'a'} (or lose entries)."""
    k = Kind(data={"name": "k", "code": "k"})
    k.save()
    w = Widget(data={"name": "w", "kind": k})
    try:
        w.meta = {1: "int key", "1": "str key"}
    except InvalidValueError:
        return  # rejected at assignment: fine
    w.save()
    assert Widget(w.guid).meta == {1: "int key", "1": "str key"}


def test_list_of_int() -> None:
    w = Widget()
    w.numbers = [1, 2, 3]
    assert w.numbers == [1, 2, 3]
    for bad in ([1, "2"], [True], [1.5], "123", {1: 1}):
        with pytest.raises(InvalidValueError):
            w.numbers = bad
    assert w.numbers == [1, 2, 3]


def test_datetime_validation() -> None:
    w = Widget()
    now = dt.datetime.now(dt.timezone.utc)
    w.created = now
    assert w.created == now
    for bad in ("2020-01-01T00:00:00", 0, dt.date(2020, 1, 1).isoformat()):
        with pytest.raises(InvalidValueError):
            w.created = bad


def test_union_type_keeps_the_assigned_type() -> None:
    g = Gadget()
    for value in (1, "1", True, "None"):
        g.token = value
        assert g.token == value and type(g.token) is type(value)
    with pytest.raises(InvalidValueError):
        g.token = 1.5


def test_defaults_are_copied_per_object() -> None:
    """The OVS bug: a shared ``default=[]`` mutated through one object showed up in all."""
    first, second = Widget(), Widget()
    first.tags.append("mine")
    first.meta["k"] = "v"
    first.numbers.append(7)
    assert second.tags == [] and second.meta == {} and second.numbers == []
    assert Widget().tags == [] and Widget.tags.default == [] and Widget.meta.default == {}
    assert first.tags is not second.tags
    inherited = SuperWidget()
    assert inherited.tags == [] and inherited.tags is not first.tags


def test_defaults_are_applied() -> None:
    w = Widget()
    assert (w.count, w.ratio, w.enabled, w.status) == (0, 0.5, True, "NEW")
    assert (w.name, w.created, w.serial, w.kind_guid, w.alt_kind_guid) == (None, None, None, None, None)


def test_undeclared_attribute_raises_attribute_error() -> None:
    w = Widget()
    with pytest.raises(AttributeError):
        w.colour = "red"
    with pytest.raises(AttributeError):
        _ = w.colour
    with pytest.raises(AttributeError):
        w.doubled = 3  # a dynamic
    assert "colour" not in w.__dict__


def test_guid_is_read_only_and_a_uuid4() -> None:
    w = Widget()
    assert isinstance(w.guid, str) and uuid.UUID(w.guid).version == 4
    before = w.guid
    with pytest.raises(AttributeError):
        w.guid = str(uuid.uuid4())
    assert w.guid == before
    assert Widget().guid != before


def test_data_validates_like_assignment() -> None:
    k, other = Kind(), str(uuid.uuid4())
    w = Widget(data={"name": "n", "count": 4, "tags": ["a"], "kind": k, "alt_kind_guid": other})
    assert (w.name, w.count, w.tags, w.kind_guid, w.alt_kind_guid) == ("n", 4, ["a"], k.guid, other)
    assert w.kind is k
    with pytest.raises(InvalidValueError):
        Widget(data={"count": "4"})
    with pytest.raises(InvalidValueError):
        Widget(data={"status": "BOGUS"})
    with pytest.raises(InvalidValueError):
        Widget(data={"kind": Widget()})
    for unknown in ("colour", "guid", "doubled", "_data"):
        with pytest.raises((AttributeError, DalError)):
            Widget(data={unknown: 1})


def test_logical_name_and_override() -> None:
    plain = _declare(_unique_name("NamedPlain"), {"properties": [Property("x", int)]})
    assert plain._meta.name == plain.__name__.lower()
    chosen = f"custom_{uuid.uuid4().hex[:8]}"
    custom = _declare(_unique_name("NamedCustom"), {"properties": []}, hybrid_name=chosen)
    assert custom._meta.name == chosen
    assert registry.get(chosen) is custom
    with pytest.raises(ConfigurationError, match=chosen):
        _declare(_unique_name("Thief"), {"properties": []}, hybrid_name=chosen)
    with pytest.raises(ConfigurationError):
        _declare(_unique_name("Thief"), {"properties": []}, hybrid_name=plain._meta.name)
    assert registry.get(chosen) is custom


def test_logical_name_is_not_the_module_path() -> None:
    assert Widget._meta.name == "widget"
    assert registry.get("widget") is Widget
    assert "." not in Widget._meta.name


def test_string_forward_reference_resolves_when_target_is_declared() -> None:
    target_name = _unique_name("Later")
    source = _declare(_unique_name("Early"), {
        "relations": [Relation("later", target_name, "earlies", mandatory=False)]})
    relation = source._meta.relations["later"]
    assert relation.target is None
    assert relation in registry.unresolved()
    target = _declare(target_name, {"properties": [Property("x", int, mandatory=False)]})
    assert relation.target is target
    assert relation not in registry.unresolved()
    obj, other = source(), target()
    obj.later = other
    assert obj.later_guid == other.guid
    with pytest.raises(InvalidValueError):
        obj.later = source()


def test_foreign_type_none_means_self(memory_pair: dal.config.Context) -> None:
    node_cls = _declare(_unique_name("Node"), {
        "properties": [Property("label", str)],
        "relations": [Relation("parent", None, "children", mandatory=False)]})
    assert node_cls._meta.relations["parent"].target is node_cls
    root = node_cls(data={"label": "root"})
    root.save()
    leaf = node_cls(data={"label": "leaf", "parent": root})
    leaf.save()
    loaded = node_cls(leaf.guid)
    assert loaded.parent == root and loaded.parent.label == "root"
    with pytest.raises(InvalidValueError):
        leaf.parent = Kind()


# --- JSON round trips through a store --------------------------------------------------------


def _saved_widget(**values: Any) -> Widget:
    k = Kind(data={"name": "k", "code": uuid.uuid4().hex})
    k.save()
    w = Widget(data={"name": uuid.uuid4().hex, "kind": k, **values})
    w.save()
    return w


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tags=json_lists, meta=json_dicts)
def test_list_and_dict_round_trip(memory_pair: dal.config.Context, tags: list[Any],
                                  meta: dict[str, Any]) -> None:
    w = _saved_widget(tags=tags, meta=meta)
    loaded = Widget(w.guid)
    assert json.dumps(loaded.tags, sort_keys=True) == json.dumps(tags, sort_keys=True)
    assert json.dumps(loaded.meta, sort_keys=True) == json.dumps(meta, sort_keys=True)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(created=datetimes, numbers=st.lists(st.integers(), max_size=6),
       ratio=st.floats(allow_nan=False, allow_infinity=False), note=st.text())
def test_typed_values_round_trip(memory_pair: dal.config.Context, created: dt.datetime,
                                 numbers: list[int], ratio: float, note: str) -> None:
    w = _saved_widget(created=created, numbers=numbers, ratio=ratio, note=note)
    loaded = Widget(w.guid)
    assert loaded.created == created and type(loaded.created) is dt.datetime
    assert loaded.created.tzinfo == created.tzinfo or loaded.created.utcoffset() == created.utcoffset()
    assert loaded.numbers == numbers
    assert loaded.note == note
    assert loaded.ratio == ratio or (math.isinf(ratio) and loaded.ratio == ratio)
    assert type(loaded.ratio) is float


def test_inherited_forward_reference_registers_the_same_reverse_in_any_order() -> None:
    """Where an inherited relation's reverse accessor points must not depend on declaration order."""
    sources = {}
    for target_first in (True, False):
        target_name = _unique_name("Target")
        if target_first:
            target = _declare(target_name, {"properties": []})
        parent = _declare(_unique_name("Parent"), {
            "relations": [Relation("target", target_name, "parents", mandatory=False)]})
        child = _declare(_unique_name("Child"), {}, bases=(parent,))
        if not target_first:
            target = _declare(target_name, {"properties": []})
        assert parent._meta.relations["target"].target is target
        assert child._meta.relations["target"].target is target
        reverse = target._meta.reverse["parents"]
        sources[target_first] = "parent" if reverse.source is parent else "child"
    assert sources[True] == sources[False]
