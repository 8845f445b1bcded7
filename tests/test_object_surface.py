"""The surface of an object: its views, its reserved names, its copies, deletions and repr.

- ``serialize()`` and ``export()`` hand out containers of their own: editing the view leaves the
  object, and what its next ``save()`` stores, unchanged. A value changed in place is copied exactly as
  it now is (1, 1.0 and True apart), even holding what a copy by pickle cannot take.
- A spec may not take the name of any public member of ``DataObject`` (``model``, ``get``,
  ``where``...): it would silently replace the method. The names are derived from the class, so a
  member added later is reserved too (the parametrization below reads ``dir(DataObject)``).
- ``copy.copy(obj)`` is an object of its own, like ``copy.deepcopy``: changing it leaves the original.
- A copy by pickle or deepcopy of an object whose dynamic was read keeps no cache key of its context
  (pickle used to fail on it): it reads the dynamic as the original, from the current context's cache.
- ``invalidate_dynamics('name')`` takes one name as ``['name']``; bytes are one (refused) name.
- ``sort('<relation>')`` reads the linked guid as ``<relation>_guid`` does: a stale mirrored object
  refreshed first.
- ``del obj.<declared name>`` and ``del obj.guid`` are refused; ``repr()`` never raises; a reverse
  accessor's error names the accessor written to.
"""

from __future__ import annotations

import copy
import pickle
import re
import threading
import uuid
from typing import Any

import pydantic
import pytest
from hybrids import LOADER_CALLS, Kind, Widget
from mirror_hybrids import MirrorCluster, MirroredVM, answer, instance_path

import dal.mirror
from dal import DataObject, Dynamic, Property, Relation, configure
from dal.config import Context
from dal.exceptions import InvalidValueError
from dal.query.ordering import related
from dal.query.sorting import sort_key
from dal.testing.remote import Remote

#: what a spec may not be named: guid and every public member of DataObject
PUBLIC = sorted({"guid", *(name for name in dir(DataObject) if not name.startswith("_"))})


class Settings(pydantic.BaseModel):
    size: str = "small"


class Viewed(DataObject, hybrid_name="tossviewed"):
    __properties = [Property("name", str),
                    Property("rows", list, default=[], mandatory=False),
                    Property("bag", dict, default={}, mandatory=False),
                    Property("numbers", list[int], default=[], mandatory=False),
                    Property("settings", Settings, mandatory=False),
                    Property("history", list[Settings], default=[], mandatory=False),
                    Property("shape", [[1, 2], {"n": [3]}], mandatory=False)]  # stored as given


def _kind() -> Kind:
    kind = Kind(name="k", code=uuid.uuid4().hex[:8])
    kind.save()
    return kind


def _widget(**values: Any) -> Widget:
    widget = Widget(**{"name": uuid.uuid4().hex, "kind": _kind(), **values})
    widget.save()
    return widget


def _declare(body: dict[str, Any]) -> type:
    """Declare a hybrid of a fresh name the way a ``class`` statement would (name-mangled lists)."""
    name = f"Surface{uuid.uuid4().hex[:10]}"
    namespace: dict[str, Any] = {"__module__": __name__, "__qualname__": name}
    namespace.update((f"_{name}__{key}" if key in ("properties", "relations", "dynamics") else key, value)
                     for key, value in body.items())
    return type(DataObject)(name, (DataObject,), namespace)


# --- views ---------------------------------------------------------------------------------


def test_editing_serialize_or_export_leaves_the_object_and_its_next_save(local: Context) -> None:
    obj = Viewed(name="v", rows=[[1]], bag={"deep": [1]}, numbers=[1], settings=Settings(),
                 history=[Settings()])
    obj.save()
    for view in (obj.serialize(), obj.serialize(1), obj.export()):
        view["rows"].append("x")
        view["rows"][0].append("x")
        view["bag"]["deep"].append("x")
        view["bag"]["new"] = 1
        view["numbers"].append(2)
    exported = obj.export()
    exported["settings"].size = "big"
    exported["history"][0].size = "big"
    exported["history"].append(Settings(size="huge"))
    assert obj.rows == [[1]] and obj.bag == {"deep": [1]} and obj.numbers == [1]
    assert obj.settings == Settings() and obj.history == [Settings()]
    obj.name = "renamed"  # an unrelated change saved later stores none of the edits above
    obj.save()
    stored = Viewed(obj.guid)
    assert (stored.rows, stored.bag, stored.numbers) == ([[1]], {"deep": [1]}, [1])
    assert stored.settings == Settings() and stored.history == [Settings()]


def test_a_view_copies_values_changed_in_place_exactly_and_an_enum_of_lists(local: Context) -> None:
    obj = Viewed(name="v", rows=[1, [2]], bag={"n": 1}, shape={"n": [3]})
    obj.save()
    obj = Viewed(obj.guid)  # as loaded: the values are the stored form read back
    lock = threading.Lock()  # which pickle cannot copy: the containers are still copied around it
    obj.rows[0], obj.bag["n"], obj.bag["lock"] = 1.0, True, lock
    obj.rows[1].append(1)
    for view in (obj.serialize(), obj.export()):
        assert view["rows"] == [1.0, [2, 1]] and type(view["rows"][0]) is float
        assert view["bag"]["n"] is True and view["bag"]["lock"] is lock
        view["rows"][1].append("x")
        view["bag"]["new"] = 1
        view["shape"]["n"].append("x")
    assert obj.rows == [1.0, [2, 1]] and obj.bag == {"n": True, "lock": lock} and obj.shape == {"n": [3]}


