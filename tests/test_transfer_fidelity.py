"""dump, load, copy and check never lose or misplace stored data: nested fields an older model drops,
the operations of a --replace batch, documents under keys that are not guids, hybrid order, and
what an interrupted copy says to run."""

from __future__ import annotations

import io
import json
import shlex
import sys
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel
from test_transfer import CLI, is_empty

import dal
from dal import DataObject, Property, Relation
from dal.backends.base import Check, CommitResult, Delete, DeletePrefix, Op, Put
from dal.config import Context
from dal.exceptions import BackendError, InvalidValueError
from dal.model.validation import validate_document
from dal.objects.transaction import decode, encode, plan_write
from dal.testing.servers import RunningServer
from dal.tools.check.integrity import check
from dal.tools.check.problems import Kind
from dal.tools.transfer.batches import Item, _costs
from dal.tools.transfer.dump import dump, read_dump, read_store, select_hybrids
from dal.tools.transfer.load import MAX_TXN_OPS, copy, load


class FidCfg(BaseModel):
    """A nested model as an older version declares it: a newer one added ``b``."""

    a: int
    x: float = 0.0


class FidHolder(DataObject):
    __properties: list[Property[Any]] = [Property("name", str),
                                         Property("cfg", FidCfg, mandatory=False),
                                         Property("cfgs", list[FidCfg], default=[], mandatory=False)]


class FidRow(DataObject):
    """Every kind of key plan_write moves: unique, indexed with and without a default, a one-to-one."""

    __properties: list[Property[Any]] = [Property("name", str, unique=True, indexed=True),
                                         Property("row", int, default=0, indexed=True),
                                         Property("note", str, indexed=True, mandatory=False)]
    __relations = [Relation("twin", None, "twinned", onetoone=True, mandatory=False),
                   Relation("near", None, "nears", mandatory=False)]


class FidLine(DataObject):
    """A row as a newer model declares it: an older one lacked the indexed ``row``."""

    __properties: list[Property[Any]] = [Property("name", str), Property("row", int, default=0, indexed=True)]


class FidAb(DataObject, hybrid_name="fidab"):
    __properties: list[Property[Any]] = [Property("n", str)]


class FidAbC(DataObject, hybrid_name="fidab-c"):
    __properties: list[Property[Any]] = [Property("n", str)]


def _sqlite(tmp_path: Path, name: str = "dal") -> Context:
    return dal.configure(f"sqlite:///{tmp_path / (name + '.sqlite3')}", "memory://", namespace="fid")


def _store_raw(context: Context, hybrid: str, guid: str, document: dict[str, Any]) -> None:
    """Overwrite a stored document as another version of the model (or another tool) wrote it."""
    context.commit([], [Put(context.keys.doc(hybrid, guid), encode(document))], [])


# --- 1. nested data the declared model does not declare ----------------------------------------


def test_validate_document_names_nested_data_the_model_would_drop() -> None:
    meta = FidHolder._meta
    lossy = validate_document(meta, {"name": "n", "cfg": {"a": 1, "b": 2},
                                     "cfgs": [{"a": 1}, {"a": 2, "b": {"c": 3}, "my key": 4}]})
    assert not lossy.problems and not lossy.unknown and not lossy.ok
    assert [problem.field for problem in lossy.dropped] == ["cfg", "cfgs"]
    assert "FidHolder.cfg holds b, which FidCfg does not declare" in lossy.dropped[0].message
    assert 'FidHolder.cfgs holds [1].b, [1]["my key"], which' in lossy.dropped[1].message
    assert "with the model that wrote it" in lossy.dropped[0].message
    # normalised in place, nothing lost: an int for a float, a default filled in
    kept = validate_document(meta, {"name": "n", "cfg": {"a": 1, "x": 1}, "cfgs": [{"a": 2}]})
    assert kept.ok and kept.document["cfg"] == {"a": 1, "x": 1.0}


def _holder_with_newer_data(context: Context) -> str:
    holder = FidHolder(data={"name": "h", "cfg": FidCfg(a=1)})
    holder.save()
    _store_raw(context, "fidholder", holder.guid, {"name": "h", "cfg": {"a": 1, "b": 2}, "cfgs": []})
    return holder.guid


