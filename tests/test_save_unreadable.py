"""A save whose merge would take another writer's typed value this version cannot read refuses before
committing.

Another version of the model may declare a field otherwise (a free-text ``str`` where this one declares a
``datetime``) and save ``at = "next tuesday"`` while this object is being saved. The merge takes that
value (this object did not change ``at``), but this version cannot read it: a load of the object refuses
it (InvalidValueError: "no longer fits its declared type"). The save refuses it the same way, before
anything is written, and leaves the object as it was. (It committed the merged document, then raised
pydantic's own ValidationError while reading it back: the object kept its old revision, and every later
save wrote again and raised again.)
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest

from dal import DataObject, Property
from dal.backends.base import Put
from dal.config import Context
from dal.exceptions import InvalidValueError
from dal.objects.transaction import saved_values

JAN = dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)
FEB = dt.datetime(2024, 2, 3, 4, 5, 6, tzinfo=dt.timezone.utc)
REFUSED = r"another writer stored at as 'next tuesday'.*no longer fits its declared type.*nothing was written"


class Dated(DataObject, hybrid_name="sunreadable"):
    __properties: list[Property[Any]] = [Property("at", dt.datetime, mandatory=False),
                                         Property("n", int, mandatory=False)]


@pytest.fixture
def context(local: Context) -> Context:
    """The embedded pair only (conftest's ``context`` runs over every store pair)."""
    return local


def stored(context: Context, guid: str) -> tuple[int, dict[str, Any]]:
    entry = context.persistent.get(context.keys.doc("sunreadable", guid))
    assert entry is not None
    return entry.revision, json.loads(entry.value)


def loaded_then_rewritten(context: Context) -> tuple[Dated, int]:
    """Return an object loaded before another version of the model stored ``at = "next tuesday"``, and the
    revision that version wrote."""
    obj = Dated(data={"at": JAN, "n": 0})
    obj.save()
    mine = Dated(obj.guid)
    _, document = stored(context, obj.guid)
    key = context.keys.doc("sunreadable", obj.guid)
    theirs = json.dumps({**document, "at": "next tuesday"}).encode()
    assert context.persistent.commit([], [Put(key, theirs)]).ok
    context.volatile.delete(context.keys.cached_doc("sunreadable", obj.guid))
    return mine, stored(context, obj.guid)[0]


@pytest.mark.parametrize("datastore_wins", [False, True, None])
def test_a_merge_taking_a_value_this_version_cannot_read_refuses_before_writing(
        context: Context, datastore_wins: bool | None) -> None:
    mine, revision = loaded_then_rewritten(context)
    loaded_at = mine._revision
    mine.n = 1
    for _ in range(2):  # and again: nothing was written the first time, nor is the second
        with pytest.raises(InvalidValueError, match=REFUSED + ": migrate the stored data or widen the type"):
            mine.save(datastore_wins=datastore_wins)
        assert stored(context, mine.guid) == (revision, {"at": "next tuesday", "n": 0})
        assert (mine._revision, mine.n, mine.at) == (loaded_at, 1, JAN)  # left as it was


def test_their_unreadable_value_of_a_field_changed_here_too_follows_datastore_wins(context: Context) -> None:
    mine, _ = loaded_then_rewritten(context)
    mine.at = FEB
    with pytest.raises(InvalidValueError, match=REFUSED):
        mine.save(datastore_wins=True)  # theirs wins: the value this version cannot read
    mine.save(datastore_wins=False)  # ours wins: what is written reads
    assert stored(context, mine.guid)[1]["at"] == Dated._meta.properties["at"].validator.to_json(FEB)
    assert Dated(mine.guid).at == FEB == mine.at


def test_a_committed_value_that_does_not_read_back_is_a_dal_error_not_pydantics() -> None:
    """What a save reads back of what it committed: a value that no longer reads (none can, since the merge
    reads what it takes) is an InvalidValueError naming the field, never pydantic's ValidationError."""
    refused = "Dated g was saved, but the stored value of at no longer fits its declared type"
    with pytest.raises(InvalidValueError, match=refused):
        saved_values(Dated._meta, {"at": "next tuesday", "n": 0}, {"at": JAN, "n": 0}, {"at": "x", "n": 0},
                     None, "Dated g")
