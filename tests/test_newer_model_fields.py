"""Fields a newer version of the model stores are kept by a save under the older one, nested too.

A top-level field the model does not declare is kept as it is; so is a field of a nested model
(a pydantic model property) that only the newer version declares: the older model reads the
value without it, and a save that did not change the value writes back what is stored.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict

from dal import DataObject, Property
from dal.backends.base import Put, Revision
from dal.config import Context
from dal.model.validation import validate_document
from dal.objects.transaction import encode


class NmCfg(BaseModel):
    a: int


class NmItem(BaseModel):
    model_config = ConfigDict(frozen=True)  # hashable: a set can hold it
    k: int


class NmHost(DataObject):
    __properties: list[Property[Any]] = [Property("name", str), Property("cfg", NmCfg, mandatory=False)]


class NmBag(DataObject):
    __properties: list[Property[Any]] = [Property("name", str),
                                         Property("items", set[NmItem], mandatory=False),
                                         Property("spans", set[tuple[int, ...]], mandatory=False)]


def _stored(context: Context, guid: str) -> dict[str, Any]:
    entry = context.persistent.get(context.keys.doc("nmhost", guid))
    assert entry is not None
    return dict(json.loads(entry.value))


def _written_by_a_newer_model(context: Context) -> str:
    host = NmHost(data={"name": "h", "cfg": NmCfg(a=1)})
    host.save()
    key = context.keys.doc("nmhost", host.guid)
    entry = context.persistent.get(key)
    assert entry is not None
    newer = {"name": "h", "cfg": {"a": 1, "b": 2}, "rack": "r7"}  # cfg.b and rack: the newer model's
    assert context.persistent.commit([Revision(key, entry.revision)], [Put(key, encode(newer))]).ok
    return host.guid


def test_a_save_of_another_field_keeps_a_nested_field_only_a_newer_model_declares(context: Context) -> None:
    guid = _written_by_a_newer_model(context)
    older = NmHost(guid)
    assert older.cfg == NmCfg(a=1)
    older.name = "renamed"
    older.save()
    assert _stored(context, guid) == {"name": "renamed", "cfg": {"a": 1, "b": 2}, "rack": "r7"}
    again = NmHost(guid)
    again.name = "twice"
    again.save()  # and again, from the document the first save wrote
    assert _stored(context, guid)["cfg"] == {"a": 1, "b": 2}


def test_a_nested_value_the_older_model_changes_is_written_as_it_now_is(context: Context) -> None:
    guid = _written_by_a_newer_model(context)
    older = NmHost(guid)
    older.cfg = NmCfg(a=5)  # a new value: what the older model makes of it is what it stores
    older.save()
    assert _stored(context, guid) == {"name": "h", "cfg": {"a": 5}, "rack": "r7"}


def test_an_unchanged_object_of_a_newer_model_is_not_written(context: Context) -> None:
    guid = _written_by_a_newer_model(context)
    before = context.persistent.get(context.keys.doc("nmhost", guid))
    NmHost(guid).save()
    assert context.persistent.get(context.keys.doc("nmhost", guid)) == before


@pytest.mark.parametrize("items", [
    [{"a": "for-k2", "k": 2}, {"a": "for-k1", "k": 1}],  # not in the order this version writes
    [{"a": "x", "k": 1}, {"a": "y", "k": 1}, {"a": "z", "k": 2}],  # two items this version reads as one
], ids=["reordered", "merged"])
def test_a_set_of_models_a_newer_model_wrote_is_kept_exactly(context: Context, items: list[Any]) -> None:
    """Its items hold a field the older model does not declare: pairing them with what this version
    reads could swap that field between items, or drop items; the value is kept as it is stored."""
    bag = NmBag(data={"name": "h"})
    bag.save()
    key = context.keys.doc("nmbag", bag.guid)
    entry = context.persistent.get(key)
    assert entry is not None
    stored = {"name": "h", "items": items, "spans": None}
    assert context.persistent.commit([Revision(key, entry.revision)], [Put(key, encode(stored))]).ok
    older = NmBag(bag.guid)
    older.name = "renamed"
    older.save()
    after = context.persistent.get(key)
    assert after is not None and json.loads(after.value)["items"] == items


def test_a_set_stored_in_another_order_loses_nothing() -> None:
    """Read in another order (items of other lengths), a set an earlier version wrote is no data lost."""
    checked = validate_document(NmBag._meta, {"name": "h", "spans": [[1], [1, 2, 3]]})
    assert checked.ok and not checked.dropped
    lost = validate_document(NmBag._meta, {"name": "h", "items": [{"a": 1, "k": 1}]})
    assert not lost.ok and "NmBag.items holds [0].a" in lost.dropped[0].message