def test_serialize_nests_a_related_object_deleted_meanwhile_only_once_read(local: Context) -> None:
    """As docs/model.md says: deleted before this instance read the relation, it is None; read
    already, it is nested as read (checking it would cost a round trip per object) until refresh()."""
    kind = _kind()
    widget = _widget(alt_kind=kind)
    cold, warm = Widget(widget.guid), Widget(widget.guid)
    assert warm.alt_kind == kind
    Kind(kind.guid).delete(abandon=["alt_widgets"])  # by another writer: the instances still link it
    assert cold.serialize(1)["alt_kind"] is None
    assert warm.serialize(1)["alt_kind"]["guid"] == kind.guid
    warm.refresh()
    assert warm.serialize(1)["alt_kind"] is None


# --- reserved names ------------------------------------------------------------------------


@pytest.mark.parametrize("name", PUBLIC)
@pytest.mark.parametrize("kind", ["properties", "relations", "dynamics"])
def test_a_spec_named_like_a_public_member_of_dataobject_is_refused(name: str, kind: str) -> None:
    spec = {"properties": lambda: Property(name, str),
            "relations": lambda: Relation(name, Kind, f"s{uuid.uuid4().hex[:8]}"),
            "dynamics": lambda: Dynamic(name, int, 5)}[kind]()
    with pytest.raises(InvalidValueError, match=f"'{name}' is reserved by DataObject"):
        _declare({kind: [spec], f"_{name}": lambda self: 1})


def test_a_field_named_like_a_method_of_the_hybrids_own_classes_is_refused() -> None:
    """A field and a method, property or class attribute of one name (its class's, a base's, or a subclass's
    over an inherited field; a relation's ``<name>_guid`` too): one would hide the other unseen, so the class
    creation refuses it, naming the member."""
    with pytest.raises(InvalidValueError, match=r"Lamp: Lamp.summary is also the name of a field of Lamp"):
        class Lamp(DataObject, hybrid_name=f"l{uuid.uuid4().hex[:8]}"):
            __properties = [Property("summary", str)]

            def summary(self) -> str:
                return "a lamp"

    class Base(DataObject, hybrid_name=f"b{uuid.uuid4().hex[:8]}"):
        __properties = [Property("name", str)]
        colour = "red"

        @property
        def label(self) -> str:
            return "a base"

    for specs, member in [({"properties": [Property("label", str)]}, "Base.label"),
                          ({"properties": [Property("colour", str)]}, "Base.colour"),
                          ({"relations": [Relation("label", Kind, f"r{uuid.uuid4().hex[:8]}")]},
                           "Base.label"),
                          ({"relations": [Relation("col", Kind, f"s{uuid.uuid4().hex[:8]}")], "col_guid": 1},
                           "Sub.col_guid"),
                          ({"name": lambda self: "a method"}, "Sub.name")]:
        with pytest.raises(InvalidValueError, match=rf"Sub: {member} is also the name of a field of Sub"):
            type("Sub", (Base,), {f"_Sub__{kind}": value for kind, value in specs.items()
                                  if kind in ("properties", "relations")}
                 | {name: value for name, value in specs.items() if name not in ("properties", "relations")}
                 | {"__module__": __name__}, hybrid_name=f"s{uuid.uuid4().hex[:8]}")


def test_the_methods_stay_callable_on_a_hybrid_with_ordinary_field_names(local: Context) -> None:
    assert Widget.get(_widget().guid).name  # the names that stay allowed still reach the methods
    assert "model" in PUBLIC and "where" in PUBLIC and "refresh_info" in PUBLIC and "stale" in PUBLIC


# --- copies --------------------------------------------------------------------------------


@pytest.mark.parametrize("copier", [copy.copy, copy.deepcopy, lambda obj: pickle.loads(pickle.dumps(obj))])
def test_a_copy_is_an_object_of_its_own(local: Context, copier: Any) -> None:
    guid = _widget(tags=["a"], meta={"n": [1]}).guid
    original = Widget._load_many([guid, _widget().guid])[guid]  # loaded with a sibling
    assert "_siblings" in original.__dict__
    assert original.kind is not None  # a related object read, held in _objects
    draft = copier(original)
    assert draft == original and draft.guid == original.guid and draft.kind.guid == original.kind.guid
    assert "_siblings" not in draft.__dict__ or copier is not copy.copy
    draft.status = "RUNNING"
    draft.tags.append("x")
    draft.meta["n"].append(2)
    draft.alt_kind = _kind()
    draft.__dict__["_extra"]["unknown"] = 1
    assert original.status == "NEW" and original.tags == ["a"] and original.meta == {"n": [1]}
    assert original.alt_kind is None and original.__dict__["_extra"] == {}
    original.save()
    stored = Widget(original.guid)
    assert stored.status == "NEW" and stored.tags == ["a"] and stored.alt_kind_guid is None
    draft.save(datastore_wins=False)  # the copy saves its own changes over the same stored object
    assert Widget(original.guid).tags == ["a", "x"]


