"""dal check: what its reports say about documents whose values or keys are wrong."""

from __future__ import annotations

import json
import math
import uuid
from typing import Any

import pytest

from dal import DataObject, Property
from dal.backends.base import Put
from dal.cli.check import render
from dal.config import Context
from dal.tools.check.integrity import Kind, check


class XFlagged(DataObject):
    """Indexed properties of the native types a raw client can store a wrong value for."""

    __properties = [Property("flag", bool, default=False, indexed=True),
                    Property("weight", float, default=0.0, indexed=True),
                    Property("label", str, default="", indexed=True),
                    Property("count", int, default=0, indexed=True)]


def store_raw(context: Context, key: str, value: bytes) -> None:
    assert context.persistent.commit([], [Put(key, value)]).ok


@pytest.mark.parametrize(("field", "stored", "shown"), [
    ("flag", 0, "flag=0"),
    ("count", "abc", "count='abc'"),
    ("weight", math.nan, "weight=nan"),
    ("label", {"a": 1}, "label={'a': 1}"),
])
def test_missing_index_of_an_invalid_value_shows_the_stored_value(local: Context, field: str, stored: Any,
                                                                  shown: str) -> None:
    """The key a repair writes is built from the stored value, and a read returns that value: the
    report shows it too, not the None validation leaves for a value that does not fit."""
    obj = XFlagged(data={})
    obj.save()
    key = local.keys.doc("xflagged", obj.guid)
    entry = local.persistent.get(key)
    assert entry is not None
    store_raw(local, key, json.dumps({**json.loads(entry.value), field: stored}).encode())
    assert f"{field}={getattr(XFlagged(obj.guid), field)!r}" == shown  # what a read returns
    missing = check(local).of(Kind.MISSING_INDEX)
    assert [problem.key for problem in missing] == [local.keys.index("xflagged", field, stored, obj.guid)]
    assert f"reads {shown}, but its index entry is missing" in missing[0].message


def problems_at(context: Context, key: str) -> list[Any]:
    """Store ``{}`` at ``key`` beside a stored object; return what check reports of that key."""
    XFlagged(data={}).save()
    store_raw(context, key, b"{}")
    return [problem for problem in check(context).problems if problem.key == key]


def test_a_document_key_without_a_guid_is_reported_as_such(local: Context) -> None:
    key = f"{local.keys.root}o/xflagged"
    problems = problems_at(local, key)
    assert len(problems) == 1, problems
    assert problems[0].kind is Kind.INVALID_DOCUMENT
    assert "undeclared" not in problems[0].message
    assert "without a guid" in problems[0].message and "delete the key" in problems[0].message


def test_a_document_key_with_more_than_a_guid_is_not_a_document(local: Context) -> None:
    obj = XFlagged(data={})
    obj.save()
    key = f"{local.keys.doc('xflagged', obj.guid)}/extra"
    problems = problems_at(local, key)
    assert [problem.kind for problem in problems] == [Kind.INVALID_DOCUMENT]
    assert "not a guid" in problems[0].message and str(uuid.UUID(obj.guid)) in problems[0].message


def test_the_report_counts_its_problems_in_words(local: Context) -> None:
    obj = XFlagged(data={})
    obj.save()
    store_raw(local, f"{local.keys.root}o/xflagged", b"{}")
    assert "1 problem:" in render(check(local), "here", 10)
    store_raw(local, f"{local.keys.root}o/xflagged/{uuid.uuid4()}", b"[]")
    assert "2 problems:" in render(check(local), "here", 10)
