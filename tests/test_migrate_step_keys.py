"""The keys a ``dal migrate`` step keeps up to date: each kind (index, unique) as the record lists it ready.

A property that becomes unique as well as indexed (or indexed as well as unique) has one kind of
key complete and the other still to be built when a step runs: the complete kind must follow the
step's changes in the same commit, and the unique check must hold, whatever the other kind's state.
The check after a run (against saves of older processes) likewise takes each kind on its own.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from migrate_hybrids import documents, key_state
from test_migrate_concurrent import before_check

from dal import DataList, DataObject, Property
from dal.backends.base import Put
from dal.config import Context
from dal.exceptions import UniqueConstraintError
from dal.objects import schema
from dal.tools.check.integrity import check
from dal.tools.migrate.migrations import Step
from dal.tools.migrate.migrator import Migration, MigrationError, migrate

NAME = "skpart"
INDEXED, UNIQUE, BOTH = ({"indexed": True, "unique": False}, {"indexed": False, "unique": True},
                         {"indexed": True, "unique": True})


@pytest.fixture(autouse=True)
def short_ttl(monkeypatch: pytest.MonkeyPatch) -> None:
    # migrate waits this long before deleting keys processes may still trust
    monkeypatch.setattr(schema, "READY_TTL", 0.05)


def declare(*, indexed: bool, unique: bool) -> Any:
    """(Re)declare the hybrid ``skpart``: ``code`` indexed and/or unique (the same class statement)."""
    class Part(DataObject, hybrid_name=NAME):
        __properties: list[Property[Any]] = [Property("code", str, indexed=indexed, unique=unique,
                                                      mandatory=False)]
    return Part


def stored_then(context: Context, codes: list[str], old: dict[str, bool], new: dict[str, bool]) -> Any:
    """Store parts with ``codes`` under the model ``old``, its keys built; return the model ``new``."""
    part = declare(**old)
    for code in codes:
        part(data={"code": code}).save()
    assert migrate(context, [part]).ok
    return declare(**new)


def codes_to(part: Any, fn: Any) -> list[Migration]:
    def describe(step: Step) -> None:
        step.transform(part, lambda doc: {**doc, "code": fn(doc["code"])})
    return [Migration(1, "change codes", describe)]


def query(part: Any, *values: str | None) -> int:
    return len(DataList(part, {"type": "AND", "items": [("code", "IN", list(values))]}))


def test_a_step_moves_the_complete_index_of_a_property_that_became_unique_too(context: Context) -> None:
    part = stored_then(context, ["a", "b"], INDEXED, BOTH)
    report = migrate(context, [part], migrations=codes_to(part, str.upper))
    assert report.ok, report.lines
    stored, wanted = key_state(context, part._meta)
    assert stored == wanted, "the index entries still hold the values the step replaced"
    assert query(part, None, "A") == 1  # answered from the index, ready now
    assert check(context).clean


def test_a_step_moves_the_complete_unique_keys_of_a_property_that_became_indexed_too(
        context: Context) -> None:
    part = stored_then(context, ["a"], UNIQUE, BOTH)
    assert migrate(context, [part], migrations=codes_to(part, str.upper)).ok
    stored, wanted = key_state(context, part._meta)
    assert stored == wanted, "the unique key still holds the value the step replaced"
    part(data={"code": "a"}).save()  # given up by the step: free
    with pytest.raises(UniqueConstraintError, match="another Part already has 'A'"):
        part(data={"code": "A"}).save()
    assert check(context).clean


@pytest.mark.parametrize("dry_run", [True, False], ids=["dry-run", "run"])
def test_a_step_giving_two_objects_one_value_of_a_property_that_became_indexed_too_stops(
        context: Context, dry_run: bool) -> None:
    part = stored_then(context, ["a", "b"], UNIQUE, BOTH)
    with pytest.raises(MigrationError, match=r"step 1 cannot rewrite Part [\w-]+: another object already "
                                             "holds the unique code 'X'"):
        migrate(context, [part], migrations=codes_to(part, lambda code: "X"), dry_run=dry_run)
    assert [doc["code"] for doc in documents(context, part._meta).values()].count("X") <= 1
    # the run stopped before the defaults and keys pass: only the index is left to build
    assert {problem.kind.value for problem in check(context).problems} == {"unbuilt_index"}


def test_the_check_after_a_run_repairs_an_index_made_ready_while_the_unique_keys_are_violated(
        local: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two objects share a value: the index is built and marked ready, the unique keys are not. An object
    an older process (not indexing ``code``) saves before the check gets its index entry from the check."""
    part = declare(indexed=False, unique=False)
    part(data={"code": "a"}).save()
    part(data={"code": "a"}).save()
    part = declare(indexed=True, unique=True)
    late = str(uuid.uuid4())

    def old_save() -> None:
        doc = json.dumps({"code": "late"}).encode()
        assert local.persistent.commit([], [Put(local.keys.doc(NAME, late), doc)]).ok

    before_check(monkeypatch, local, old_save)
    report = migrate(local, [part])
    assert not report.ok and len(report.violations) == 1  # the shared value: unique keys not built
    assert not any("no longer ready" in line for line in report.lines), report.lines
    assert any("1 object saved meanwhile" in line for line in report.lines), report.lines
    assert schema.read_record(local, NAME).indexed == {"code"}  # type: ignore[union-attr]
    assert local.persistent.get(local.keys.index(NAME, "code", "late", late)) is not None
