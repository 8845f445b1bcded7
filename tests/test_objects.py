"""Objects on every store pair: round trips, constraints, indexes, merges, dynamics, caching."""

from __future__ import annotations

import copy
import datetime as dt
import json
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from hybrids import LOADER_CALLS, Gadget, Kind, SuperWidget, Widget

from dal import DataObject
from dal.backends.base import CommitResult, Put
from dal.config import Context
from dal.exceptions import (
    ConcurrencyError,
    InvalidValueError,
    MissingMandatoryFieldsError,
    ObjectNotFoundError,
    UniqueConstraintError,
)
from dal.objects.bulk import save_many
from dal.objects.schema import ensure_recorded


def make_kind(code: str | None = None) -> Kind:
    kind = Kind(data={"name": "a kind", "code": code or uuid.uuid4().hex[:8]})
    kind.save()
    return kind


def make_widget(kind: Kind | None = None, **values: Any) -> Widget:
    widget = Widget(data={"name": uuid.uuid4().hex, "kind": kind or make_kind(), **values})
    widget.save()
    return widget


def stored_keys(context: Context) -> dict[str, bytes]:
    """Return every key of the namespace but the schema records (``m/``), which outlive objects, and
    the commit journal's records (``x/``), which come and go with commits (``tests/test_journal.py``)."""
    skipped = (f"{context.keys.root}m/", context.keys.journal())
    return {key: entry.value for key, entry in context.persistent.scan(context.keys.root)
            if not key.startswith(skipped)}


def state(obj: DataObject) -> dict[str, Any]:
    return copy.deepcopy(obj.__dict__)


FULL_VALUES: dict[str, Any] = {
    "count": -42,
    "ratio": 2.25,
    "enabled": False,
    "tags": ["a", 1, None, {"x": [1.5, True]}],
    "meta": {"nested": {"list": [1, 2]}, "s": "é ü 日本", "n": None},
    "status": "RUNNING",
    "numbers": [3, 1, 2],
    "created": dt.datetime(2024, 2, 29, 13, 14, 15, 123456, tzinfo=dt.timezone.utc),
    "serial": "SN-1",
    "note": "line\nbreak / slash",
}


# --- round trips and loading ------------------------------------------------------------------


def test_round_trip_of_every_property_type(context: Context) -> None:
    kind, alt = make_kind(), make_kind()
    w = make_widget(kind, alt_kind=alt, **FULL_VALUES)
    loaded = Widget(w.guid)
    assert loaded is not w
    assert loaded.export() == {"name": w.name, **FULL_VALUES}
    for name, value in FULL_VALUES.items():
        assert type(getattr(loaded, name)) is type(value), name
    assert (loaded.kind_guid, loaded.alt_kind_guid) == (kind.guid, alt.guid)
    assert loaded.kind == kind and loaded.kind.code == kind.code
    assert loaded.alt_kind.code == alt.code


def test_round_trip_of_unset_and_default_values(context: Context) -> None:
    w = make_widget(ratio=None, tags=None, meta=None, numbers=None)
    loaded = Widget(w.guid)
    assert (loaded.ratio, loaded.tags, loaded.meta, loaded.numbers, loaded.created) == (None,) * 5
    assert (loaded.count, loaded.enabled, loaded.status, loaded.alt_kind_guid) == (0, True, "NEW", None)


def test_subclass_round_trip(context: Context) -> None:
    s = SuperWidget(data={"name": "super", "kind": make_kind(), "power": 7, "count": 3})
    s.save()
    loaded = SuperWidget(s.guid)
    assert (loaded.power, loaded.count, loaded.name) == (7, 3, "super")
    assert loaded.powered == 21
    with pytest.raises(ObjectNotFoundError):
        Widget(s.guid)  # stored under its own logical name


def test_in_place_mutation_is_saved(context: Context) -> None:
    w = make_widget(tags=["a"])
    w.tags.append("b")
    w.meta["k"] = [1]
    w.save()
    loaded = Widget(w.guid)
    assert loaded.tags == ["a", "b"] and loaded.meta == {"k": [1]}


def test_loading_a_missing_guid_raises(context: Context) -> None:
    with pytest.raises(ObjectNotFoundError):
        Widget(str(uuid.uuid4()))
    kind = make_kind()
    with pytest.raises(ObjectNotFoundError):
        Widget(kind.guid)  # a guid of another hybrid
    with pytest.raises(LookupError):
        Kind(str(uuid.uuid4()))


# --- mandatory fields ---------------------------------------------------------------------------


