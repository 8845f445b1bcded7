"""``dal migrate``: the library on every store pair, then the command as users run it."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from conftest import persistent_url_for
from migrate_hybrids import Model, count_generation, declare, documents, dump, key_state, steps

from dal import DataList
from dal.backends.base import DeletePrefix
from dal.config import Context, configure
from dal.exceptions import ConfigurationError
from dal.objects import schema
from dal.tools.migrate.migrations import Step
from dal.tools.migrate.migrator import EXIT_AFTER_ENV, Migration, MigrationError, Report, migrate, migration

TESTS = Path(__file__).parent


@pytest.fixture(autouse=True)
def short_ttl(monkeypatch: pytest.MonkeyPatch) -> None:
    # migrate waits this long before deleting keys processes may still trust
    monkeypatch.setattr(schema, "READY_TTL", 0.05)


def seed(count: int, *, prefix: str = "mg", duplicate_serial: bool = False) -> tuple[Model, dict[str, Any]]:
    """Store ``count`` version-1 disks owned by one owner; return the model and {guid: size}."""
    model = declare(1, prefix)
    owner = model.owner(data={"name": "bob"})
    owner.save()
    sizes = {}
    for index in range(count):
        serial = "dup" if duplicate_serial and index < 2 else f"s{index}"
        disk = model.disk(data={"name": f"d{index}", "size": index * 10, "serial": serial,
                                "legacy": f"l{index}", "user": owner})
        disk.save()
        sizes[disk.guid] = index * 10
    return model, sizes


def run(context: Context, model: Model, **options: Any) -> Report:
    return migrate(context, [model.owner, model.disk], **options)


def assert_keys_complete(context: Context, model: Model) -> None:
    stored, wanted = key_state(context, model.disk._meta)
    assert stored == wanted
    record = schema.read_record(context, model.disk._meta.name)
    assert record is not None
    assert record.ready_for(model.disk._meta) == {p.name for p in model.disk._meta.properties.values()
                                                  if p.indexed or p.unique}
    assert record.model == schema.describe(model.disk._meta)


def test_before_migration_reads_see_defaults_and_queries_scan(context: Context) -> None:
    _, sizes = seed(6)
    new = declare(2)
    meta = new.disk._meta
    disk = new.disk(next(iter(sizes)))
    assert disk.tier == "silver"  # a read fills the default of a property the document lacks
    assert not any("tier" in doc for doc in documents(context, meta).values())
    # the planner must not trust tier's keys (none exist) nor serial's (not built yet)
    assert schema.ready_indexes(context, meta) == {"name"}
    query = {"type": DataList.where_operator.AND, "items": [("tier", DataList.operator.EQUALS, "silver")]}
    assert sorted(DataList(new.disk, query).guids) == sorted(sizes)
    report = run(context, new)
    assert report.ok and not report.up_to_date
    assert_keys_complete(context, new)
    assert all(doc["tier"] == "silver" for doc in documents(context, meta).values())
    assert schema.ready_indexes(context, meta) == {"name", "tier", "serial"}
    assert sorted(DataList(new.disk, query).guids) == sorted(sizes)


def test_keys_of_properties_no_longer_indexed_or_unique_are_removed(context: Context) -> None:
    seed(4)
    root = context.keys.root
    assert any(key.startswith(f"{root}i/mgdisk/legacy/") for key in dump(context))
    new = declare(2)
    run(context, new)
    assert not any(key.startswith((f"{root}i/mgdisk/legacy/", f"{root}u/mgdisk/legacy/"))
                   for key in dump(context))
    assert_keys_complete(context, new)


def test_a_second_run_does_nothing(context: Context) -> None:
    seed(5)
    new = declare(3)
    run(context, new, migrations=steps(new))
    before = dump(context)
    again = run(context, new, migrations=steps(new))
    assert again.up_to_date and again.commits == 0
    assert again.lines[-1].startswith("up to date")
    assert dump(context) == before


def test_a_dry_run_writes_nothing_and_says_what_a_run_would_do(context: Context) -> None:
    seed(5, duplicate_serial=True)
    new = declare(3)
    before = dump(context)
    report = run(context, new, migrations=steps(new), dry_run=True)
    assert dump(context) == before
    assert report.commits == 0 and not report.ok and report.objects["mgdisk"] == 5
    text = "\n".join(report.lines)
    assert "step 1 (rename Disk.size and Disk.user): would rename property MigDisk.size to size_bytes" in text
    assert "mgdisk: 5 objects; step 1 would change 5; step 2 would change 5" in text
    assert "would fill defaults for tier (5)" in text  # generation is set by step 2, size_bytes by step 1
    assert "would build index keys of tier" in text and "would remove index keys of legacy" in text
    assert "MigDisk.serial = 'dup' is held by 2 objects" in text


def test_a_unique_violation_is_reported_and_only_the_shared_value_is_keyed(context: Context) -> None:
    old, _ = seed(5, duplicate_serial=True)
    dup = sorted(guid for guid, doc in documents(context, old.disk._meta).items() if doc["serial"] == "dup")
    new = declare(2)
    report = run(context, new)
    assert not report.ok
    [violation] = report.violations
    assert (violation.field, violation.value, sorted(violation.guids)) == ("serial", "dup", dup)
    assert any(dup[0] in line and dup[1] in line for line in report.lines)
    root = context.keys.root
    # no unique key of serial is built, but the shared value's, given to one holder (no new one can take it)
    shared = context.keys.unique("mgdisk", "serial", "dup")
    assert {key: value for key, value in dump(context).items()
            if key.startswith(f"{root}u/mgdisk/serial/")} == {shared: dup[0].encode()}
    assert schema.ready_indexes(context, new.disk._meta) == {"name", "tier"}  # the rest proceeded
    stored, wanted = key_state(context, new.disk._meta)
    assert {key: value for key, value in stored.items() if key != shared} == {
        key: value for key, value in wanted.items() if "/serial/" not in key}
    # fixed by hand, a new run builds the constraint
    fixed = new.disk(dup[1])
    fixed.serial = "fixed"
    fixed.save()
    assert run(context, new).ok
    assert_keys_complete(context, new)


def test_steps_rename_and_transform_exactly_once(context: Context) -> None:
    old, sizes = seed(7)
    owner_guid = next(iter(documents(context, old.owner._meta)))
    new = declare(3)
    report = run(context, new, migrations=steps(new))
    assert report.ok and report.steps == [1, 2]
    docs = documents(context, new.disk._meta)
    assert {guid: doc["size_bytes"] for guid, doc in docs.items()} == sizes
    assert all("size" not in doc and "user_guid" not in doc for doc in docs.values())
    assert all(doc["owner_guid"] == owner_guid and doc["generation"] == 1 for doc in docs.values())
    root = context.keys.root
    links = [key for key in dump(context) if key.startswith(f"{root}l/")]
    assert sorted(links) == sorted(context.keys.link("mgowner", owner_guid, "mgdisk", "owner", guid)
                                   for guid in sizes)
    assert sorted(new.owner(owner_guid).disks_guids) == sorted(sizes)
    assert new.disk(next(iter(sizes))).owner.name == "bob"
    assert set(dump(context)) >= {context.keys.migration_step(1), context.keys.migration_step(2)}
    assert not any(key.startswith(f"{root}m/cursor/") for key in dump(context))
    assert_keys_complete(context, new)
    assert run(context, new, migrations=steps(new)).steps == []
    assert all(doc["generation"] == 1 for doc in documents(context, new.disk._meta).values())


def test_a_rename_keeps_a_value_the_new_model_already_stored(context: Context) -> None:
    _, sizes = seed(3)
    new = declare(3)
    first, second = list(sizes)[:2]
    # saved by the new model before the step ran: the default lands beside the old value...
    untouched = new.disk(first)
    untouched.name = "renamed-by-new-code"
    untouched.save()
    # ...or a deliberate value does
    chosen = new.disk(second)
    chosen.size_bytes = 12345
    chosen.save()
    run(context, new, migrations=steps(new))
    docs = documents(context, new.disk._meta)
    assert docs[first]["size_bytes"] == sizes[first]
    assert docs[second]["size_bytes"] == 12345


def test_a_step_that_names_an_undeclared_property_fails_before_writing(context: Context) -> None:
    seed(2)
    new = declare(3)

    def broken(step: Step) -> None:
        step.rename_property(new.disk, "size", "nosuch")

    before = dump(context)
    with pytest.raises(MigrationError, match="declares no property 'nosuch'"):
        run(context, new, migrations=[Migration(1, "broken", broken)])
    assert dump(context) == before


def test_a_transform_that_fails_names_the_object(context: Context) -> None:
    seed(1)
    new = declare(3)

    def explode(doc: dict[str, Any]) -> dict[str, Any]:
        raise KeyError("boom")

    def describe(step: Step) -> None:
        step.transform(new.disk, explode)

    with pytest.raises(MigrationError, match="transform explode of MigDisk raised KeyError"):
        run(context, new, migrations=[Migration(1, "explode", describe)])
    assert context.keys.migration_step(1) not in dump(context)


def test_step_numbers_are_unique(monkeypatch: pytest.MonkeyPatch) -> None:
    from dal.tools.migrate import migrations

    monkeypatch.setattr(migrations, "_declared", {})
    migration(7, "first")(lambda step: None)
    with pytest.raises(ConfigurationError, match="step 7 is declared twice"):
        migration(7, "second")(count_generation)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="int >= 1"):
        migration(0, "zero")
    assert [m.number for m in migrations.declared_migrations()] == [7]


def test_two_steps_of_one_name_in_one_module_are_not_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """The docs' style names every step ``_``: a second ``@migration(1)`` is a mistake, not the first
    step imported again (which it replaced, silently, and the lost step was recorded done)."""
    from dal.tools.migrate import migrations

    monkeypatch.setattr(migrations, "_declared", {})

    @migration(1, "rename size to size_bytes")
    def _(step: Step) -> None:
        pass

    first = _
    with pytest.raises(ConfigurationError, match="step 1 is declared twice"):
        @migration(1, "a second step 1, by mistake")
        def _(step: Step) -> None:
            pass
    migration(1, "rename size to size_bytes")(first)  # the same function again (a re-import): fine
    assert [m.description for m in migrations.declared_migrations()] == ["rename size to size_bytes"]


def test_migrating_beside_a_live_writer_leaves_every_object_with_its_keys(context: Context) -> None:
    _, sizes = seed(120)
    new = declare(2)
    guids = list(sizes)
    stop = threading.Event()
    errors: list[BaseException] = []
    saved = [0]

    def write() -> None:
        rng = random.Random(7)
        try:
            while not stop.is_set():
                if rng.random() < 0.3:
                    new.disk(data={"name": f"new{saved[0]}", "serial": f"n{saved[0]}",
                                   "tier": rng.choice(["gold", "silver"])}).save()
                else:
                    disk = new.disk(rng.choice(guids))
                    disk.tier = rng.choice(["gold", "silver"])
                    disk.name = f"x{rng.randrange(1000)}"
                    disk.serial = f"w{saved[0]}"
                    disk.save()
                saved[0] += 1
        except BaseException as exc:  # surfaced by the main thread
            errors.append(exc)

    writer = threading.Thread(target=write)
    writer.start()
    try:
        report = run(context, new)
    finally:
        stop.set()
        writer.join()
    assert not errors
    assert saved[0] > 0 and report.ok
    assert_keys_complete(context, new)


# --- the command, in a subprocess -----------------------------------------------------------------


def run_dal(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("DAL_")}
    environment["PYTHONPATH"] = str(TESTS)
    environment.update(env or {})
    return subprocess.run([sys.executable, "-m", "dal", *args], cwd=cwd, env=environment,
                          capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture(params=["sqlite", "etcd"])
def cli_store(request: pytest.FixtureRequest, tmp_path: Path, namespace: str) -> Any:
    """Yield (context, store arguments) for one persistent store; clean the namespace afterwards."""
    url = persistent_url_for(request.param, request, tmp_path)
    context = configure(url, "memory://", namespace=namespace)
    yield context, ["--persistent", url, "--namespace", namespace, "--hybrids", "migrate_hybrids_cli"]
    context.persistent.commit([], [DeletePrefix(context.keys.root)])


def test_help(tmp_path: Path) -> None:
    result = run_dal("migrate", "--help", cwd=tmp_path)
    assert result.returncode == 0
    assert "--dry-run" in result.stdout and "Exit status" in result.stdout


def test_cli_dry_run_then_run_then_up_to_date(cli_store: Any, tmp_path: Path) -> None:
    context, args = cli_store
    _, sizes = seed(12, prefix="mgcli")
    before = dump(context)
    dry = run_dal("migrate", *args, "--dry-run", cwd=tmp_path)
    assert dry.returncode == 0, dry.stderr
    assert "mgclidisk: 12 objects; step 1 would change 12" in dry.stdout
    assert dump(context) == before
    done = run_dal("migrate", *args, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "step 2 (count generations): 12 objects rewritten" in done.stdout
    assert "migrate mgclidisk [" in done.stderr  # the progress bar
    docs = documents(context, declare(3, "mgcli").disk._meta)
    assert {guid: doc["size_bytes"] for guid, doc in docs.items()} == sizes
    again = run_dal("migrate", *args, cwd=tmp_path)
    assert again.returncode == 0 and "up to date" in again.stdout


def test_cli_unique_violation_exits_1_naming_the_objects(cli_store: Any, tmp_path: Path) -> None:
    context, args = cli_store
    model, _ = seed(4, prefix="mgcli", duplicate_serial=True)
    dup = [guid for guid, doc in documents(context, model.disk._meta).items() if doc["serial"] == "dup"]
    result = run_dal("migrate", *args, cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert "MigDisk.serial = 'dup' is held by 2 objects" in result.stdout
    assert all(guid in result.stdout for guid in dup)


def test_cli_bad_step_exits_2(tmp_path: Path) -> None:
    result = run_dal("migrate", "--persistent", f"sqlite:///{tmp_path}/x.db", "--hybrids",
                     "migrate_hybrids_bad", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("error: step 1: MigDisk declares no property 'nosuch'")


@pytest.mark.parametrize("exit_after", [10, 45, 75])
def test_a_killed_run_resumes_and_runs_each_step_once(cli_store: Any, tmp_path: Path,
                                                      exit_after: int) -> None:
    context, args = cli_store
    _, sizes = seed(30, prefix="mgcli")
    killed = run_dal("migrate", *args, cwd=tmp_path, env={EXIT_AFTER_ENV: str(exit_after)})
    assert killed.returncode == 75, killed.stderr
    stored = dump(context)
    meta = declare(3, "mgcli").disk._meta
    docs = documents(context, meta)
    if exit_after == 10:  # inside step 1
        assert context.keys.migration_step(1) not in stored
        assert 0 < sum("size_bytes" in doc for doc in docs.values()) < 30
    elif exit_after == 45:  # inside step 2
        assert context.keys.migration_step(1) in stored and context.keys.migration_step(2) not in stored
        assert 0 < sum(doc.get("generation") == 1 for doc in docs.values()) < 30
    resumed = run_dal("migrate", *args, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    docs = documents(context, meta)
    assert {guid: doc["size_bytes"] for guid, doc in docs.items()} == sizes
    assert all(doc["generation"] == 1 for doc in docs.values()), "a step ran twice on some object"
    stored_keys, wanted = key_state(context, meta)
    assert stored_keys == wanted
    assert "up to date" in run_dal("migrate", *args, cwd=tmp_path).stdout


def test_a_step_may_not_store_what_the_model_cannot_read(context: Context) -> None:
    seed(2)
    new = declare(3)

    def describe(step: Step) -> None:
        step.transform(new.disk, lambda doc: {**doc, "tier": "platinum"})

    with pytest.raises(MigrationError, match=r"MigDisk\.tier = 'platinum'"):
        run(context, new, migrations=[Migration(1, "bad tier", describe)])
    assert all("tier" not in doc for doc in documents(context, new.disk._meta).values())


def test_a_step_cannot_link_to_another_hybrid_by_the_objects_own_guid(context: Context) -> None:
    """Only a link to the object itself skips the existence check (issue 11 point 8)."""
    model, sizes = seed(1)
    guid = next(iter(sizes))

    def own_guid(doc: dict[str, Any]) -> dict[str, Any] | None:
        return {**doc, "user_guid": guid}  # no MigOwner has the disk's guid

    def describe(step: Step) -> None:
        step.transform(model.disk, own_guid)

    before = dump(context)
    with pytest.raises(MigrationError, match=f"it would link to mgowner {guid}, which is not stored"):
        run(context, model, migrations=[Migration(1, "link to itself", describe)])
    assert dump(context) == before
