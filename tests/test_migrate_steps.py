"""``dal migrate`` steps: what a step stores, what a failing one says, a dry run refusing as a run does."""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from migrate_hybrids import bump, declare, documents, dump

from dal import DataList
from dal.backends.base import Delete, Put
from dal.config import Context, configure
from dal.objects import schema
from dal.objects.transaction import encode
from dal.tools.check.integrity import check
from dal.tools.migrate.migrations import Step
from dal.tools.migrate.migrator import Migration, MigrationError, migrate

TESTS = Path(__file__).parent
SILVER = {"type": "AND", "items": [("tier", "EQUALS", "silver")]}


@pytest.fixture(autouse=True)
def short_ttl(monkeypatch: pytest.MonkeyPatch) -> None:
    # migrate waits this long before deleting keys processes may still trust
    monkeypatch.setattr(schema, "READY_TTL", 0.05)


def version_2(context: Context, count: int) -> Any:
    """Store ``count`` version-1 disks, migrate them to version 2 (tier indexed, keys built); return it."""
    old = declare(1)
    for index in range(count):
        old.disk(data={"name": f"d{index}", "size": index}).save()
    model = declare(2)
    assert migrate(context, [model.owner, model.disk]).ok
    return model


def drop_tier(doc: dict[str, Any]) -> dict[str, Any] | None:
    return {k: v for k, v in doc.items() if k != "tier"} if "tier" in doc else None


def test_a_step_dropping_a_field_stores_its_default_and_the_keys_queries_ask_for(context: Context) -> None:
    model = version_2(context, 3)
    gold = next(iter(DataList(model.disk)))
    gold.tier = "gold"
    gold.save()

    def describe(step: Step) -> None:
        step.transform(model.disk, drop_tier)

    report = migrate(context, [model.owner, model.disk], migrations=[Migration(1, "reset tier", describe)])
    assert report.ok
    assert len(DataList(model.disk, SILVER)) == 3  # the index entries hold what reads return
    assert [doc["tier"] for doc in documents(context, model.disk._meta).values()] == ["silver"] * 3
    assert check(context).clean


def test_check_reports_and_repairs_the_key_of_a_field_a_document_lacks(context: Context) -> None:
    """A document lacking a field reads its default: its built keys must be those of the default."""
    model = version_2(context, 2)
    guid, doc = next(iter(documents(context, model.disk._meta).items()))
    keys, name = context.keys, model.disk._meta.name
    # what a step dropping the field used to leave: the document without it, its entry for None
    assert context.persistent.commit([], [
        Put(keys.doc(name, guid), encode({k: v for k, v in doc.items() if k != "tier"})),
        Delete(keys.index(name, "tier", "silver", guid)), Put(keys.index(name, "tier", None, guid), b"")]).ok
    report = check(context, repair=True)
    found = sorted(problem.kind.value for problem in report.problems)
    assert found == ["missing_index", "stale_index"], report.problems
    assert check(context).clean
    assert len(DataList(model.disk, SILVER)) == 2
    # a save of the object, still lacking the field in its stored document, moves the repaired entry
    disk = model.disk(guid)
    disk.tier = "gold"
    disk.save()
    assert check(context).clean
    assert guid not in DataList(model.disk, SILVER).guids


def test_a_step_function_that_raises_is_a_migration_error_naming_the_step(context: Context) -> None:
    model = declare(2)

    def broken(step: Step) -> None:
        raise KeyError("oops")

    before = dump(context)
    with pytest.raises(MigrationError, match=r"step 1 \(broken\): .*raised KeyError: 'oops'"):
        migrate(context, [model.owner, model.disk], migrations=[Migration(1, "broken", broken)])
    assert dump(context) == before


@pytest.mark.parametrize("dry_run", [True, False])
def test_a_dry_run_refuses_what_the_run_refuses(context: Context, dry_run: bool) -> None:
    model = version_2(context, 2)

    def describe(step: Step) -> None:
        step.transform(model.disk, lambda doc: {**doc, "size": "seven"})

    before = dump(context)
    with pytest.raises(MigrationError, match=r"step 1 would store MigDisk\.size = 'seven' in .*cannot read"):
        migrate(context, [model.owner, model.disk], migrations=[Migration(1, "bad size", describe)],
                dry_run=dry_run)
    assert dump(context) == before


