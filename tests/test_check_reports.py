"""dal check: what its reports say about documents whose values or keys are wrong."""

from __future__ import annotations

import json
import math
import uuid
from typing import Any

import pytest
from relation_hybrids import Owner
from test_transfer_guids import share_a_guid

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


def test_keys_naming_a_document_under_a_non_guid_key_are_left_alone(local: Context) -> None:
    """Their repairs could never apply (they check that the document is absent, and it is there):
    --repair said the data changed, and so on forever."""
    XFlagged(data={}).save()
    keys = local.keys
    store_raw(local, keys.doc("xflagged", "bad"), b'{"flag": true}')
    store_raw(local, keys.index("xflagged", "flag", True, "bad"), b"")
    report = check(local, repair=True)
    assert [problem.kind for problem in report.problems] == [Kind.INVALID_DOCUMENT]
    assert not report.conflicted
    assert "the data changed" not in "\n".join(render(report, "here", 10))


class XCoded(DataObject):
    __properties = [Property("code", str, unique=True)]


def test_a_repairable_kind_without_a_fix_is_not_called_repairable(local: Context) -> None:
    """A unique key naming an object whose document cannot be read is left alone: it may hold the value."""
    first, second = XCoded(data={"code": "a"}), XCoded(data={"code": "b"})
    first.save()
    second.save()
    keys = local.keys
    store_raw(local, keys.doc("xcoded", first.guid), b"{not json")
    store_raw(local, keys.unique("xcoded", "code", "b"), first.guid.encode())  # names the unreadable one
    lines = render(check(local, repair=True), "here", 10)
    assert any(line.split() == ["stale_unique", "1", "needs", "a", "person"] for line in lines), lines
    assert any("left alone while XCoded" in line for line in lines), lines


def test_one_guid_stored_under_two_hybrids_of_one_class_tree_is_reported_for_a_person(local: Context) -> None:
    """A Device and a BladeServer of one guid (written by another client): their shared reverse list
    (Cabinet.occupants) shows one of them twice and the other never. Check reports it (duplicate_guid),
    naming both hybrids and the guid, and what to do; --repair leaves it. One guid under two hybrids of
    different class trees is no problem."""
    device = share_a_guid(local)
    Owner.from_model(Owner.model().model_validate({"guid": device.guid, "name": "o"})).save()
    report = check(local, repair=True)
    assert [problem.kind for problem in report.problems] == [Kind.DUPLICATE_GUID] and not report.fixed
    problem = report.problems[0]
    assert problem.key == local.keys.doc("bladeserver", device.guid) and problem.guid == device.guid
    assert f"BladeServer and Device {device.guid} share one guid" in problem.message
    assert "store all but one again as a new object" in problem.message
    assert "`dal check --repair` does not fix" in problem.message
    lines = render(report, "here", 10)
    assert any(line.split() == ["duplicate_guid", "1", "needs", "a", "person"] for line in lines), lines
