"""A stored value this model would round (an int a float cannot hold exactly, a datetime finer than the
microsecond) is a problem: `dal check` reports it, and load and copy refuse to write it changed. A value
normalised exactly (1 read as 1.0, a moment spelled another way, a set in another order) is not."""

from __future__ import annotations

import datetime as dt
import io
import json
from typing import Any

import pytest
from pydantic import BaseModel
from test_transfer import dump_text, in_namespace, is_empty

from dal import DataObject, Property
from dal.backends.base import Put
from dal.config import Context
from dal.exceptions import InvalidValueError
from dal.model.validation import validate_document
from dal.tools.check.integrity import check
from dal.tools.check.problems import Kind
from dal.tools.transfer.dump import read_dump
from dal.tools.transfer.load import copy, load

BIG = 2**53 + 1  # the first int a float cannot hold


class RndPoint(BaseModel):
    x: float


class RndMeasure(DataObject):
    __properties: list[Property[Any]] = [Property("v", float, default=0.0),
                                         Property("at", dt.datetime, mandatory=False),
                                         Property("when", dt.time, mandatory=False),
                                         Property("points", list[RndPoint], default=[], mandatory=False),
                                         Property("levels", set[float], default=set(), mandatory=False)]


META = RndMeasure._meta


@pytest.mark.parametrize(("field", "stored", "shown"), [
    ("v", BIG, f"{BIG} as {float(BIG)}"),
    ("at", "2020-01-01T00:00:00.1234567Z", "'2020-01-01T00:00:00.1234567Z' as '2020-01-01T00:00:00.123456Z'"),
    ("when", "12:00:00.0000001", "'12:00:00.0000001' as '12:00:00'"),
    ("points", [{"x": 1}, {"x": BIG}], f"[1].x {BIG} as {float(BIG)}"),
    ("levels", [3, BIG], f"{BIG} as {float(BIG)}"),
])
def test_a_value_this_model_would_round_is_a_problem(field: str, stored: Any, shown: str) -> None:
    validation = validate_document(META, {field: stored})
    assert [problem.field for problem in validation.problems] == [field]
    message = validation.problems[0].message
    assert message.startswith(f"RndMeasure.{field} holds a value ") and shown in message, message
    assert "dump, load or copy it with the model that wrote it" in message


@pytest.mark.parametrize(("field", "stored"), [
    ("v", 1), ("v", 2**53), ("v", -0.5),
    ("at", "2020-01-01T00:00:00+00:00"), ("at", "2020-01-01T00:00:00.123Z"), ("at", "2020-01-01T00:00:00,5Z"),
    ("at", "2020-01-01T01:00:00+01:00"), ("at", "2020-01-01T00:00:00.1234560Z"),
    ("when", "12:00"), ("points", [{"x": 1}, {"x": 2.5}]), ("levels", [3, 1, 2.5]),
])
def test_a_value_normalised_exactly_is_not(field: str, stored: Any) -> None:
    assert validate_document(META, {field: stored}).ok


def _store(context: Context, document: dict[str, Any]) -> str:
    """Store ``document`` as another client (or an older model declaring ``v`` an int) wrote it."""
    measure = RndMeasure()
    measure.save()
    context.persistent.commit([], [Put(context.keys.doc("rndmeasure", measure.guid),
                                       json.dumps(document).encode())])
    return measure.guid


def test_check_reports_it_and_load_and_copy_refuse_it(local: Context) -> None:
    exact = _store(local, {"v": 2, "at": "2020-01-01T00:00:00+00:00"})
    lossy = _store(local, {"v": BIG, "at": "2020-01-01T00:00:00.1234567Z"})
    report = check(local)
    assert [(problem.kind, problem.key) for problem in report.problems] == \
        [(Kind.INVALID_DOCUMENT, local.keys.doc("rndmeasure", lossy))]
    text = dump_text(local)
    assert f'"v": {BIG}' in text  # a dump keeps what is stored, as stored
    target = in_namespace(local, "target")
    for write in (lambda: load(target, read_dump(io.StringIO(text))), lambda: copy(local, target)):
        with pytest.raises(InvalidValueError) as refused:
            write()
        assert f"rndmeasure {lossy}: RndMeasure.v holds" in str(refused.value)
        assert f"rndmeasure {lossy}: RndMeasure.at holds" in str(refused.value)
        assert exact not in str(refused.value) and is_empty(target)


@pytest.mark.parametrize(("stored", "shown"), [([2.5, 1, 2.5], "item 2.5,"), ([1, 1.0], "item 1.0,"),
                                              ([3, 3, 3, 1, 1], "items 3, 1, but")])
def test_a_set_repeating_an_item_is_a_problem_named_as_such(stored: list[Any], shown: str) -> None:
    """No dal model stores an item of a set twice: the problem says the set repeats it, not that the
    model does not declare a list position (``[1]``) or reads a value as another."""
    validation = validate_document(META, {"levels": stored})
    assert not validation.ok and not validation.dropped
    assert [problem.field for problem in validation.problems] == ["levels"]
    message = validation.problems[0].message
    assert message.startswith(f"RndMeasure.levels repeats {shown}"), message
    assert "a set keeps each item once" in message and "[1]" not in message and " as " not in message


def test_check_and_load_say_a_set_repeats_an_item(local: Context) -> None:
    guid = _store(local, {"levels": [1.5, 1.5]})
    report = check(local)
    assert [(problem.kind, problem.key) for problem in report.problems] == \
        [(Kind.INVALID_DOCUMENT, local.keys.doc("rndmeasure", guid))]
    assert "RndMeasure.levels repeats item 1.5, but a set keeps each item once" in report.problems[0].message
    target = in_namespace(local, "target")
    with pytest.raises(InvalidValueError, match=rf"rndmeasure {guid}: RndMeasure\.levels repeats item 1\.5, "
                                                 "but a set keeps each item once"):
        load(target, read_dump(io.StringIO(dump_text(local))))
    assert is_empty(target)
