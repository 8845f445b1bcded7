"""dump, load and copy carry the migration steps their documents went through: `dal migrate` on the new
store runs none of them again, and a destination recording other steps is refused before any write."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import pytest
from test_transfer import in_namespace

from dal import DataObject, Property
from dal.backends.base import DeletePrefix, Put
from dal.config import Context
from dal.exceptions import BackendError, InvalidValueError
from dal.tools.migrate import migrate
from dal.tools.migrate.migrations import Migration
from dal.tools.transfer import dump as dump_module
from dal.tools.transfer.dump import dump, read_dump, select_hybrids
from dal.tools.transfer.load import copy, load
from dal.tools.transfer.steps import MigrationStepsError


class StepVolume(DataObject):
    """``size`` in bytes since step 1 (an older release stored KiB); ``name`` indexed: a schema record."""

    __properties: list[Property[Any]] = [Property("name", str, indexed=True),
                                         Property("size", int, default=0)]


class StepShelf(DataObject):
    __properties: list[Property[Any]] = [Property("label", str)]


def _kib_to_bytes(doc: dict[str, Any]) -> dict[str, Any]:
    return {**doc, "size": doc["size"] * 1024}


STEPS = [Migration(1, "StepVolume.size: KiB to bytes",
                   lambda step: step.transform(StepVolume, _kib_to_bytes))]


def _migrated(context: Context, sizes: tuple[int, ...] = (4, 8)) -> list[StepVolume]:
    """Save volumes as the older release did (KiB), then run step 1 on them."""
    volumes = [StepVolume(data={"name": f"v{size}", "size": size}) for size in sizes]
    for volume in volumes:
        volume.save()
    migrate(context, [StepVolume], migrations=STEPS)
    return volumes


def _sizes(context: Context) -> dict[str, int]:
    prefix = context.keys.docs("stepvolume")
    return {key[len(prefix):]: json.loads(entry.value)["size"]
            for key, entry in context.persistent.scan(prefix)}


def _done(context: Context) -> list[int]:
    """Return the numbers of the steps ``dal migrate`` recorded done in the namespace."""
    prefix = context.keys.migration_steps()
    return [int(key[len(prefix):]) for key, _ in context.persistent.scan(prefix)]


def _dump(context: Context, only: list[str] | None = None) -> str:
    out = io.StringIO()
    dump(context, out, select_hybrids(only) if only else None)
    return out.getvalue()


def test_copy_carries_the_steps_so_migrate_runs_none_again(context: Context) -> None:
    _migrated(context)
    source_sizes = _sizes(context)
    assert sorted(source_sizes.values()) == [4096, 8192]
    destination = in_namespace(context, f"{context.namespace}-copy")
    try:
        result = copy(context, destination)
        assert not result.mismatches
        report = migrate(destination, [StepVolume], migrations=STEPS)
        assert _sizes(destination) == source_sizes and report.steps == []  # not 4 MiB: step 1 ran once
        assert _done(destination) == [1]
        # schema records are not copied: the load recorded the hybrid it wrote into while empty, keys complete
        assert report.up_to_date, report.lines
    finally:
        destination.persistent.commit([], [DeletePrefix(destination.keys.root)])


def test_dump_and_load_carry_the_steps(local: Context) -> None:
    _migrated(local)
    text = _dump(local)
    assert json.loads(text)["steps"] == {"done": [json.loads(local.persistent.get(
        local.keys.migration_step(1)).value)], "midway": []}
    restored = in_namespace(local, "restored")
    load(restored, read_dump(io.StringIO(text)))
    assert migrate(restored, [StepVolume], migrations=STEPS).steps == []
    assert _sizes(restored) == _sizes(local)
    assert restored.persistent.get(restored.keys.migration_step(1)).value == \
        local.persistent.get(local.keys.migration_step(1)).value


def test_a_dump_from_before_dumps_carried_steps_loads_as_before(local: Context) -> None:
    _migrated(local)
    old = json.loads(_dump(local))
    del old["steps"]
    restored = in_namespace(local, "restored")
    load(restored, read_dump(io.StringIO(json.dumps(old))))
    assert _done(restored) == [] and len(_sizes(restored)) == 2


def test_a_step_left_midway_is_carried_and_resumed_where_it_stopped(local: Context) -> None:
    _migrated(local, ())  # step 1 recorded done, on no object
    volumes = sorted([StepVolume(data={"name": f"m{n}", "size": 1}) for n in range(3)],
                     key=lambda volume: volume.guid)
    for volume in volumes:
        volume.save()
    keys = local.keys
    # step 2 (size * 2) stopped after the first volume: it rewrote that one and recorded its cursor
    first = keys.doc("stepvolume", volumes[0].guid)
    local.persistent.commit([], [Put(first, json.dumps({"name": "m0", "size": 2}).encode()),
                                 Put(keys.migration_cursor(2, "stepvolume"), first.encode())])
    doubled = [*STEPS, Migration(2, "double", lambda step: step.transform(
        StepVolume, lambda doc: {**doc, "size": doc["size"] * 2}))]
    text = _dump(local)
    assert json.loads(text)["steps"]["midway"] == [{"number": 2, "hybrid": "stepvolume",
                                                     "after": volumes[0].guid}]
    restored = in_namespace(local, "restored")
    load(restored, read_dump(io.StringIO(text)))
    assert restored.persistent.get(restored.keys.migration_cursor(2, "stepvolume")).value == \
        restored.keys.doc("stepvolume", volumes[0].guid).encode()
    migrate(restored, [StepVolume], migrations=doubled)
    assert sorted(_sizes(restored).values()) == [2, 2, 2]  # each doubled exactly once


def test_a_destination_recording_other_steps_is_refused_before_any_write(local: Context) -> None:
    _migrated(local)
    text = _dump(local)
    other = in_namespace(local, "other")
    StepShelf(data={"label": "kept"}).save()  # other holds an object the dump does not overwrite
    assert _done(other) == []
    before = dict(other.persistent.scan(other.keys.root))
    for replace in (False, True):
        with pytest.raises(MigrationStepsError, match=r"records no migration step, but the documents of the "
                                                      r"dump went through step 1 done.*nothing was written"):
            load(other, read_dump(io.StringIO(text)), replace=replace)
        assert dict(other.persistent.scan(other.keys.root)) == before
    with pytest.raises(MigrationStepsError):
        copy(local, other, replace=True)
    assert dict(other.persistent.scan(other.keys.root)) == before


def test_replace_takes_the_dumps_steps_when_it_overwrites_every_stored_object(local: Context) -> None:
    volumes = _migrated(local)
    text = _dump(local)  # step 1 done
    # the namespace then went through a step 3 the dump's documents never did
    local.persistent.commit([], [Put(local.keys.migration_step(3), b'{"number": 3}')])
    load(local, read_dump(io.StringIO(text)), replace=True)
    assert _done(local) == [1]  # its documents are the dump's: step 3 is to run on them
    assert {volume.guid for volume in volumes} == set(_sizes(local))


def test_a_fresh_namespace_where_migrate_ran_takes_the_dumps_steps_with_replace(local: Context) -> None:
    _migrated(local)
    text = _dump(local)
    fresh = in_namespace(local, "fresh")
    fresh.persistent.commit([], [Put(fresh.keys.migration_step(1), b"{}"),
                                 Put(fresh.keys.migration_step(2), b"{}")])
    with pytest.raises(MigrationStepsError, match="pass --replace"):
        load(fresh, read_dump(io.StringIO(text)))
    load(fresh, read_dump(io.StringIO(text)), replace=True)
    assert _done(fresh) == [1]


def test_a_dump_refuses_steps_run_while_it_read(local: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    _migrated(local)
    reading = dump_module.read_documents
    ran = [1]

    def racing(*args: Any, **kwargs: Any) -> Iterator[Any]:
        yield from reading(*args, **kwargs)
        ran.append(ran[-1] + 1)  # a dal migrate meanwhile finishes one more step
        local.persistent.commit([], [Put(local.keys.migration_step(ran[-1]), b"{}")])

    monkeypatch.setattr(dump_module, "read_documents", racing)
    with pytest.raises(BackendError, match="dal migrate ran meanwhile"):
        _dump(local)
    with pytest.raises(BackendError, match="dal migrate ran meanwhile"):
        copy(local, in_namespace(local, "copy"))


@pytest.mark.parametrize("steps", [[], {"done": []}, {"done": [{"number": 0}], "midway": []},
                                   {"done": [{"number": 1}, {"number": 1}], "midway": []},
                                   {"done": [], "midway": [{"number": 2, "hybrid": "x", "after": "nope"}]}])
def test_a_dump_with_malformed_steps_is_refused(steps: Any) -> None:
    raw = {"format": "dal-dump", "version": 1, "namespace": "n", "hybrids": {}, "steps": steps}
    with pytest.raises(InvalidValueError, match=r"(?s)not a valid dal dump.*steps"):
        read_dump(io.StringIO(json.dumps(raw)))


def test_an_empty_dump_still_records_its_steps(local: Context) -> None:
    local.persistent.commit([], [Put(local.keys.migration_step(1), b'{"number": 1}')])
    target = in_namespace(local, "target")
    load(target, read_dump(io.StringIO(_dump(local))))
    assert _done(target) == [1]
