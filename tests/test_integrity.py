"""dal check: each kind of damage, injected as raw keys, is found; repair fixes what is safe; exit codes."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from test_transfer import CLI, Sample, populate, run_dal, sqlite_with_sample
from transfer_hybrids import XRack, XServer

import dal
from dal import DataObject, Property
from dal.backends.base import Delete, Put
from dal.cli.check import render
from dal.config import Context
from dal.keys import Keys
from dal.objects import schema
from dal.tools.check.integrity import PHASES, Kind, Problem, apply_fixes, check
from dal.tools.migrate.migrator import migrate

#: a guid no stored object has
GONE = "0badc0de-0000-4000-8000-000000000000"


def put(context: Context, *pairs: tuple[str, bytes]) -> None:
    assert context.persistent.commit([], [Put(key, value) for key, value in pairs]).ok


def delete(context: Context, *keys: str) -> None:
    assert context.persistent.commit([], [Delete(key) for key in keys]).ok


def raw_document(context: Context, hybrid: str, guid: str) -> dict[str, object]:
    entry = context.persistent.get(context.keys.doc(hybrid, guid))
    assert entry is not None
    document: dict[str, object] = json.loads(entry.value)
    return document


def kinds(problems: list[Problem]) -> dict[str, int]:
    found: dict[str, int] = {}
    for problem in problems:
        found[problem.kind.value] = found.get(problem.kind.value, 0) + 1
    return found


def test_data_saved_through_dal_is_clean(context: Context) -> None:
    populate()
    phases: list[str] = []
    report = check(context, repair=True, progress=phases.append)
    assert phases == [*PHASES, "repair"]
    assert report.clean and report.problems == []
    assert report.documents["xrack"] == 3 and report.documents["xserver"] == 5
    assert report.keys > 20


def damage_keys(context: Context, sample: Sample) -> dict[Kind, str]:
    """Break every derived key in a way repair can fix; return the key each kind should name."""
    keys: Keys = context.keys
    rack0, rack1, rack2 = sample.racks
    server0, server1 = sample.servers[0], sample.servers[1]
    missing_index = keys.index("xrack", "row", rack0.row, rack0.guid)
    stale_index = keys.index("xrack", "row", 42, rack1.guid)
    missing_link = keys.link("xrack", rack0.guid, "xserver", "rack", server0.guid)
    stale_link = keys.link("xrack", rack2.guid, "xserver", "rack", server1.guid)
    missing_unique = keys.unique("xserver", "hostname", server1.hostname)
    stale_unique = keys.unique("xrack", "name", "ghost")
    wrong_owner = keys.unique("xrack", "name", rack2.name)
    delete(context, missing_index, missing_link, missing_unique)
    put(context, (stale_index, b""), (stale_link, b""), (stale_unique, rack0.guid.encode()),
        (wrong_owner, rack1.guid.encode()))
    return {Kind.MISSING_INDEX: missing_index, Kind.STALE_INDEX: stale_index, Kind.MISSING_LINK: missing_link,
            Kind.STALE_LINK: stale_link, Kind.MISSING_UNIQUE: missing_unique, Kind.STALE_UNIQUE: stale_unique}


def test_check_finds_damaged_keys_and_repair_fixes_them(context: Context) -> None:
    sample = populate()
    broken = damage_keys(context, sample)
    report = check(context)
    assert kinds(report.problems) == {"missing_link": 1, "stale_link": 1, "missing_index": 1,
                                      "stale_index": 1, "missing_unique": 1, "stale_unique": 2}
    for kind, key in broken.items():
        assert key in {problem.key for problem in report.of(kind)}, kind
    wrong = next(p for p in report.of(Kind.STALE_UNIQUE) if p.key.endswith(f"/s{sample.racks[2].name}"))
    assert "names " + sample.racks[1].guid in wrong.message and sample.racks[2].guid in wrong.message
    assert not report.clean and len(report.remaining) == 7
    # users feel it: a missing link hides the server from its rack (and that answer gets cached), a
    # stale unique key blocks a value nobody holds
    assert sample.servers[0].guid not in XRack(sample.racks[0].guid).servers_guids
    with pytest.raises(dal.exceptions.UniqueConstraintError):
        XRack(data={"name": "ghost"}).save()

    repaired = check(context, repair=True)
    assert len(repaired.fixed) == 7 and repaired.remaining == [] and repaired.conflicted == []
    assert check(context).clean
    assert sample.servers[0].guid in XRack(sample.racks[0].guid).servers_guids  # cached answer dropped
    assert sample.servers[1].guid not in XRack(sample.racks[2].guid).servers_guids
    restored = context.persistent.get(broken[Kind.MISSING_UNIQUE])
    assert restored is not None and restored.value == sample.servers[1].guid.encode()
    XRack(data={"name": "ghost"}).save()  # the stale unique key no longer blocks the value
    with pytest.raises(dal.exceptions.UniqueConstraintError):
        XServer(data={"hostname": sample.servers[1].hostname, "rack": sample.racks[0]}).save()


def test_check_reports_what_needs_a_person_and_repair_leaves_it(context: Context) -> None:
    sample = populate()
    keys = context.keys
    rack0 = sample.racks[0]
    dangling = dict(raw_document(context, "xserver", sample.servers[2].guid), rack_guid=GONE)
    duplicate = dict(raw_document(context, "xrack", sample.racks[1].guid), name=rack0.name)
    invalid = dict(raw_document(context, "xserver", sample.servers[3].guid), load="heavy")
    extra = dict(raw_document(context, "xserver", sample.servers[4].guid), colour="red")
    twin_rack, garbled = str(uuid.uuid4()), str(uuid.uuid4())  # documents under guids, as dal stores them
    put(context,
        (keys.doc("xserver", sample.servers[2].guid), json.dumps(dangling).encode()),
        (keys.doc("xrack", twin_rack), json.dumps(duplicate).encode()),
        (keys.doc("xserver", sample.servers[3].guid), json.dumps(invalid).encode()),
        (keys.doc("xserver", sample.servers[4].guid), json.dumps(extra).encode()),
        (keys.doc("xrack", garbled), b"not json"),
        (keys.doc("nosuch", "g"), b"{}"),
        (f"{keys.root}i/xrack/colour/sred/g", b""),
        (keys.link("xrack", rack0.guid, "xserver", "nosuch", "g"), b""))
    # a second console on a one-to-one, stored as data from before one-to-one keys would be (a save is
    # refused, tests/test_onetoone.py)
    twin = str(uuid.uuid4())
    put(context, (keys.doc("xconsole", twin), json.dumps({"port": 8, "server_guid": sample.servers[0].guid}
                                                        ).encode()),
        (keys.link("xserver", sample.servers[0].guid, "xconsole", "server", twin), b""))
    report = check(context)
    found = kinds(report.problems)
    assert found.pop("dangling_relation") == 1
    assert found.pop("duplicate_unique") == 1
    assert found.pop("invalid_document") == 2  # a value the model refuses, and a document that is not JSON
    assert found.pop("unknown_field") == 1
    assert found.pop("orphan_key") == 3
    assert found.pop("onetoone_violation") == 1
    # the twin rack was written without its keys, and server 2's old link no longer matches its document
    assert found == {"missing_index": 2, "stale_link": 1}
    dangling_problem = report.of(Kind.DANGLING_RELATION)[0]
    assert dangling_problem.guid == sample.servers[2].guid and f"XRack {GONE}" in dangling_problem.message
    invalid_messages = " ".join(problem.message for problem in report.of(Kind.INVALID_DOCUMENT))
    assert "XServer.load must be float, not 'heavy'" in invalid_messages
    assert "not a JSON object" in invalid_messages
    assert "colour" in report.of(Kind.UNKNOWN_FIELD)[0].message

    repaired = check(context, repair=True)
    assert len(repaired.fixed) == 3
    after = check(context)
    assert kinds(after.problems) == {"invalid_document": 2, "unknown_field": 1, "orphan_key": 3,
                                     "dangling_relation": 1, "onetoone_violation": 1, "duplicate_unique": 1}
    assert all(problem.fix is None for problem in after.problems)
    # the unique key of the duplicated value still names its first owner: repair never picks a winner
    owner = context.persistent.get(keys.unique("xrack", "name", rack0.name))
    assert owner is not None and owner.value == rack0.guid.encode()


def test_a_fix_never_overwrites_a_change_made_after_the_check(context: Context) -> None:
    sample = populate()
    rack = sample.racks[0]
    delete(context, context.keys.index("xrack", "row", rack.row, rack.guid))
    report = check(context)
    assert kinds(report.problems) == {"missing_index": 1}
    rack.row = 5  # a live writer: its save writes the new entry (and deletes the absent old one)
    rack.save()
    apply_fixes(context, report)
    assert report.fixed == [] and len(report.conflicted) == 1
    assert context.persistent.get(context.keys.index("xrack", "row", 0, rack.guid)) is None
    assert check(context).clean


# --- keys a model change asks for, not built yet --------------------------------------------


class XRecord(DataObject):
    """Release 2 of a model: ``genre`` is new (indexed, with a default), ``pages`` became indexed and
    ``isbn`` unique; release 1 stored ``title`` (unique), ``pages`` and ``isbn`` only."""

    __properties = [Property("title", str, unique=True),
                    Property("pages", int, default=0, indexed=True),
                    Property("isbn", str, mandatory=False, unique=True),
                    Property("genre", str, default="rock", indexed=True)]


def store_release_one(context: Context, count: int) -> list[str]:
    """Store records as release 1 did: documents without genre, keys of title only, and its schema record."""
    keys = context.keys
    guids = [str(uuid.uuid4()) for _ in range(count)]
    record = schema.complete_record(XRecord._meta).replace(indexed=[], unique=["title"])
    ops = [Put(keys.schema("xrecord"), record.encode())]
    for n, guid in enumerate(guids):
        document = {"title": f"t{n}", "pages": 10 * n, "isbn": f"isbn-{n}"}
        ops += [Put(keys.doc("xrecord", guid), json.dumps(document).encode()),
                Put(keys.unique("xrecord", "title", document["title"]), guid.encode())]
    assert context.persistent.commit([], ops).ok
    schema.forget(context)
    return guids


def test_keys_the_schema_record_says_are_not_built_point_at_dal_migrate(context: Context) -> None:
    guids = store_release_one(context, 3)
    report = check(context)
    # one problem per property, not per object, none of them for `dal check --repair`
    assert kinds(report.problems) == {"unbuilt_index": 2, "unbuilt_unique": 1}, report.problems
    assert all(problem.fix is None for problem in report.problems)
    genre = next(problem for problem in report.of(Kind.UNBUILT_INDEX) if "genre" in problem.key)
    assert genre.key == f"{context.keys.index_fields('xrecord')}genre/" and genre.guid in guids
    # the value reads return: the declared default of a field the document lacks
    assert "3 objects stored before it became indexed have no entry" in genre.message, genre.message
    assert f"e.g. XRecord {genre.guid}, which reads genre='rock' (the default: its document lacks the " \
           "field)" in genre.message
    assert "None" not in genre.message and "`dal migrate` builds it" in genre.message
    pages = next(problem for problem in report.of(Kind.UNBUILT_INDEX) if "pages" in problem.key)
    assert f"which reads pages={10 * guids.index(pages.guid)};" in pages.message, pages.message
    isbn = report.of(Kind.UNBUILT_UNIQUE)[0]
    assert f"which reads isbn='isbn-{guids.index(isbn.guid)}'" in isbn.message, isbn.message
    assert "3 objects stored before it became unique" in isbn.message and "dal migrate" in isbn.message
    lines = render(report, "here", 10)
    assert any(line.split()[:2] == ["unbuilt_index", "2"] and "dal migrate" in line for line in lines), lines
    assert "dal check --repair" not in "\n".join(lines)
    assert lines[-1] == "run `dal migrate` to build the keys the model added (unbuilt_index, unbuilt_unique)"

    assert migrate(context, [XRecord], migrations=[]).ok
    assert check(context).clean, check(context).problems


def test_a_missing_key_of_a_built_index_is_still_repairable(context: Context) -> None:
    guids = store_release_one(context, 2)
    assert migrate(context, [XRecord], migrations=[]).ok
    delete(context, context.keys.index("xrecord", "genre", "rock", guids[0]))
    report = check(context)
    assert kinds(report.problems) == {"missing_index": 1}
    assert "genre='rock'" in report.problems[0].message and report.problems[0].fix is not None
    assert check(context, repair=True).fixed and check(context).clean


# --- command line ---------------------------------------------------------------------------


def test_cli_check_exit_codes(tmp_path: Path) -> None:
    url, sample = sqlite_with_sample(tmp_path)
    clean = run_dal("check", "--persistent", url, *CLI, cwd=tmp_path)
    assert clean.returncode == 0, clean.stderr
    assert "13 documents" in clean.stdout and "clean: no problems found" in clean.stdout
    context = dal.configure(url, "memory://", namespace="dal")
    damage_keys(context, sample)
    found = run_dal("check", "--persistent", url, *CLI, cwd=tmp_path)
    assert found.returncode == 1, found.stderr
    table = {line.split()[0]: line.split()[1] for line in found.stdout.splitlines()
             if line.startswith("  ") and len(line.split()) == 3 and line.split()[2] == "repairable"}
    assert table == {"missing_link": "1", "stale_link": "1", "missing_index": "1", "stale_index": "1",
                     "missing_unique": "1", "stale_unique": "2"}
    assert "run `dal check --repair`" in found.stdout
    repaired = run_dal("check", "--repair", "--persistent", url, *CLI, cwd=tmp_path)
    assert repaired.returncode == 0, repaired.stdout
    assert "repaired 7 of 7 problems; 0 remain" in repaired.stdout
    assert run_dal("check", "--persistent", url, *CLI, cwd=tmp_path).returncode == 0
    put(context, (context.keys.doc("xserver", sample.servers[0].guid),
                  json.dumps(dict(raw_document(context, "xserver", sample.servers[0].guid),
                                  spare_rack_guid=GONE)).encode()))
    left = run_dal("check", "--repair", "--persistent", url, *CLI, cwd=tmp_path)
    assert left.returncode == 1 and "dangling_relation" in left.stdout and "needs a person" in left.stdout


def test_cli_check_help_and_bad_input(tmp_path: Path) -> None:
    shown = run_dal("check", "--help", cwd=tmp_path)
    assert shown.returncode == 0 and "--repair" in shown.stdout and "--hybrids" in shown.stdout
    bad = run_dal("check", "--limit", "-1", cwd=tmp_path)
    assert bad.returncode == 2 and bad.stderr.startswith("error: ")
    unknown = run_dal("check", "--persistent", "nosuch://x", cwd=tmp_path)
    assert unknown.returncode == 2 and unknown.stderr.startswith("error: ")
