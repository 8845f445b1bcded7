"""A commit whose answer is lost, then a list changed in place before the outcome is learnt.

What the lost commit wrote must be kept apart from the object: the object's lists are changed
in place by the application, and settling must compare with what was committed, or the change
made since is taken for stored and never saved. The store loses answers as in
``tests/test_commit_outcome.py``, whose fixture and fault this module shares.
"""

from __future__ import annotations

import json

import pytest
from test_commit_outcome import LostAnswers, journaled  # noqa: F401 (journaled: a fixture)

from dal import DataObject, Property, save_many
from dal.config import Context
from dal.exceptions import CommitOutcomeUnknownError


class UncertainBag(DataObject):
    __properties = [Property("tags", list, default=[], mandatory=False),
                    Property("meta", dict, default={}, mandatory=False)]


def _stored(context: Context, bag: UncertainBag) -> dict[str, object]:
    entry = context.persistent.get(context.keys.doc("uncertainbag", bag.guid))
    assert entry is not None
    return dict(json.loads(entry.value))


@pytest.mark.parametrize("many", [False, True], ids=["save", "save_many"])
@pytest.mark.parametrize("applied", [True, False])
def test_a_list_changed_in_place_after_an_unknown_outcome_is_saved_next(
        journaled: Context, monkeypatch: pytest.MonkeyPatch, applied: bool, many: bool) -> None:  # noqa: F811
    bag = UncertainBag()
    bag.save()
    lost = LostAnswers(journaled, monkeypatch)
    lost.plan = ["applied" if applied else "unsent"] + ["down"] * 1000  # the fences get no answer either
    bag.tags.append("first")
    bag.meta["n"] = 1
    with pytest.raises(CommitOutcomeUnknownError):
        save_many([bag]) if many else bag.save()
    bag.tags.append("second")  # the application keeps working on the object
    bag.meta["n"] = 2
    lost.plan.clear()  # the store answers again
    bag.save()  # learns whether the first save was applied, then saves what changed since
    assert bag.tags == ["first", "second"] and bag.meta == {"n": 2}
    assert _stored(journaled, bag) == {"tags": ["first", "second"], "meta": {"n": 2}}
    again = UncertainBag(bag.guid)
    assert again.tags == ["first", "second"] and again.meta == {"n": 2}
    assert not bag.updated_on_datastore()