# --- the command, in a subprocess -----------------------------------------------------------------

STEPS = '''
from migrate_hybrids import declare
from dal.tools.migrate.migrator import migration

MODEL = declare(2, prefix="mgsteps")


@migration(1, "the step")
def _(step):
    BODY
'''


def run_dal(tmp_path: Path, url: str, body: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``dal migrate`` with a module declaring one step whose function runs ``body``."""
    (tmp_path / "mgsteps_module.py").write_text(STEPS.replace("BODY", body))
    environment = {k: v for k, v in os.environ.items() if not k.startswith("DAL_")}
    environment["PYTHONPATH"] = os.pathsep.join([str(TESTS), str(tmp_path)])
    return subprocess.run([sys.executable, "-m", "dal", "migrate", *args, "--persistent", url,
                           "--hybrids", "mgsteps_module"], cwd=tmp_path, env=environment,
                          capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.parametrize("dry_run", [["--dry-run"], []])
def test_cli_a_failing_step_exits_2_naming_it(tmp_path: Path, dry_run: list[str]) -> None:
    url = f"sqlite:///{tmp_path}/x.db"
    configure(url, "memory://", namespace="dal")  # the store exists: a dry run opens no new one
    result = run_dal(tmp_path, url, "raise KeyError('oops')", *dry_run)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: step 1 (the step): ")
    assert "raised KeyError: 'oops'" in result.stderr and "Traceback" not in result.stderr


def test_cli_a_dry_run_refuses_a_value_the_model_cannot_read(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/x.db"
    context = configure(url, "memory://", namespace="dal")
    declare(2, prefix="mgsteps").disk(data={"name": "d", "size": 1}).save()
    before = dump(context)
    body = "step.transform(MODEL.disk, lambda doc: {**doc, 'size': 'seven'})"
    results = [run_dal(tmp_path, url, body, *dry_run) for dry_run in (["--dry-run"], [])]
    assert [result.returncode for result in results] == [2, 2], [result.stderr for result in results]
    assert all("MigDisk.size = 'seven'" in result.stderr for result in results)
    assert json.dumps(sorted(dump(context))) == json.dumps(sorted(before))


def test_an_object_several_passes_write_counts_once_as_in_the_dry_run(context: Context) -> None:
    """Step 2 rewrites each disk, then the defaults pass fills each: five objects changed, not ten."""
    old = declare(2)
    for index in range(5):
        old.disk(data={"name": f"d{index}", "size": index}).save()
    new = declare(3)
    steps = [Migration(2, "count generations", bump(new))]
    dry = migrate(context, [new.owner, new.disk], migrations=steps, dry_run=True)
    report = migrate(context, [new.owner, new.disk], migrations=steps)
    assert dict(dry.objects) == dict(report.objects) == {"mgdisk": 5}
    # the owners: none stored, so their record alone is written
    assert report.lines[-1] == ("migrated: 1 step run, 5 objects changed, 1 schema record written (no "
                                "object of those hybrids needed a change)")


@pytest.mark.parametrize("value", [datetime.datetime(2020, 1, 1, tzinfo=datetime.timezone.utc), {1, 2}, b"x",
                                   float("nan")], ids=["datetime", "set", "bytes", "nan"])
@pytest.mark.parametrize("dry_run", [True, False], ids=["dry-run", "run"])
def test_a_step_returning_what_json_cannot_hold_is_refused_by_name(context: Context, value: Any,
                                                                    dry_run: bool) -> None:
    """A dry run and a run refuse it alike, naming the field, before anything is written."""
    model = version_2(context, 1)
    before = dump(context)

    def describe(step: Step) -> None:
        step.transform(model.disk, lambda doc: {**doc, "extra": value})

    with pytest.raises(MigrationError, match=r"would store MigDisk\.extra = .*which JSON cannot hold"):
        migrate(context, [model.owner, model.disk], migrations=[Migration(1, "bad", describe)],
                dry_run=dry_run)
    assert dump(context) == before
