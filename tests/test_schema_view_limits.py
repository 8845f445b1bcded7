"""A create's check of the schema record it planned from (dal/objects/views.py), at the limits of a
commit and when it fails.

A commit sends the check once per hybrid, so it neither halves how many objects a ``save_many``
commit takes nor pushes a ``dal load`` batch over etcd's ``--max-txn-ops``; and when it fails
(the record changed since the view: here an older model stops keeping a one-to-one relation's keys
and links an object without one), the write is planned again from what the new record says, its
checks of one-to-one links included.
"""

from __future__ import annotations

import math
import uuid
from typing import Any

import pytest
from relation_hybrids import Owner, Passport, Pet

import dal
from dal import DataList
from dal.backends.base import Put
from dal.config import Context
from dal.exceptions import OneToOneError
from dal.objects import bulk, schema
from dal.objects.transaction import encode
from dal.tools.transfer.dump import parse_dump
from dal.tools.transfer.load import load

#: what one etcd transaction takes by default (--max-txn-ops), checks and writes each
TXN_OPS = 128


def _commits(context: Context, monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """Record (checks, ops) of each commit the test makes from now on."""
    seen: list[tuple[int, int]] = []
    real = context.commit

    def counted(checks, ops, invalidate=()):  # type: ignore[no-untyped-def]
        seen.append((len(checks), len(ops)))
        return real(checks, ops, invalidate)

    monkeypatch.setattr(context, "commit", counted)
    return seen


def test_a_save_many_commit_takes_as_many_creates_as_its_limits_allow(
        context: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    """Passports of stored owners are bound by their checks: one schema check per commit, not per
    object or group, leaves room for as many as the operations allow."""
    owners = [Owner(name=f"o{number}") for number in range(200)]
    dal.save_many(owners)
    Passport(number="warm").save()  # its hybrid's schema record written first, in a commit of its own
    seen = _commits(context, monkeypatch)
    dal.save_many([Passport(number="one", holder=owners[0])])
    (checks, ops), = seen
    per_check, per_op = checks - 1, ops  # the one schema check apart
    per_commit = min(bulk.MAX_OPS // per_op, (bulk.MAX_OPS - 1) // per_check)
    seen.clear()
    dal.save_many([Passport(number=f"p{number}", holder=owner) for number, owner in enumerate(owners[1:])])
    assert len(seen) == math.ceil(199 / per_commit), seen


def test_a_load_batch_stays_within_one_etcd_transaction(
        context: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch of two hybrids' creates checks each one's record once, and is cut to fit."""
    owner = Owner(name="stored")
    owner.save()
    dump = {"format": "dal-dump", "version": 1, "namespace": "x", "hybrids": {
        Owner._meta.name: [{"guid": str(uuid.uuid4()), "data": {"name": f"o{number}"}}
                           for number in range(3)],
        Pet._meta.name: [{"guid": str(uuid.uuid4()), "data": {"name": f"p{number}", "owner_guid": owner.guid}}
                         for number in range(62)]}}
    seen = _commits(context, monkeypatch)
    load(context, parse_dump(dump))
    assert DataList(Pet).count() == 62 and DataList(Owner).count() == 4
    assert seen and all(checks <= TXN_OPS - 1 and ops <= TXN_OPS - 1 for checks, ops in seen), seen


@pytest.mark.parametrize("how", ["save", "load"])
def test_a_write_planned_again_after_the_record_changed_checks_one_to_one_links_again(
        context: Context, monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    holder = Owner(name="o")
    holder.save()
    Passport(number="warm").save()  # recorded: the holder's one-to-one keys are complete
    assert "holder" in schema.onetoone_ready(context, Passport._meta)
    real, calls = context.commit, []

    def commit(checks: Any, ops: Any, invalidate: Any = ()) -> Any:
        calls.append(len(checks))
        if len(calls) == 1:  # an older model, between this write's plan and its commit
            record = schema.read_record(context, Passport._meta.name)
            assert record is not None
            schema.write_record(context, record.replace(onetoone=[]))  # it keeps no one-to-one key
            older, keys = str(uuid.uuid4()), context.keys
            document = encode({"number": "older", "holder_guid": holder.guid})
            real([], [Put(keys.doc("passport", older), document),
                      Put(keys.link("owner", holder.guid, "passport", "holder", older), b"")], [])
        return real(checks, ops, invalidate)

    monkeypatch.setattr(context, "commit", commit)
    with pytest.raises(OneToOneError):
        if how == "save":
            Passport(number="mine", holder=holder).save()
        else:
            mine = {"guid": str(uuid.uuid4()), "data": {"number": "mine", "holder_guid": holder.guid}}
            load(context, parse_dump({"format": "dal-dump", "version": 1, "namespace": "x",
                                      "hybrids": {"passport": [mine]}}))
    assert [passport.number for passport in DataList(Passport)
            if passport.holder is not None and passport.holder.guid == holder.guid] == ["older"]


def test_the_objects_of_a_commit_refused_by_a_concurrent_change_are_packed_again(
        context: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    """A full commit fails on one stored object another writer changed; meanwhile an older model
    stops keeping the one-to-one keys, so the others, planned again, each check their holder's links
    too: they no longer fit one commit, and go in several, none over the limits."""
    owners = [Owner(name=f"o{number}") for number in range(60)]
    dal.save_many(owners)
    changed = Passport(number="p0")
    changed.save()
    changed.number = "p0, here"
    created = [Passport(number=f"n{number}", holder=owners[number]) for number in range(41)]
    monkeypatch.setattr(schema, "READY_TTL", 0.0)  # every view read afresh: the record change is seen
    seen: list[tuple[int, int]] = []
    real = context.commit

    def commit(checks: Any, ops: Any, invalidate: Any = ()) -> Any:
        seen.append((len(checks), len(ops)))
        if len(seen) == 1:
            other = Passport(changed.guid)
            other.number = "p0, elsewhere"
            other.save()  # the concurrent change: this commit fails on its document
            result = real(checks, ops, invalidate)
            record = schema.read_record(context, Passport._meta.name)
            assert record is not None
            schema.write_record(context, record.replace(onetoone=[]))  # an older model keeps no such keys
            return result
        return real(checks, ops, invalidate)

    monkeypatch.setattr(context, "commit", commit)
    dal.save_many([changed, *created])
    assert len(seen) > 2 and all(checks <= bulk.MAX_OPS and ops <= bulk.MAX_OPS for checks, ops in seen), seen
    assert sorted(passport.number for passport in DataList(Passport)) == sorted(
        ["p0, here", *(f"n{number}" for number in range(41))])
