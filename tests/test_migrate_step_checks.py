"""``dal migrate`` steps against the keys and links of other objects: a dry run refuses what stops a run.

A step's rewrite of an object is committed with checks: a unique value it gives must not be held
by another object (its key stored, or written by an earlier rewrite of the same run), a one-to-one
target must not be taken, a target it links to must be stored. A dry run evaluates the same checks
in the run's order, so its exit status is the run's.
"""

from __future__ import annotations

from typing import Any

import pytest
from migrate_hybrids import declare, documents, dump
from test_migrate_build import declare_nics

from dal.backends.base import Put
from dal.config import Context
from dal.objects import schema
from dal.objects.transaction import encode
from dal.tools.migrate.migrations import Step
from dal.tools.migrate.migrator import Migration, MigrationError, migrate

MISSING = "0" * 32


@pytest.fixture(autouse=True)
def short_ttl(monkeypatch: pytest.MonkeyPatch) -> None:
    # migrate waits this long before deleting keys processes may still trust
    monkeypatch.setattr(schema, "READY_TTL", 0.05)


def disks(context: Context, serials: list[str | None]) -> Any:
    """Store version-2 disks ``d0``, ``d1``... with these serials, their unique keys built; return it."""
    model = declare(2)
    for index, serial in enumerate(serials):
        model.disk(data={"name": f"d{index}", "serial": serial}).save()
    assert migrate(context, [model.owner, model.disk]).ok
    return model


def transform(model: Any, fn: Any) -> list[Migration]:
    def describe(step: Step) -> None:
        step.transform(model.disk, fn)
    return [Migration(1, "the step", describe)]


def run(context: Context, model: Any, steps: list[Migration], dry_run: bool) -> Any:
    return migrate(context, [model.owner, model.disk], migrations=steps, dry_run=dry_run)


def serial_of(mapping: dict[str, str]) -> Any:
    """A transform giving disk ``name`` the serial ``mapping[name]`` (others unchanged)."""
    def step(doc: dict[str, Any]) -> dict[str, Any] | None:
        return {**doc, "serial": mapping[doc["name"]]} if doc["name"] in mapping else None
    return step


@pytest.mark.parametrize("dry_run", [True, False], ids=["dry-run", "run"])
def test_a_unique_value_another_object_holds_stops_a_run_and_its_dry_run(context: Context,
                                                                         dry_run: bool) -> None:
    model = disks(context, ["a", None])
    before = dump(context)
    with pytest.raises(MigrationError, match=r"step 1 cannot rewrite MigDisk [\w-]+: another object "
                                             r"already holds the unique serial 'a'; fix that object"):
        run(context, model, transform(model, serial_of({"d1": "a"})), dry_run)
    if dry_run:
        assert dump(context) == before


@pytest.mark.parametrize("dry_run", [True, False], ids=["dry-run", "run"])
def test_a_unique_value_an_earlier_rewrite_of_the_run_took_stops_both(context: Context,
                                                                      dry_run: bool) -> None:
    model = disks(context, [None, None, None])
    with pytest.raises(MigrationError, match="another object already holds the unique serial"):
        run(context, model, transform(model, serial_of({"d0": "x", "d1": "x", "d2": "x"})), dry_run)


@pytest.mark.parametrize("dry_run", [True, False], ids=["dry-run", "run"])
@pytest.mark.parametrize("frees_first", [True, False], ids=["freed-first", "taken-first"])
def test_a_value_moving_between_objects_passes_when_the_run_passes(context: Context, dry_run: bool,
                                                                   frees_first: bool) -> None:
    """Whether a value is free depends on the order objects are rewritten: the dry run follows it."""
    model = disks(context, ["s0", "s1"])
    by_guid = {doc["name"]: guid for guid, doc in documents(context, model.disk._meta).items()}
    first, second = sorted(by_guid, key=by_guid.__getitem__)  # the run rewrites documents in key order
    held = {first: f"s{first[1]}", second: f"s{second[1]}"}
    # one object gives up its value for a new one, the other takes it: the run passes only when the
    # object giving it up is rewritten first
    giver, taker = (first, second) if frees_first else (second, first)
    moves = {giver: "new", taker: held[giver]}
    steps = transform(model, serial_of(moves))
    if frees_first:
        assert run(context, model, steps, dry_run).ok
        if not dry_run:
            stored = documents(context, model.disk._meta).values()
            assert {doc["name"]: doc["serial"] for doc in stored} == moves
    else:
        taken = f"another object already holds the unique serial '{held[giver]}'"
        with pytest.raises(MigrationError, match=taken):
            run(context, model, steps, dry_run)


