"""Stored values an earlier model wrote that the current model's types no longer admit.

A plain field (str, int, float, bool, an enum of allowed values, a bare list or dict) is served as it
is stored: loads do not check it against the declared type (they stay fast), an unchanged field keeps
its stored value when the object is saved, ``dal check`` lists the document, and ``to_model()``
says where such a value comes from. A typed field (a model, ``list[str]``, a datetime) is converted
when read, so a stored value that no longer fits fails the load. See docs/migrations.md.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from dal import DataObject, Property
from dal.backends.base import Put, Revision
from dal.config import Context
from dal.exceptions import InvalidValueError
from dal.objects.transaction import encode
from dal.tools.check.integrity import Kind, check


class OmRecord(DataObject, hybrid_name="omrecord"):
    """Release 2 of a model: ``status`` lost a value, ``count`` became an int, ``tags`` list[str]."""

    __properties: list[Property[Any]] = [Property("name", str), Property("status", ["NEW", "RUNNING"],
                                                                         default="NEW"),
                                         Property("count", int, default=0),
                                         Property("tags", list[str], default=[])]


def _stored_by_release_one(context: Context, **values: Any) -> str:
    record = OmRecord(data={"name": "r"})
    record.save()
    key = context.keys.doc("omrecord", record.guid)
    entry = context.persistent.get(key)
    assert entry is not None
    document = {"name": "r", "status": "NEW", "count": 0, "tags": [], **values}
    assert context.persistent.commit([Revision(key, entry.revision)], [Put(key, encode(document))]).ok
    return record.guid


def test_a_plain_value_the_model_no_longer_admits_is_served_as_stored_and_reported(context: Context) -> None:
    guid = _stored_by_release_one(context, status="BOGUS", count=1.5)
    loaded = OmRecord(guid)
    assert (loaded.status, loaded.count) == ("BOGUS", 1.5)
    with pytest.raises(InvalidValueError, match="stored by an earlier version of the model"):
        loaded.to_model()
    loaded.name = "renamed"
    loaded.save()  # an unchanged field keeps what is stored
    entry = context.persistent.get(context.keys.doc("omrecord", guid))
    assert entry is not None and json.loads(entry.value)["status"] == "BOGUS"
    problems = check(context).of(Kind.INVALID_DOCUMENT)
    assert len(problems) == 1 and "OmRecord.status" in problems[0].message
    assert "assign values of the declared types and save" in problems[0].message
    loaded.status, loaded.count = "RUNNING", 2  # the remedy check names
    loaded.save()
    assert check(context).of(Kind.INVALID_DOCUMENT) == []


def test_a_typed_value_the_model_no_longer_admits_fails_the_load(context: Context) -> None:
    guid = _stored_by_release_one(context, tags=[1, 2])
    with pytest.raises(InvalidValueError, match="no longer fits its declared type"):
        OmRecord(guid)
    problems = check(context).of(Kind.INVALID_DOCUMENT)
    assert len(problems) == 1 and "a migration step" in problems[0].message
