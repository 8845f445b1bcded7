"""Names that become parts of keys: hybrid names and guids are validated wherever they enter.

A hybrid name and a guid are key components (``o/<hybrid>/<guid>``, link keys, index
entries). A ``/`` in one injects keys into another hybrid's range; whitespace, control
characters or two spellings of one guid give keys no one can address. So a hybrid name is
letters, digits, underscores and dashes (at most 64), and a guid is a UUID in its
canonical form, checked at every door: loads, relation assignments, ``dal load``, queries.
"""

from __future__ import annotations

import io
import json
import uuid
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import dal
from dal import DataList, DataObject, Property, Relation
from dal.backends.base import Put
from dal.config import Context
from dal.exceptions import ConfigurationError, InvalidQueryError, InvalidValueError, ObjectNotFoundError
from dal.model.registry import hybrids as registry
from dal.model.validation import valid_guid
from dal.structures import check_guid, is_guid
from dal.tools.transfer.dump import read_dump
from dal.tools.transfer.load import copy, load


class NmUser(DataObject, hybrid_name="nmuser"):
    """A user."""

    __properties = [Property("name", str)]


class NmAccount(DataObject, hybrid_name="nm-account_2"):
    """An account of a user: a hybrid name with a dash, an underscore and a digit."""

    __properties = [Property("label", str, mandatory=False)]
    __relations = [Relation("user", NmUser, "accounts", mandatory=False)]


OP, AND = DataList.operator, DataList.where_operator.AND
#: strings that are not guids, each for another reason
GUID = "1b4e28ba-2fa1-41d2-883f-0016d3cca427"
NOT_GUIDS = ["xyz", "", "a/b", f"audit/{GUID}",
             GUID.upper(),  # one UUID, another spelling: it would be another key
             "{" + GUID + "}", GUID.replace("-", ""), f"urn:uuid:{GUID}", GUID + "\n", " " + GUID, GUID + "0",
             GUID[:-1] + "g", GUID.replace("-", "/")]


def _declare(name: str, **kw: Any) -> type:
    namespace = {"__module__": __name__, "__qualname__": name,
                 f"_{name.lstrip('_')}__properties": [Property("x", int, mandatory=False)]}
    return type(DataObject)(name, (DataObject,), namespace, **kw)


# --- hybrid names -----------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["nmuser/audit", "nm user", "nm.user", "", "-nmuser", "9lives", "nmüser",
                                 "nm\nuser", "n" * 65])
def test_bad_hybrid_names_are_refused(bad: str) -> None:
    name = f"NmBad{uuid.uuid4().hex[:8]}"
    with pytest.raises(ConfigurationError, match="letters, digits, underscores") as caught:
        _declare(name, hybrid_name=bad)
    assert repr(bad) in str(caught.value)
    with pytest.raises(LookupError):
        registry.get(name)  # nothing was registered


def test_a_slash_cannot_inject_keys_into_another_hybrid(context: Context) -> None:
    user = NmUser(data={"name": "u"})
    user.save()
    with pytest.raises(ConfigurationError, match="'nmuser/audit'"):
        _declare(f"NmAudit{uuid.uuid4().hex[:8]}", hybrid_name="nmuser/audit")
    assert DataList(NmUser).guids == [user.guid]


def test_a_class_name_that_cannot_be_a_hybrid_name_says_to_choose_one() -> None:
    with pytest.raises(ConfigurationError, match="hybrid_name="):
        _declare("Ünicode" + uuid.uuid4().hex[:8])
    fine = _declare("Ünicode" + uuid.uuid4().hex[:8], hybrid_name=f"unicode_{uuid.uuid4().hex[:8]}")
    assert fine._meta.name.startswith("unicode_")
    longest = "n" * 64
    assert _declare(f"NmLong{uuid.uuid4().hex[:8]}", hybrid_name=longest)._meta.name == longest


def test_good_hybrid_names_work(context: Context) -> None:
    user = NmUser(data={"name": "u"})
    user.save()
    account = NmAccount(data={"label": "a", "user": user})
    account.save()
    assert NmAccount(account.guid).user == user
    assert user.accounts.guids == [account.guid]


# --- what a guid is ---------------------------------------------------------------------------


@given(st.uuids())
def test_every_uuid_in_canonical_form_is_a_guid(value: uuid.UUID) -> None:
    assert is_guid(str(value)) and valid_guid(str(value))
    assert check_guid(str(value), "guid") == str(value)
    assert not is_guid(str(value).upper()) or str(value) == str(value).upper()
    assert not is_guid(value)  # the UUID object is not its text