@pytest.mark.parametrize("dry_run", [True, False], ids=["dry-run", "run"])
def test_a_link_to_an_object_not_stored_stops_a_run_and_its_dry_run(context: Context, dry_run: bool) -> None:
    model = disks(context, [None])
    before = dump(context)
    with pytest.raises(MigrationError, match=f"it would link to mgowner {MISSING}, which is not stored"):
        run(context, model, transform(model, lambda doc: {**doc, "user_guid": MISSING}), dry_run)
    assert dump(context) == before


def test_a_dry_run_sees_each_object_as_earlier_steps_leave_it(context: Context) -> None:
    """Step 1 frees d0's value and gives d1 another, step 2 gives d1 the value step 1 gave it and d2
    the freed one: the run passes (step 2 leaves d1 as it is), so the dry run passes."""
    model = disks(context, ["a", None, None])
    steps = [Migration(1, "free", transform(model, serial_of({"d0": "b", "d1": "c"}))[0].func),
             Migration(2, "take", transform(model, serial_of({"d1": "c", "d2": "a"}))[0].func)]
    dry = run(context, model, steps, dry_run=True)
    assert dry.ok
    assert run(context, model, steps, dry_run=False).ok
    assert sorted(doc["serial"] for doc in documents(context, model.disk._meta).values()) == ["a", "b", "c"]


@pytest.mark.parametrize("dry_run", [True, False], ids=["dry-run", "run"])
def test_a_one_to_one_target_another_hybrid_of_the_family_holds_stops_both(context: Context,
                                                                            dry_run: bool) -> None:
    """The one-to-one constraint spans the subclass hybrids holding the relation, in both runs."""
    host_cls, nic_cls, fast_cls = declare_nics(True)
    taken, free = host_cls(data={"name": "h1"}), host_cls(data={"name": "h2"})
    taken.save()
    free.save()
    nic_cls(data={"name": "a", "host": taken}).save()
    fast_cls(data={"name": "b", "host": free}).save()
    assert migrate(context, [host_cls, nic_cls, fast_cls]).ok

    def describe(step: Step) -> None:
        step.transform(fast_cls, lambda doc: {**doc, "host_guid": taken.guid})

    before = dump(context)
    with pytest.raises(MigrationError, match=f"another bnic already points at {taken.guid} through the "
                                             "one-to-one host"):
        migrate(context, [host_cls, nic_cls, fast_cls], migrations=[Migration(1, "move", describe)],
                dry_run=dry_run)
    assert dump(context) == before


def test_a_dry_run_after_a_stopped_step_sees_the_documents_it_already_rewrote(context: Context) -> None:
    """Documents up to a stopped step's cursor are already as it leaves them: applying it again (a
    transform that cannot run twice) made the dry run refuse what the run then did."""
    model = disks(context, [None, None, None])
    keys, name = context.keys, model.disk._meta.name
    for guid, doc in documents(context, model.disk._meta).items():  # the serial still in an old field
        old = encode({**doc, "sn": f"S{guid}"})
        assert context.persistent.commit([], [Put(keys.doc(name, guid), old)]).ok
    rewritten: list[str] = []

    def move_serial(doc: dict[str, Any]) -> dict[str, Any]:
        if len(rewritten) == 1 and stopping:
            raise RuntimeError("stopped")  # the first run stops after one object
        rewritten.append(doc["name"])
        moved = dict(doc)
        moved["serial"] = moved.pop("sn")  # a KeyError on a document already moved
        return moved

    steps = [Migration(1, "serial from sn", transform(model, move_serial)[0].func),
             Migration(2, "tier", transform(model, lambda doc: {**doc, "tier": "gold"})[0].func)]
    stopping = True
    with pytest.raises(MigrationError, match="stopped"):
        run(context, model, steps, dry_run=False)
    stopping = False
    assert run(context, model, steps, dry_run=True).ok
    assert run(context, model, steps, dry_run=False).ok
    stored = documents(context, model.disk._meta)
    assert {guid: (doc["serial"], doc["tier"]) for guid, doc in stored.items()} == {
        guid: (f"S{guid}", "gold") for guid in stored}