def test_check_reports_nested_data_and_load_and_copy_refuse_it(tmp_path: Path) -> None:
    source = _sqlite(tmp_path, "source")
    guid = _holder_with_newer_data(source)
    report = check(source)
    assert not report.clean
    assert [problem.kind for problem in report.problems] == [Kind.UNKNOWN_FIELD]
    assert "FidHolder.cfg holds b, which FidCfg does not declare" in report.problems[0].message
    out = io.StringIO()
    dump(source, out, select_hybrids(["fidholder"]))
    assert json.loads(out.getvalue())["hybrids"]["fidholder"][0]["data"]["cfg"] == {"a": 1, "b": 2}
    target = _sqlite(tmp_path, "target")
    with pytest.raises(InvalidValueError, match=r"FidHolder\.cfg holds b, which FidCfg does not declare"):
        load(target, read_dump(io.StringIO(out.getvalue())))
    assert is_empty(target)
    with pytest.raises(InvalidValueError, match=rf"{guid}: FidHolder\.cfg holds b"):
        copy(source, target, only=select_hybrids(["fidholder"]))
    assert is_empty(target)
    stored = source.persistent.get(source.keys.doc("fidholder", guid))
    assert stored is not None and decode(stored.value)["cfg"] == {"a": 1, "b": 2}


# --- 2. the operations of a --replace batch -----------------------------------------------------


def _documents(guid: str, twin: str, near: str) -> list[dict[str, Any]]:
    """Stored documents to replace: lacking every field, holding others (lacking ``row`` too), the same."""
    return [{}, {"name": "old", "row": 3, "note": "n", "twin_guid": twin, "near_guid": near},
            {"name": "old", "note": "n", "twin_guid": twin, "near_guid": near},
            {"name": "new", "row": 5, "note": None, "twin_guid": None, "near_guid": None}]


def test_a_replace_batch_is_estimated_at_no_fewer_operations_than_plan_write_emits(tmp_path: Path) -> None:
    keys = _sqlite(tmp_path).keys
    meta = FidRow._meta
    guid, twin, near = (str(uuid.uuid4()) for _ in range(3))
    for new in ({"name": "new", "row": 5, "note": "m", "twin_guid": near, "near_guid": twin},
                {"name": "new", "row": 5, "note": None, "twin_guid": None, "near_guid": None}):
        item = Item(meta, guid, new, keys.doc(meta.name, guid))
        estimated, checks, _ = _costs(keys, item, replace=True)
        for stored in _documents(guid, twin, near):
            plan = plan_write(keys, meta, guid, stored, 1, new)
            assert len(plan.ops) <= estimated, (stored, new, plan.ops)
            assert len(plan.checks) <= checks


def _rows_of_an_older_model(context: Context, count: int) -> Any:
    """Save rows, then store them as a model without ``row`` did: documents lacking it, no entries."""
    for number in range(count):
        FidLine(data={"name": f"r{number}"}).save()
    for key, entry in context.persistent.scan(context.keys.docs("fidline")):
        document = decode(entry.value)
        del document["row"]
        context.commit([], [Put(key, encode(document))], [])
    entries = context.persistent.scan(f"{context.keys.root}i/fidline/row/")
    context.commit([], [Delete(key) for key, _ in entries], [])
    data = read_store(context, select_hybrids(["fidline"]))
    for _, document in data.hybrids["fidline"]:
        document["row"] = 5  # the dump to load sets the field: every entry moves
    return data


def _refusing_commits_over(context: Context, monkeypatch: pytest.MonkeyPatch, limit: int) -> list[int]:
    """Make the durable store refuse a commit of more than ``limit`` operations, as etcd does."""
    sizes: list[int] = []
    real = context.persistent.commit

    def commit(checks: Sequence[Check], ops: Sequence[Op]) -> CommitResult:
        sizes.append(len(ops))
        if len(ops) > limit or len(checks) > limit:
            raise BackendError(f"too many operations in txn request ({len(ops)} > {limit})")
        return real(checks, ops)

    monkeypatch.setattr(context.persistent, "commit", commit)
    return sizes