@pytest.mark.parametrize("copier", [copy.deepcopy, lambda obj: pickle.loads(pickle.dumps(obj))])
def test_a_copy_of_an_object_whose_dynamic_was_read_reads_it_as_the_original(local: Context,
                                                                             copier: Any) -> None:
    # pickle raised AttributeError (the cache key kept in the object held the context's keys, which
    # name the store by a function made in configure()): a copy keeps no key, and reads as any object
    widget = _widget()
    assert widget.doubled == 0 and widget.doubled == 0
    calls, hits = LOADER_CALLS["doubled", widget.guid], local.stats["dynamic_hits"]
    clone = copier(widget)
    assert not clone.__dict__.get("_dynamic_names"), "a copy carries no context's cache key"
    assert clone.doubled == 0 and LOADER_CALLS["doubled", widget.guid] == calls  # the cached value
    assert local.stats["dynamic_hits"] == hits + 1
    other = configure(local.persistent_url.settings(), f"memory://{uuid.uuid4().hex[:8]}",
                      namespace=local.namespace)  # another cache: the copy reads this context's
    try:
        again = copier(clone)
        assert again.doubled == 0 and LOADER_CALLS["doubled", widget.guid] == calls + 1
        assert again.doubled == 0 and other.stats["dynamic_hits"] == 1
    finally:
        other.close()


# --- dynamics ------------------------------------------------------------------------------


def test_invalidate_dynamics_takes_one_name_as_a_list_of_it(local: Context) -> None:
    widget = _widget()
    assert widget.doubled == 0 and widget.doubled == 0
    calls = LOADER_CALLS["doubled", widget.guid]
    widget.invalidate_dynamics("doubled")
    assert widget.doubled == 0 and LOADER_CALLS["doubled", widget.guid] == calls + 1
    with pytest.raises(InvalidValueError, match="no dynamic 'nothing'"):
        widget.invalidate_dynamics("nothing")
    for bad in ([1], [b"doubled"]):
        with pytest.raises(InvalidValueError, match="has no dynamic"):
            widget.invalidate_dynamics(bad)  # type: ignore[arg-type]
    for raw in (b"doubled", bytearray(b"doubled")):  # one name, refused: not a list of its ints
        refused = rf"has no dynamic {re.escape(repr(raw))}; known: doubled"
        with pytest.raises(InvalidValueError, match=refused):
            widget.invalidate_dynamics(raw)  # type: ignore[arg-type]


# --- sorting -------------------------------------------------------------------------------


def test_sorting_by_a_relation_reads_its_guid_as_the_guid_attribute_does(local: Context, remote: Remote,
                                                                         clock: Any) -> None:
    old, new = (MirrorCluster(data={"name": uuid.uuid4().hex}) for _ in range(2))
    old.save()
    new.save()
    hostname = f"vm-{uuid.uuid4().hex[:8]}"
    remote.answers[instance_path(hostname)] = answer(hostname)
    stored = MirroredVM(data={"hostname": hostname, "cluster": old})
    stored.save()
    stale = MirroredVM(stored.guid)  # loaded, never refreshed
    with dal.mirror.frozen():  # another instance links it elsewhere meanwhile
        moved = MirroredVM(stored.guid)
        moved.cluster = new
        moved.save()
    # the refresh on the first read brings the stored link in, whichever key reads first
    assert sort_key(MirroredVM._meta, "cluster").key(stale) == (related(new.guid),)
    assert stale.cluster_guid == new.guid and remote.count() == 1


# --- deletion, repr, reverse accessors -----------------------------------------------------


@pytest.mark.parametrize("name", ["name", "tags", "kind", "kind_guid", "doubled", "guid"])
def test_deleting_a_declared_attribute_or_the_guid_is_refused(local: Context, name: str) -> None:
    widget = _widget()
    before = getattr(widget, name) if name != "kind" else widget.kind.guid
    with pytest.raises(AttributeError, match=rf"cannot delete Widget\.{name}"):
        delattr(widget, name)
    assert (getattr(widget, name) if name != "kind" else widget.kind.guid) == before
    assert repr(widget) == f"<Widget {widget.guid}>"


def test_deleting_a_reverse_accessor_is_refused(local: Context) -> None:
    kind = _kind()
    with pytest.raises(AttributeError, match=r"cannot delete Kind\.widgets"):
        del kind.widgets


def test_repr_never_raises() -> None:
    assert repr(Widget.__new__(Widget)) == "<Widget (no guid)>"


@pytest.mark.parametrize("name", ["widgets", "widgets_guids"])
def test_writing_a_reverse_accessor_names_it(local: Context, name: str) -> None:
    with pytest.raises(AttributeError, match=rf"^Kind\.{name} is a reverse relation and read-only"):
        setattr(_kind(), name, [])