@pytest.mark.parametrize("dry_run", [True, False], ids=["dry-run", "run"])
@pytest.mark.parametrize(("fn", "how"), [
    (lambda doc: {**doc, "name": None}, "sets it to None"),
    (lambda doc: {k: v for k, v in doc.items() if k != "name"}, "drops it and it has no default")],
    ids=["set-to-none", "dropped"])
def test_a_step_leaving_a_mandatory_property_none_is_refused(context: Context, dry_run: bool, fn: Any,
                                                             how: str) -> None:
    """The object could not be saved again, not even unchanged: nothing of it is written."""
    model = disks(context, ["a"])
    before = dump(context)
    with pytest.raises(MigrationError, match=rf"step 1 would store MigDisk.name = None in [\w-]+, which is "
                                             rf"mandatory \(the step {how}\); the object could not be saved"):
        run(context, model, transform(model, fn), dry_run)
    assert dump(context) == before


def test_a_step_may_set_none_in_an_optional_property_and_leave_a_mandatory_one_none(context: Context) -> None:
    """Only a change to None is refused: a mandatory value already None (stored by an older model) that
    the step leaves as it is does not stop it."""
    model = disks(context, ["a"])
    keys, name = context.keys, model.disk._meta.name
    guid, doc = next(iter(documents(context, model.disk._meta).items()))
    assert context.persistent.commit([], [Put(keys.doc(name, guid), encode({**doc, "name": None}))]).ok
    assert run(context, model, transform(model, lambda doc: {**doc, "serial": None, "size": 7}), False).ok
    stored = documents(context, model.disk._meta)[guid]
    assert (stored["name"], stored["serial"], stored["size"]) == (None, None, 7)


@pytest.mark.parametrize("dry_run", [True, False], ids=["dry-run", "run"])
def test_a_step_giving_a_document_a_guid_is_refused(context: Context, dry_run: bool) -> None:
    """The guid is the key a document is stored under: a result holding one is refused, not stored."""
    model = disks(context, ["a"])
    before = dump(context)
    with pytest.raises(MigrationError, match=r"returned a document holding 'guid' \('x'\): a step cannot "
                                             r"change an object's guid"):
        run(context, model, transform(model, lambda doc: {**doc, "guid": "x"}), dry_run)
    assert dump(context) == before


def test_a_step_passing_on_a_guid_the_document_already_held_is_not_refused(context: Context) -> None:
    """A stray ``guid`` field an older dal stored is left as it was (``dal check`` reports it): a step
    copying the document is not stopped by it, and may drop it."""
    model = disks(context, ["a"])
    keys, name = context.keys, model.disk._meta.name
    guid, doc = next(iter(documents(context, model.disk._meta).items()))
    assert context.persistent.commit([], [Put(keys.doc(name, guid), encode({**doc, "guid": "x"}))]).ok
    without = transform(model, lambda doc: {k: v for k, v in doc.items() if k != "guid"})[0].func
    steps = [Migration(1, "tier", transform(model, lambda doc: {**doc, "tier": "gold"})[0].func),
             Migration(2, "no guid", without)]
    assert run(context, model, steps, False).ok
    assert documents(context, model.disk._meta)[guid] == {**doc, "tier": "gold"}