def test_load_replace_over_older_documents_stays_within_the_operations_limit(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    context = _sqlite(tmp_path)
    data = _rows_of_an_older_model(context, 60)
    sizes = _refusing_commits_over(context, monkeypatch, MAX_TXN_OPS)
    result = load(context, data, replace=True)
    assert result.replaced == 60 and max(sizes) <= MAX_TXN_OPS
    monkeypatch.undo()
    assert check(context).clean


@pytest.fixture
def etcd_context(etcd_server: RunningServer) -> Iterator[Context]:
    context = dal.configure(etcd_server.url, "memory://", namespace=f"fid{uuid.uuid4().hex[:8]}")
    yield context
    context.persistent.commit([], [DeletePrefix(context.keys.root)])


def test_load_replace_over_older_documents_on_etcd_at_default_settings(etcd_context: Context) -> None:
    data = _rows_of_an_older_model(etcd_context, 60)
    result = load(etcd_context, data, replace=True)
    assert result.replaced == 60
    assert check(etcd_context).clean


# --- 3. a document stored under a key that is not a guid ----------------------------------------


def test_check_reports_a_document_under_a_key_that_is_not_a_guid_and_repair_builds_nothing_for_it(
        tmp_path: Path) -> None:
    context = _sqlite(tmp_path)
    FidRow(data={"name": "kept"}).save()
    bad = f"{context.keys.root}o/fidrow/not-a-guid"
    context.commit([], [Put(bad, encode({"name": "z"}))], [])
    report = check(context, repair=True)
    assert [(problem.kind, problem.key) for problem in report.problems] == [(Kind.INVALID_DOCUMENT, bad)]
    assert "'not-a-guid', which is not a guid" in report.problems[0].message
    assert not report.fixed
    assert [key for key, _ in context.persistent.scan(context.keys.root) if "not-a-guid" in key] == [bad]


# --- 4. hybrids in name order -------------------------------------------------------------------


def test_a_dump_of_everything_lists_hybrids_in_name_order(tmp_path: Path) -> None:
    context = _sqlite(tmp_path)
    FidAbC(data={"n": "2"}).save()
    FidAb(data={"n": "1"}).save()
    everything, chosen = io.StringIO(), io.StringIO()
    dump(context, everything)
    dump(context, chosen, select_hybrids(["fidab", "fidab-c"]))
    assert list(json.loads(everything.getvalue())["hybrids"]) == ["fidab", "fidab-c"]
    assert everything.getvalue() == chosen.getvalue()


# --- 5. an interrupted copy ---------------------------------------------------------------------


def _racks_to_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, count: int) -> tuple[str, str]:
    """Store ``count`` racks in a source file; return its URL and a target's, the CLI's environment clean."""
    source_url, target_url = (f"sqlite:///{tmp_path / name}" for name in ("source.sqlite3", "target.sqlite3"))
    source = dal.configure(source_url, "memory://", namespace="src")
    racks = {"format": "dal-dump", "version": 1, "namespace": "src",
             "hybrids": {"xrack": [{"guid": str(uuid.UUID(int=n + 1, version=4)),
                                    "data": {"name": f"r{n}", "row": n}} for n in range(count)]}}
    load(source, read_dump(io.StringIO(json.dumps(racks))))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [*sys.path])  # main() puts the working directory on it
    for variable in ("DAL_PERSISTENT_URL", "DAL_VOLATILE_URL", "DAL_NAMESPACE", "DAL_HYBRIDS"):
        monkeypatch.delenv(variable, raising=False)
    return source_url, target_url


def test_ctrl_c_during_dal_copy_prints_the_copy_that_finishes_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from dal.cli import main

    source_url, target_url = _racks_to_copy(tmp_path, monkeypatch, 12)
    commits: list[int] = []
    real = Context.commit

    def commit(self: Context, checks: Sequence[Check], ops: Sequence[Op],
               invalidate: Sequence[str] = ()) -> CommitResult:
        if any(isinstance(op, Put) and op.key.startswith(self.keys.docs("xrack")) for op in ops):
            commits.append(len(ops))
            if len(commits) == 3:
                raise KeyboardInterrupt
        return real(self, checks, ops, invalidate)

    monkeypatch.setattr(Context, "commit", commit)
    assert main(["copy", source_url, target_url, "--namespace", "src", *CLI, "--batch-size", "4"]) == 130
    err = capsys.readouterr().err
    assert "batches 1-2 of 3 (8 of 12 objects) were written and are kept" in err
    finish = f"dal copy {source_url} {target_url} --replace --namespace src --hybrids transfer_hybrids " \
             "--batch-size 4"
    assert f"finish the copy with: {finish}" in err, err
    assert "dal load" not in err and "replace=True" not in err
    monkeypatch.undo()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [*sys.path])
    assert main(shlex.split(finish)[1:]) == 0  # the printed command, as printed, finishes the copy
    assert "verified: the destination holds as many objects" in capsys.readouterr().out


def test_ctrl_c_while_dal_copy_verifies_prints_the_copy_that_finishes_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Interrupted after its last batch, the copy has written everything: it must not say nothing was."""
    import dal.tools.transfer.load as load_module
    from dal.cli import main

    source_url, target_url = _racks_to_copy(tmp_path, monkeypatch, 3)

    def interrupted(*args: Any, **kwargs: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(load_module, "count_documents", interrupted)
    assert main(["copy", source_url, target_url, "--namespace", "src", *CLI]) == 130
    err = capsys.readouterr().err
    assert "nothing to finish" not in err
    finish = f"dal copy {source_url} {target_url} --replace --namespace src --hybrids transfer_hybrids"
    assert f"finish the copy with: {finish}" in err, err
    monkeypatch.undo()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [*sys.path])
    assert main(shlex.split(finish)[1:]) == 0
    assert "verified: the destination holds as many objects" in capsys.readouterr().out