def test_missing_mandatory_fields_lists_all_and_writes_nothing(context: Context) -> None:
    w = Widget()
    w.enabled = None
    w.status = None
    with pytest.raises(MissingMandatoryFieldsError) as error:
        w.save()
    assert set(error.value.fields) == {"name", "enabled", "status", "kind"}
    for name in ("name", "enabled", "status", "kind"):
        assert name in str(error.value)
    for optional in ("ratio", "serial", "note", "alt_kind"):
        assert optional not in error.value.fields
    assert stored_keys(context) == {}
    with pytest.raises(ObjectNotFoundError):
        Widget(w.guid)


def test_unsetting_a_mandatory_field_of_a_stored_object_is_refused(context: Context) -> None:
    w = make_widget()
    before = stored_keys(context)
    w.kind = None
    with pytest.raises(MissingMandatoryFieldsError) as error:
        w.save()
    assert error.value.fields == ("kind",)
    assert stored_keys(context) == before


# --- unique constraints -------------------------------------------------------------------------


def test_unique_violation_names_class_and_field(context: Context) -> None:
    kind = make_kind()
    make_widget(kind, name="taken")
    before = stored_keys(context)
    clash = Widget(data={"name": "taken", "kind": kind})
    with pytest.raises(UniqueConstraintError, match=r"Widget\.name"):
        clash.save()
    assert stored_keys(context) == before
    with pytest.raises(UniqueConstraintError, match=r"Kind\.code"):
        Kind(data={"name": "other", "code": kind.code}).save()


def test_unique_value_is_released_on_change_and_delete(context: Context) -> None:
    kind = make_kind()
    first = make_widget(kind, name="alpha")
    first.name = "beta"
    first.save()
    second = make_widget(kind, name="alpha")  # released by the change
    third = Widget(data={"name": "beta", "kind": kind})
    with pytest.raises(UniqueConstraintError):
        third.save()
    first.delete()
    third.save()  # released by the delete
    assert Widget(third.guid).name == "beta"
    assert Widget(second.guid).name == "alpha"


def test_unique_never_collides_on_none(context: Context) -> None:
    kind = make_kind()
    one = make_widget(kind, serial=None)
    two = make_widget(kind, serial=None)
    assert Widget(one.guid).serial is None and Widget(two.guid).serial is None
    g1, g2 = Gadget(), Gadget()
    g1.save()
    g2.save()
    unique_keys = [key for key in stored_keys(context) if key.startswith(f"{context.keys.root}u/")]
    assert all("/serial/" not in key and "/token/" not in key for key in unique_keys)


def test_unique_values_of_different_types_are_distinct(context: Context) -> None:
    values: list[Any] = [1, "1", True, None, "None", None, 0, False, ""]
    gadgets = []
    for value in values:
        gadget = Gadget(data={"token": value})
        gadget.save()
        gadgets.append(gadget)
    for gadget, value in zip(gadgets, values, strict=True):
        loaded = Gadget(gadget.guid)
        assert loaded.token == value and type(loaded.token) is type(value)
    for value in (1, "1", True, "None", False, 0, ""):
        with pytest.raises(UniqueConstraintError, match=r"Gadget\.token"):
            Gadget(data={"token": value}).save()


def test_failed_save_leaves_the_object_exactly_as_before(context: Context) -> None:
    kind = make_kind()
    make_widget(kind, name="held")
    w = make_widget(kind, name="mine", tags=["t"])
    w.name = "held"
    w.count = 9
    w.tags.append("u")
    before = state(w)
    with pytest.raises(UniqueConstraintError):
        w.save()
    assert state(w) == before
    stored = Widget(w.guid)
    assert (stored.name, stored.count, stored.tags) == ("mine", 0, ["t"])
    # a new object too
    fresh = Widget(data={"name": "held", "kind": kind})
    fresh_before = state(fresh)
    with pytest.raises(UniqueConstraintError):
        fresh.save()
    assert state(fresh) == fresh_before


# --- index and key hygiene ----------------------------------------------------------------------


def expected_widget_keys(context: Context, w: Widget) -> set[str]:
    keys = context.keys
    expected = {keys.doc("widget", w.guid),
                keys.index("widget", "name", w.name, w.guid),
                keys.index("widget", "count", w.count, w.guid)}
    if w.name is not None:
        expected.add(keys.unique("widget", "name", w.name))
    if w.serial is not None:
        expected.add(keys.unique("widget", "serial", w.serial))
    return expected


def widget_keys(context: Context) -> set[str]:
    root = context.keys.root
    return {key for key in stored_keys(context)
            if key.startswith((f"{root}o/widget/", f"{root}u/widget/", f"{root}i/widget/"))}


