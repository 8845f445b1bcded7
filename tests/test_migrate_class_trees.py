"""``dal migrate`` steps naming a hybrid that has subclass hybrids: a step changing what a subclass hybrid
inherits must name that subclass hybrid too (its objects are stored under its own name); each subclass
hybrid named gets its own operations only."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from dal import DataObject, Property, Relation
from dal.config import Context
from dal.objects import schema
from dal.tools.migrate.migrations import MigrationError, Step
from dal.tools.migrate.migrator import Migration, migrate


@pytest.fixture(autouse=True)
def short_ttl(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(schema, "READY_TTL", 0.05)


def declare(version: int) -> tuple[Any, Any, Any]:
    """Version 1: Vm(name, size, legacy, host), BigVm(Vm) adding cores, HugeVm(BigVm) adding sockets;
    version 2: size is size_bytes, legacy gone, host is server, and a counter, gen, that transforms bump."""
    class TreeHost(DataObject, hybrid_name="mtreehost"):
        __properties: list[Property[Any]] = [Property("name", str)]

    if version == 1:
        class TreeVm(DataObject, hybrid_name="mtreevm"):
            __properties: list[Property[Any]] = [Property("name", str), Property("size", int, default=0),
                                                 Property("legacy", str, mandatory=False)]
            __relations = [Relation("host", TreeHost, "vms", mandatory=False)]
    else:
        class TreeVm(DataObject, hybrid_name="mtreevm"):  # type: ignore[no-redef]
            __properties: list[Property[Any]] = [Property("name", str),
                                                 Property("size_bytes", int, default=0),
                                                 Property("gen", int, default=0)]
            __relations = [Relation("server", TreeHost, "vms", mandatory=False)]

    class TreeBigVm(TreeVm, hybrid_name="mtreebigvm"):
        __properties: list[Property[Any]] = [Property("cores", int, default=1)]

    class TreeHugeVm(TreeBigVm, hybrid_name="mtreehugevm"):
        __properties: list[Property[Any]] = [Property("sockets", int, default=1)]

    return TreeVm, TreeBigVm, TreeHugeVm


def stored(context: Context, hybrid: str) -> list[dict[str, Any]]:
    return [json.loads(entry.value) for _, entry in context.persistent.scan(context.keys.docs(hybrid))]


def version_1(context: Context) -> tuple[str, str, str]:
    vm, big, huge = declare(1)
    objects = [vm(data={"name": "a", "size": 10, "legacy": "x"}),
               big(data={"name": "b", "size": 20, "cores": 4, "legacy": "y"}),
               huge(data={"name": "c", "size": 30, "cores": 8, "sockets": 2})]
    for obj in objects:
        obj.save()
    return objects[0].guid, objects[1].guid, objects[2].guid


def bump(doc: dict[str, Any]) -> dict[str, Any]:
    return {**doc, "gen": doc.get("gen", 0) + 1}


def leave(doc: dict[str, Any]) -> None:
    return None


OPERATIONS: dict[str, tuple[Callable[[Step, Any], None], str]] = {
    "rename_property": (lambda step, vm: step.rename_property(vm, "size", "size_bytes"),
                        "step.rename_property(TreeBigVm, 'size', 'size_bytes')"),
    "rename_relation": (lambda step, vm: step.rename_relation(vm, "host", "server"),
                        "step.rename_relation(TreeBigVm, 'host', 'server')"),
    "drop_field": (lambda step, vm: step.drop_field(vm, "legacy"), "step.drop_field(TreeBigVm, 'legacy')"),
    "transform": (lambda step, vm: step.transform(vm, bump), "step.transform(TreeBigVm, bump)"),
}


@pytest.mark.parametrize("dry_run", [False, True])
@pytest.mark.parametrize("operation", sorted(OPERATIONS))
def test_a_step_changing_what_subclass_hybrids_inherit_without_naming_them_is_refused(
        context: Context, operation: str, dry_run: bool) -> None:
    """Before, the step ran on the named hybrid's objects alone: the subclass hybrids' objects kept the
    old field (a renamed value then read as the new field's default) and the step was recorded done."""
    version_1(context)
    before = {name: stored(context, name) for name in ("mtreevm", "mtreebigvm", "mtreehugevm")}
    vm, big, huge = declare(2)
    describe, call = OPERATIONS[operation]
    steps = [Migration(1, "change Vm", lambda step: describe(step, vm))]
    with pytest.raises(MigrationError) as caught:
        migrate(context, [vm, big, huge], migrations=steps, dry_run=dry_run)
    message = str(caught.value)
    assert "TreeBigVm, TreeHugeVm" in message and call in message
    assert call.replace("TreeBigVm", "TreeHugeVm") in message and "step.transform(TreeHugeVm, fn)" in message
    # nothing written: not a document, not the step
    assert {name: stored(context, name) for name in before} == before
    assert context.persistent.get(f"{context.keys.root}m/steps/1") is None


def test_a_subclass_hybrid_storing_nothing_needs_no_operation(context: Context) -> None:
    """On a new store (a new environment, a CI store) every step is pending: one naming a base whose
    subclass hybrids store nothing runs, or adding a subclass hybrid would make every older step
    naming its base fail there until edited. A subclass hybrid that stores objects is still refused."""
    vm, _, _ = declare(1)
    vm(data={"name": "a", "size": 10}).save()
    vm, big, huge = declare(2)
    steps = [Migration(1, "change Vm", lambda step: step.rename_property(vm, "size", "size_bytes"))]
    assert migrate(context, [vm, big, huge], migrations=steps).ok
    assert [doc["size_bytes"] for doc in stored(context, "mtreevm")] == [10]


def test_a_subclass_hybrid_named_gets_its_own_operations_only(context: Context) -> None:
    """Each hybrid the step names gets what the step says for it: BigVm's own transform finds its size
    (stored in KiB) untouched by Vm's rename, HugeVm's objects are left out of Vm's transform."""
    small, large, huge_guid = version_1(context)
    vm, big, huge = declare(2)

    def big_in_kib(doc: dict[str, Any]) -> dict[str, Any]:
        return {**{k: v for k, v in doc.items() if k != "size"}, "size_bytes": doc["size"] * 1024}

    def describe(step: Step) -> None:
        step.rename_property(vm, "size", "size_bytes")
        step.transform(vm, bump)
        step.transform(big, big_in_kib)
        step.rename_property(huge, "size", "size_bytes")

    report = migrate(context, [vm, big, huge], migrations=[Migration(1, "bump", describe)], dry_run=True)
    planned = ("step 1 (bump): would rename property TreeVm.size to size_bytes; transform TreeVm with bump; "
               "transform TreeBigVm with big_in_kib; rename property TreeHugeVm.size to size_bytes")
    assert planned in report.lines
    assert migrate(context, [vm, big, huge], migrations=[Migration(1, "bump", describe)]).ok
    assert (vm(small).size_bytes, vm(small).gen) == (10, 1)
    assert (big(large).size_bytes, big(large).gen, big(large).cores) == (20 * 1024, 0, 4)
    assert (huge(huge_guid).size_bytes, huge(huge_guid).gen, huge(huge_guid).sockets) == (30, 0, 2)


def test_a_new_step_naming_the_subclass_hybrid_repairs_a_step_run_before(context: Context) -> None:
    """A step on a base hybrid that ran before steps were checked for subclass hybrids (recorded done, so
    not checked again) left their objects with the old field; a new step naming them moves it."""
    _, large, huge_guid = version_1(context)
    vm, big, huge = declare(2)

    def old_behaviour(step: Step) -> None:  # what a step naming Vm alone did: subclasses left as they were
        step.rename_property(vm, "size", "size_bytes")
        step.transform(big, leave)
        step.transform(huge, leave)

    assert migrate(context, [vm, big, huge], migrations=[Migration(1, "rename size", old_behaviour)]).ok
    assert (big(large).size_bytes, huge(huge_guid).size_bytes) == (0, 0)  # the value lost as read

    def repair(step: Step) -> None:
        step.rename_property(big, "size", "size_bytes")
        step.rename_property(huge, "size", "size_bytes")

    steps = [Migration(1, "rename size", lambda step: step.rename_property(vm, "size", "size_bytes")),
             Migration(2, "rename size in the subclass hybrids", repair)]
    assert migrate(context, [vm, big, huge], migrations=steps).ok
    assert (big(large).size_bytes, huge(huge_guid).size_bytes) == (20, 30)
    assert all("size" not in doc for name in ("mtreebigvm", "mtreehugevm") for doc in stored(context, name))