@pytest.mark.parametrize("bad", [*NOT_GUIDS, None, 5, uuid.UUID(int=7), b"x"])
def test_anything_else_is_not(bad: Any) -> None:
    assert not is_guid(bad) and not valid_guid(bad)
    with pytest.raises(InvalidValueError, match="canonical form"):
        check_guid(bad, "the guid")


def test_new_objects_get_guids() -> None:
    assert is_guid(NmUser().guid)


# --- where guids enter ------------------------------------------------------------------------


@pytest.mark.parametrize("bad", NOT_GUIDS)
def test_loading_by_a_bad_guid_is_refused(context: Context, bad: str) -> None:
    with pytest.raises(InvalidValueError, match="canonical form"):
        NmUser(bad)
    with pytest.raises(InvalidValueError, match="canonical form"):
        NmUser(guid=bad)


def test_loading_by_any_uuid_looks_it_up(context: Context) -> None:
    for absent in (str(uuid.uuid1()), str(uuid.UUID(int=0)), str(uuid.uuid4())):
        with pytest.raises(ObjectNotFoundError):
            NmUser(absent)


@pytest.mark.parametrize("bad", NOT_GUIDS)
def test_relation_guids_are_checked_at_assignment(bad: str) -> None:
    account = NmAccount(data={"label": "a"})
    with pytest.raises(InvalidValueError, match=r"(?s)NmAccount\.user_guid.*canonical form"):
        account.user_guid = bad
    assert account.user_guid is None
    with pytest.raises(InvalidValueError, match="canonical form"):
        NmAccount(data={"user_guid": bad})
    good = str(uuid.uuid4())
    account.user_guid = good
    assert account.user_guid == good


def _dump(records: dict[str, list[dict[str, Any]]]) -> io.StringIO:
    return io.StringIO(json.dumps({"format": "dal-dump", "version": 1, "namespace": "x", "hybrids": records}))


def test_load_refuses_bad_guids(context: Context) -> None:
    with pytest.raises(InvalidValueError, match=r"(?s)guid 'xyz' must be.*canonical form"):
        load(context, read_dump(_dump({"nmuser": [{"guid": "xyz", "data": {"name": "u"}}]})))
    user = str(uuid.uuid4())
    records = {"nmuser": [{"guid": user, "data": {"name": "u"}}],
               "nm-account_2": [{"guid": str(uuid.uuid4()), "data": {"user_guid": user.upper()}}]}
    with pytest.raises(InvalidValueError, match=r"(?s)NmAccount.user_guid must be a guid.*canonical form"):
        load(context, read_dump(_dump(records)))
    assert list(DataList(NmUser)) == []
    records["nm-account_2"][0]["data"]["user_guid"] = user
    assert load(context, read_dump(_dump(records))).total == 2
    assert [a.user_guid for a in NmUser(user).accounts] == [user]


@pytest.mark.parametrize("condition", [("guid", OP.EQUALS, "xyz"), ("guid", OP.IN, [GUID, "a/b"]),
                                       ("guid", OP.NOT_EQUALS, "XYZ"), ("user_guid", OP.EQUALS, "a/b"),
                                       ("user", OP.IN, ["nmuser"]), ("user.guid", OP.EQUALS, " ")])
def test_queries_refuse_bad_guids(condition: tuple[Any, ...]) -> None:
    with pytest.raises(InvalidQueryError, match="canonical form"):
        DataList(NmAccount, {"type": AND, "items": [condition]})


def test_queries_take_good_guids_and_guid_ranges(context: Context) -> None:
    user = NmUser(data={"name": "u"})
    user.save()
    assert DataList(NmUser, {"type": AND, "items": [("guid", OP.EQUALS, user.guid)]}).guids == [user.guid]
    assert DataList(NmUser, {"type": AND, "items": [("guid", OP.GE, "")]}).guids == [user.guid]
    absent = str(uuid.uuid4())
    assert DataList(NmAccount, {"type": AND, "items": [("user_guid", OP.IN, [absent, None])]}).guids == []


def test_copy_refuses_a_bad_guid_stored_by_an_older_dal(context: Context) -> None:
    """Before guids were checked, `dal load` stored "xyz"; copying such data elsewhere is refused."""
    assert context.persistent.commit([], [Put(context.keys.doc("nmuser", "xyz"), b'{"name": "u"}')]).ok
    target = dal.configure(str(context.persistent_url.render(hide_password=False)),
                           str(context.volatile_url.render(hide_password=False)),
                           namespace=context.namespace + "c")
    with pytest.raises(InvalidValueError, match=r"nmuser 'xyz': the guid must be a UUID in canonical form"):
        copy(context, target)
    assert target.persistent.scan(target.keys.root, limit=1) == []