def test_index_entries_exist_exactly_for_current_values(context: Context) -> None:
    kind = make_kind()
    w = make_widget(kind, name="idx", count=5, serial="S1")
    assert widget_keys(context) == expected_widget_keys(context, w)
    w.name, w.count, w.serial = "idx2", 6, None
    w.save()
    assert widget_keys(context) == expected_widget_keys(context, w)
    other = make_widget(kind, name="other", count=6)
    assert widget_keys(context) == expected_widget_keys(context, w) | expected_widget_keys(
        context, other)
    owner = context.persistent.get(context.keys.unique("widget", "name", "idx2"))
    assert owner is not None and owner.value == w.guid.encode()
    w.delete()
    assert widget_keys(context) == expected_widget_keys(context, other)
    other.delete()
    assert widget_keys(context) == set()
    kind.delete()
    assert stored_keys(context) == {}


def test_a_save_without_changes_writes_nothing(context: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    w = make_widget()
    commits = count_commits(context, monkeypatch)
    w.save()
    Widget(w.guid).save()
    assert commits == []


# --- relations ---------------------------------------------------------------------------------


def test_relation_to_a_missing_object_raises_and_writes_nothing(context: Context) -> None:
    kind = make_kind()
    before = stored_keys(context)
    w = Widget(data={"name": "dangling", "kind_guid": str(uuid.uuid4())})
    with pytest.raises(ObjectNotFoundError, match="kind"):
        w.save()
    unsaved = Widget(data={"name": "dangling2", "kind": Kind(data={"name": "n", "code": "c"})})
    with pytest.raises(ObjectNotFoundError):
        unsaved.save()
    assert stored_keys(context) == before
    stored = make_widget(kind)
    stored.alt_kind_guid = str(uuid.uuid4())
    with pytest.raises(ObjectNotFoundError):
        stored.save()
    assert Widget(stored.guid).alt_kind_guid is None


def test_relation_guid_needs_no_load_and_relation_is_cached(context: Context) -> None:
    kind = make_kind()
    w = Widget(make_widget(kind).guid)
    assert w.kind_guid == kind.guid
    assert w.kind is w.kind
    w.kind_guid = make_kind().guid
    assert w.kind.guid == w.kind_guid


# --- delete, refresh, views -------------------------------------------------------------------


def test_delete_twice_is_harmless(context: Context) -> None:
    w = make_widget()
    other = Widget(w.guid)
    w.delete()
    w.delete()
    other.delete()
    with pytest.raises(ObjectNotFoundError):
        Widget(w.guid)
    Widget().delete()  # never saved
    assert widget_keys(context) == set()


def test_an_object_saved_after_its_own_delete_is_not_brought_back(context: Context) -> None:
    """``w.delete(); w.save()`` stored the object again under its guid (the instance counted as new), while
    another instance's save after that delete raised ObjectNotFoundError: both refuse it now, writing
    nothing, save_many too; a refresh() finding it stored again (by another writer) makes it usable."""
    w = make_widget(count=1)
    stored = w._raw
    w.delete()
    for attempt in (lambda: w.save(), lambda: save_many([w])):
        w.count = 2
        with pytest.raises(ObjectNotFoundError, match=f"Widget {w.guid} was deleted by its delete\\(\\); "
                           "create a new object to store it again"):
            attempt()
        assert widget_keys(context) == set()
    with pytest.raises(ObjectNotFoundError):
        w.refresh()
    assert stored is not None  # stored again by another writer:
    assert context.persistent.commit([], [Put(context.keys.doc("widget", w.guid), stored)]).ok
    w.refresh()
    w.count = 4
    w.save()
    assert Widget(w.guid).count == 4


def test_a_deleted_object_cannot_be_linked(context: Context) -> None:
    """Linked, its holder's save said "save the Kind first", which the deleted object's save refuses."""
    kind = make_kind()
    kind.delete()
    widget = Widget(make_widget().guid)
    with pytest.raises(InvalidValueError, match=f"Widget.kind: Kind {kind.guid} was deleted by its "
                       r"delete\(\); link an existing one"):
        widget.kind = kind
    assert widget.kind_guid != kind.guid


def test_refresh_reloads(context: Context) -> None:
    w = make_widget(count=1)
    other = Widget(w.guid)
    assert other.kind.guid == w.kind_guid
    w.count = 2
    w.kind = make_kind()
    w.save()
    other.note = "unsaved"
    other.refresh()
    assert (other.count, other.note, other.kind_guid) == (2, None, w.kind_guid)
    assert other.kind.guid == w.kind_guid  # the cached related object was forgotten
    w.delete()
    with pytest.raises(ObjectNotFoundError):
        other.refresh()


def test_export_and_serialize_shapes(context: Context) -> None:
    kind = make_kind()
    w = make_widget(kind, **FULL_VALUES)
    exported = w.export()
    assert exported == {"name": w.name, **FULL_VALUES}
    flat = w.serialize()
    assert set(flat) == {"guid", *Widget._meta.properties, "kind_guid", "alt_kind_guid",
                         *Widget._meta.dynamics}
    assert flat["guid"] == w.guid and flat["kind_guid"] == kind.guid and flat["alt_kind_guid"] is None
    assert flat["created"] == "2024-02-29T13:14:15.123456Z"
    assert flat["doubled"] == -84
    json.dumps(flat)  # JSON-ready
    nested = w.serialize(depth=1)
    assert set(nested) == {"guid", *Widget._meta.properties, "kind", "alt_kind", *Widget._meta.dynamics}
    assert nested["kind"] == {"guid": kind.guid, "name": kind.name, "code": kind.code}
    assert nested["alt_kind"] is None
    json.dumps(nested)


def test_equality_and_hash_by_hybrid_and_guid(context: Context) -> None:
    w = make_widget()
    same = Widget(w.guid)
    assert w == same and hash(w) == hash(same)
    assert w != Widget() and len({w, same, Widget(w.guid)}) == 1
    impostor = Kind()
    impostor.__dict__["guid"] = w.guid  # same guid, another hybrid
    assert w != impostor
    assert w != w.guid


def test_updated_on_datastore(context: Context) -> None:
    w = make_widget()
    assert not w.updated_on_datastore()
    other = Widget(w.guid)
    assert not other.updated_on_datastore()
    other.count = 5
    other.save()
    assert w.updated_on_datastore()
    assert not other.updated_on_datastore()
    w.refresh()
    assert not w.updated_on_datastore()
    assert Widget().updated_on_datastore() is False
    other.delete()
    assert w.updated_on_datastore()


# --- concurrent changes ----------------------------------------------------------------------


def test_concurrent_changes_to_different_fields_merge(context: Context) -> None:
    w = make_widget(count=1, note="n")
    a, b = Widget(w.guid), Widget(w.guid)
    a.count = 2
    a.save()
    b.note = "changed"
    b.tags.append("x")
    b.save()
    final = Widget(w.guid)
    assert (final.count, final.note, final.tags) == (2, "changed", ["x"])
    assert (b.count, b.note) == (2, "changed")  # b now holds the merged document
    assert not b.updated_on_datastore()


def test_concurrent_unique_changes_merge_with_their_keys(context: Context) -> None:
    w = make_widget(name="orig", serial="s0")
    a, b = Widget(w.guid), Widget(w.guid)
    a.name = "renamed"
    a.save()
    b.serial = "s1"
    b.save()
    assert (Widget(w.guid).name, Widget(w.guid).serial) == ("renamed", "s1")
    assert widget_keys(context) == expected_widget_keys(context, Widget(w.guid))


@pytest.mark.parametrize(("datastore_wins", "expected"), [(False, "ours"), (True, "theirs")])
def test_same_field_changed_by_both(context: Context, datastore_wins: bool, expected: str) -> None:
    w = make_widget(note="orig", count=1)
    a, b = Widget(w.guid), Widget(w.guid)
    a.note = "theirs"
    a.save()
    b.note = "ours"
    b.count = 7
    b.save(datastore_wins=datastore_wins)
    final = Widget(w.guid)
    assert final.note == expected
    assert final.count == 7  # a field only we changed is kept either way
    assert b.note == expected


def test_same_field_changed_to_the_same_value_is_a_conflict(context: Context) -> None:
    w = make_widget(note="orig")
    a, b = Widget(w.guid), Widget(w.guid)
    a.note = "same"
    a.save()
    b.note = "same"
    with pytest.raises(ConcurrencyError):
        b.save(datastore_wins=None)


def test_conflict_with_datastore_wins_none_raises_and_leaves_object(context: Context) -> None:
    w = make_widget(note="orig", count=1)
    a, b = Widget(w.guid), Widget(w.guid)
    a.note = "theirs"
    a.save()
    b.note = "ours"
    b.count = 3
    before = state(b)
    with pytest.raises(ConcurrencyError, match="note"):
        b.save(datastore_wins=None)
    assert state(b) == before
    final = Widget(w.guid)
    assert (final.note, final.count) == ("theirs", 1)


def test_saving_an_object_deleted_meanwhile_raises(context: Context) -> None:
    w = make_widget()
    other = Widget(w.guid)
    other.delete()
    w.count = 99
    before = state(w)
    with pytest.raises(ObjectNotFoundError):
        w.save()
    assert state(w) == before
    assert widget_keys(context) == set()


# --- dynamics ----------------------------------------------------------------------------------


def test_dynamic_is_cached_until_save_invalidates_it(context: Context) -> None:
    w = make_widget(count=2)
    calls = ("doubled", w.guid)
    assert LOADER_CALLS[calls] == 0
    assert w.doubled == 4
    assert w.doubled == 4
    assert Widget(w.guid).doubled == 4
    assert LOADER_CALLS[calls] == 1
    w.count = 5
    assert w.doubled == 4  # unsaved changes do not invalidate
    w.save()
    assert w.doubled == 10
    assert LOADER_CALLS[calls] == 2
    w.invalidate_dynamics(["doubled"])
    assert w.doubled == 10
    assert LOADER_CALLS[calls] == 3
    with pytest.raises(InvalidValueError):
        w.invalidate_dynamics(["nope"])


def test_dynamic_with_timeout_zero_is_never_cached(context: Context) -> None:
    w = make_widget()
    assert [w.fresh, w.fresh, Widget(w.guid).fresh] == [1, 2, 3]


def test_dynamic_with_wrong_return_type_raises(context: Context) -> None:
    g = Gadget()
    g.save()
    with pytest.raises(InvalidValueError):
        _ = g.broken
    with pytest.raises(InvalidValueError):
        _ = g.broken  # and a failed computation is not cached


def test_delete_invalidates_dynamics(context: Context) -> None:
    w = make_widget(count=1)
    assert w.doubled == 2
    w.delete()
    assert context.volatile.get(context.keys.cached_dynamic("widget", w.guid, "doubled")) is None


# --- the document cache and commits ---------------------------------------------------------------


def test_save_drops_the_cached_document(context: Context) -> None:
    w = make_widget(count=1)
    assert Widget(w.guid).count == 1  # cached now
    writer = Widget(w.guid)
    writer.count = 2
    writer.save()
    assert Widget(w.guid).count == 2
    writer.delete()
    with pytest.raises(ObjectNotFoundError):
        Widget(w.guid)


def count_commits(context: Context, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    commits: list[int] = []
    original: Callable[..., CommitResult] = context.persistent.commit

    def counting(*args: Any, **kwargs: Any) -> CommitResult:
        commits.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(context.persistent, "commit", counting)
    return commits


def test_saving_a_new_object_is_one_commit(context: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    for hybrid in (Kind, Widget):  # the first save into an empty hybrid also records its schema, once
        ensure_recorded(context, hybrid._meta)
    commits = count_commits(context, monkeypatch)
    kind = Kind(data={"name": "one", "code": "one"})  # one unique+indexed property
    kind.save()
    assert len(commits) == 1
    assert Kind(kind.guid).code == "one"
    w = Widget(data={"name": "w", "kind": kind, "serial": "s"})  # unique, indexed and a relation
    w.save()
    assert len(commits) == 2
    w.delete()
    assert len(commits) == 3


# --- merging over documents an older model stored -------------------------------------------------


def _drop_field_from_stored_document(context: Context, widget: Widget, field: str) -> None:
    """Rewrite the stored document as a model that did not declare ``field`` yet would have."""
    doc_key = context.keys.doc("widget", widget.guid)
    entry = context.persistent.get(doc_key)
    assert entry is not None
    document = json.loads(entry.value)
    del document[field]
    assert context.commit([], [Put(doc_key, json.dumps(document).encode())],
                          [context.keys.cached_doc("widget", widget.guid)]).ok


@pytest.mark.parametrize("datastore_wins", [False, None])
def test_a_merge_keeps_another_writers_change_to_a_field_the_stored_document_lacked(
        context: Context, datastore_wins: bool | None) -> None:
    kind = Kind(data={"name": "k", "code": uuid.uuid4().hex[:8]})
    kind.save()
    widget = Widget(data={"name": f"old-{datastore_wins}", "kind": kind})
    widget.save()
    _drop_field_from_stored_document(context, widget, "status")
    ours, theirs = Widget(widget.guid), Widget(widget.guid)
    assert ours.status == theirs.status == "NEW"  # loading fills the declared default
    theirs.status = "RUNNING"
    theirs.save()
    ours.name = f"renamed-{datastore_wins}"
    ours.save(datastore_wins=datastore_wins)  # status is not ours: no conflict, theirs is kept
    stored = Widget(widget.guid)
    assert (stored.name, stored.status) == (f"renamed-{datastore_wins}", "RUNNING")
    assert (ours.name, ours.status) == (f"renamed-{datastore_wins}", "RUNNING")
