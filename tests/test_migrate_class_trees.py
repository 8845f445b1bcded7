"""``dal migrate`` steps naming a hybrid that has subclass hybrids: they reach the subclass hybrids too."""

from __future__ import annotations

import json
from typing import Any

import pytest

from dal import DataObject, Property
from dal.config import Context
from dal.objects import schema
from dal.tools.migrate.migrations import Step
from dal.tools.migrate.migrator import Migration, migrate


@pytest.fixture(autouse=True)
def short_ttl(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(schema, "READY_TTL", 0.05)


def declare(version: int) -> tuple[Any, Any]:
    """Version 1: Vm(name, size, legacy), BigVm(Vm) adding cores; version 2: size is size_bytes, legacy gone,
    and a counter, gen, that transforms bump."""
    if version == 1:
        class TreeVm(DataObject, hybrid_name="mtreevm"):
            __properties: list[Property[Any]] = [Property("name", str), Property("size", int, default=0),
                                                 Property("legacy", str, mandatory=False)]
    else:
        class TreeVm(DataObject, hybrid_name="mtreevm"):  # type: ignore[no-redef]
            __properties: list[Property[Any]] = [Property("name", str),
                                                 Property("size_bytes", int, default=0),
                                                 Property("gen", int, default=0)]

    class TreeBigVm(TreeVm, hybrid_name="mtreebigvm"):
        __properties: list[Property[Any]] = [Property("cores", int, default=1)]

    return TreeVm, TreeBigVm


def stored(context: Context, hybrid: str) -> list[dict[str, Any]]:
    return [json.loads(entry.value) for _, entry in context.persistent.scan(context.keys.docs(hybrid))]


def version_1(context: Context) -> tuple[str, str]:
    vm, big = declare(1)
    small = vm(data={"name": "a", "size": 10, "legacy": "x"})
    small.save()
    large = big(data={"name": "b", "size": 20, "cores": 4, "legacy": "y"})
    large.save()
    return small.guid, large.guid


def bump(doc: dict[str, Any]) -> dict[str, Any]:
    return {**doc, "gen": doc.get("gen", 0) + 1}


@pytest.mark.parametrize("dry_run", [False, True])
def test_a_rename_naming_a_base_hybrid_moves_the_value_in_its_subclass_hybrids(context: Context,
                                                                               dry_run: bool) -> None:
    small, large = version_1(context)
    vm, big = declare(2)

    def describe(step: Step) -> None:
        step.rename_property(vm, "size", "size_bytes")

    report = migrate(context, [vm, big], migrations=[Migration(1, "rename size", describe)], dry_run=dry_run)
    assert report.ok
    assert "rename property TreeBigVm.size to size_bytes" in "\n".join(report.lines) or not dry_run
    assert sum(report.objects.values()) == 2
    if not dry_run:
        assert (vm(small).size_bytes, big(large).size_bytes) == (10, 20)  # not the default 0
        assert all("size" not in doc for doc in stored(context, "mtreebigvm"))


def test_a_drop_and_a_transform_naming_a_base_hybrid_reach_its_subclass_hybrids(context: Context) -> None:
    small, large = version_1(context)
    vm, big = declare(2)

    def describe(step: Step) -> None:
        step.rename_property(vm, "size", "size_bytes")
        step.drop_field(vm, "legacy")
        step.transform(vm, bump)

    assert migrate(context, [vm, big], migrations=[Migration(1, "tidy", describe)]).ok
    assert [(doc.get("legacy"), doc["gen"]) for doc in stored(context, "mtreebigvm")] == [(None, 1)]
    assert (vm(small).gen, big(large).gen, big(large).cores) == (1, 1, 4)


def test_a_subclass_hybrid_the_step_names_itself_gets_its_own_operation_only(context: Context) -> None:
    _, large = version_1(context)
    vm, big = declare(2)

    def describe(step: Step) -> None:
        step.rename_property(vm, "size", "size_bytes")
        step.transform(vm, bump)
        step.transform(big, lambda doc: None)  # a subclass hybrid left as it is

    assert migrate(context, [vm, big], migrations=[Migration(1, "bump", describe)]).ok
    assert (big(large).gen, big(large).size_bytes) == (0, 20)
