"""Whose data and whose model the command line works on.

The sample model is the demo's alone: an application's own hybrids, named like the sample's,
work with every other command, and a dump is loaded with the model --hybrids names, never the
sample's. The demo clears only what it wrote. A dry-run migration never creates a database.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from test_cli import run_dal

from dal.backends.base import Delete, Put
from dal.config import Context, configure

APP = ("from dal import DataObject, Property\n\n\n"
       "class Disk(DataObject):\n"
       '    """The application\'s own disk, named like the sample model\'s."""\n\n'
       "    __properties = [Property('label', str, doc='Label.')]\n")


def run_python(script: str, cwd: Path) -> None:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("DAL_")}
    environment["PYTHONPATH"] = os.pathsep.join([str(cwd), environment.get("PYTHONPATH", "")])
    done = subprocess.run([sys.executable, "-c", script], cwd=cwd, env=environment, capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr


# --- the sample model is the demo's --------------------------------------------------------------


def test_an_app_hybrid_named_like_the_sample_models_works_with_the_commands(tmp_path: Path) -> None:
    (tmp_path / "myapp.py").write_text(APP)
    run_python("import dal, myapp\ndal.configure('sqlite:///app.sqlite3', namespace='app')\n"
               "myapp.Disk(data={'label': 'mine'}).save()\n", tmp_path)
    stores = {"DAL_HYBRIDS": "myapp", "DAL_PERSISTENT_URL": "sqlite:///app.sqlite3", "DAL_NAMESPACE": "app"}
    for command in (["check"], ["migrate", "--dry-run"], ["migrate"], ["erd"], ["dump", "-o", "app.json"],
                    ["load", "app.json", "--namespace", "copy"], ["check", "--namespace", "copy"]):
        result = run_dal(*command, cwd=tmp_path, env=stores)
        assert result.returncode == 0, (command, result.stderr)
        assert "is taken" not in result.stderr
    assert '"label": "mine"' in (tmp_path / "app.json").read_text()
    copied = run_dal("dump", "--namespace", "copy", cwd=tmp_path, env=stores)
    assert '"label": "mine"' in copied.stdout and "dumped 1 objects of 1 hybrids" in copied.stderr


def test_a_dump_loads_with_the_model_hybrids_names_not_the_sample(tmp_path: Path) -> None:
    made = run_dal("demo", "--count", "2", "--erd", "", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    assert run_dal("dump", "-o", "sample.json", cwd=tmp_path).returncode == 0
    loaded = run_dal("load", "sample.json", "--hybrids", "json", "--namespace", "other", cwd=tmp_path)
    assert loaded.returncode == 2 and loaded.stderr.startswith("error: "), loaded.stderr
    left = run_dal("dump", "--namespace", "other", "--hybrids", "json", cwd=tmp_path)
    assert "dumped 0 objects of 0 hybrids" in left.stderr, left.stderr


def test_only_the_demo_imports_the_sample_model() -> None:
    script = ("import sys\nfrom dal.cli import COMMAND_MODULES, build_parser\nbuild_parser()\n"
              "assert 'dal.hybrids' not in sys.modules, sorted(m for m in sys.modules if 'hybrids' in m)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 0, done.stderr


# --- the demo clears only what it wrote --------------------------------------------------------


@pytest.fixture
def demo_context() -> Context:
    return configure("memory://", "memory://", namespace=f"demo{uuid.uuid4().hex[:8]}")


def _put(context: Context, hybrid: str) -> str:
    key = context.keys.doc(hybrid, str(uuid.uuid4()))
    assert context.persistent.commit([], [Put(key, b"{}")]).ok
    return key


def _keys(context: Context) -> list[str]:
    return [key for key, _ in context.persistent.scan(context.keys.root)]


def test_the_demo_clears_what_it_wrote(demo_context: Context) -> None:
    from dal.cli.demo_namespace import MARKER, claim, finish

    finish(demo_context, claim(demo_context))  # an empty namespace is the demo's to take
    claimed = claim(demo_context)
    _put(demo_context, "backend")
    finish(demo_context, claimed)
    claim(demo_context)
    assert _keys(demo_context) == [f"{demo_context.keys.root}{MARKER}"]


@pytest.mark.parametrize("case", ["written after it finished", "a hybrid not of the sample model",
                                  "a run that did not finish", "an older release's marker",
                                  "no marker", "a queued dynamic beside a running marker",
                                  "an unknown marker"])
def test_the_demo_refuses_data_it_did_not_write(demo_context: Context, case: str) -> None:
    from dal.cli.demo_namespace import MARKER, ForeignDataError, claim, finish

    claimed = claim(demo_context)
    queued = case == "a queued dynamic beside a running marker"
    sample = queued or case in ("written after it finished", "no marker", "an unknown marker")
    foreign = _put(demo_context, "backend" if sample else "invoice")
    marker = f"{demo_context.keys.root}{MARKER}"
    if queued:  # `dal cache queue` keeps its queue in the namespace: not the demo's to clear
        foreign = f"{demo_context.keys.root}m/cachequeue/0000000001"
        demo_context.persistent.commit([], [Put(foreign, b"backend.available")])
    if case == "an older release's marker":  # it recorded no finish
        demo_context.persistent.commit([], [Put(marker, b"")])
    elif case == "an unknown marker":
        demo_context.persistent.commit([], [Put(marker, b"paused")])
    elif case == "no marker":
        demo_context.persistent.commit([], [Delete(marker)])
    elif case != "a run that did not finish" and not queued:
        finish(demo_context, claimed)
    if case == "written after it finished":
        foreign = _put(demo_context, "backend")
    before = _keys(demo_context)
    with pytest.raises(ForeignDataError, match="holds data the demo did not write") as refused:
        claim(demo_context)
    assert foreign in str(refused.value) and "--namespace NAME" in str(refused.value)
    assert "delete the SQLite file" in str(refused.value)
    assert _keys(demo_context) == before


@pytest.mark.parametrize("marker_value", [b"running", b""], ids=["killed-run", "older-release"])
def test_the_demo_clears_a_run_that_did_not_finish(demo_context: Context, marker_value: bytes) -> None:
    """A demo killed outright, or one of an older release: every key is of the demo's families."""
    from dal.cli.demo_namespace import MARKER, claim

    claim(demo_context)
    root, guid = demo_context.keys.root, str(uuid.uuid4())
    written = [_put(demo_context, "backend"), f"{root}u/backend/name/sbackend1",
               f"{root}i/disk/name/sdisk1/{guid}", f"{root}r/albabackend/backend/{guid}",
               f"{root}l/backend/{guid}/albabackend/backend/{guid}", f"{root}m/schema/disk",
               f"{root}m/verify/storagerouter/run1", f"{root}m/steps/0000000001",
               f"{root}x/0001700000000/abcd"]
    marker = f"{root}{MARKER}"
    demo_context.persistent.commit([], [Put(key, b"x") for key in written[1:]] + [Put(marker, marker_value)])
    claim(demo_context)
    assert _keys(demo_context) == [marker]


def test_a_demo_stopped_by_sigterm_is_cleared_by_the_next(tmp_path: Path) -> None:
    """SIGTERM mid-demo: exit 143, the marker says finished, and a plain `dal demo` runs again."""
    script = ("import os, signal, sys\n"
              "import dal.cli.demo_run as run\n"
              "def stop(*args, **kwargs):\n"
              "    os.kill(os.getpid(), signal.SIGTERM)\n"
              "run.migration = stop\n"
              "from dal.cli import main\n"
              "sys.exit(main(sys.argv[1:]))\n")
    environment = {k: v for k, v in os.environ.items() if not k.startswith("DAL_")}
    stopped = subprocess.run([sys.executable, "-c", script, "demo", "--count", "2", "--erd", ""],
                             cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=120,
                             check=False)
    assert stopped.returncode == 143, stopped.stderr
    assert "error: terminated" in stopped.stderr and "Traceback" not in stopped.stderr
    context = configure(f"sqlite:///{tmp_path / 'dal.sqlite3'}")
    from dal.cli.demo_namespace import FINISHED, MARKER

    marker = context.persistent.get(f"{context.keys.root}{MARKER}")
    assert marker is not None and marker.value == FINISHED
    again = run_dal("demo", "--count", "2", "--erd", "", cwd=tmp_path)
    assert again.returncode == 0, again.stderr


def test_the_demo_refuses_a_namespace_an_app_wrote_to_after_it(tmp_path: Path) -> None:
    """The hunt's case: `dal demo`, an application saves in namespace `dal`, `dal demo` again."""
    assert run_dal("demo", "--count", "2", "--erd", "", cwd=tmp_path).returncode == 0
    (tmp_path / "invoices.py").write_text(
        "from dal import DataObject, Property\n\n\nclass Invoice(DataObject):\n"
        "    __properties = [Property('number', str)]\n")
    run_python("import dal, invoices\ndal.configure()\ninvoices.Invoice(data={'number': 'INV-1'}).save()\n",
               tmp_path)
    again = run_dal("demo", "--count", "2", "--erd", "", cwd=tmp_path)
    assert again.returncode == 2 and "holds data the demo did not write (dal/o/invoice/" in again.stderr
    kept = run_dal("dump", "--hybrids", "invoices", "--only", "Invoice", cwd=tmp_path)
    assert '"number": "INV-1"' in kept.stdout, kept.stderr


# --- a dry-run migration opens an existing store only -------------------------------------------


@pytest.mark.parametrize("where", ["typo.sqlite3", "no/such/dir/x.db"])
def test_a_dry_run_migration_refuses_a_missing_sqlite_file(tmp_path: Path, where: str) -> None:
    result = run_dal("migrate", "--dry-run", "--persistent", f"sqlite:///{where}", cwd=tmp_path)
    assert result.returncode == 2 and "does not exist" in result.stderr, result.stdout + result.stderr
    assert "up to date" not in result.stdout
    assert os.listdir(tmp_path) == []


BOX = ("from typing import Any\n\nfrom dal import DataObject, Dynamic, Property\n\n\n"
       "class Box(DataObject):\n"
       "    __properties: list[Any] = [Property('name', str), Property('size', int, default=0)]\n"
       "    __dynamics = [Dynamic('doubled', int, 60)]\n\n"
       "    def _doubled(self) -> int:\n"
       "        return self.size * 2\n")


@pytest.mark.parametrize(("where", "queued"), [
    ("name=123", 1), ("name=null", 1), ("name=true", 1), ("name=1e3", 1), ('name="123"', 1), ('name="x"', 1),
    ("name=x", 1), ("name=nobody", 0), ("size=7", 1),
])
def test_cache_queue_where_reads_a_value_by_the_fields_type(tmp_path: Path, where: str, queued: int) -> None:
    """A text field took VALUE as JSON too: ``name=null`` queued nothing, ``name=123`` was a type error."""
    (tmp_path / "boxes.py").write_text(BOX)
    run_python("import dal, boxes\ndal.configure('sqlite:///box.sqlite3', namespace='box')\n"
               "for name in ['123', 'null', 'true', '1e3', 'x']:\n"
               "    boxes.Box(data={'name': name}).save()\n"
               "boxes.Box(data={'name': 'seven', 'size': 7}).save()\n", tmp_path)
    stores = {"DAL_HYBRIDS": "boxes", "DAL_PERSISTENT_URL": "sqlite:///box.sqlite3", "DAL_NAMESPACE": "box"}
    done = run_dal("cache", "queue", "box.doubled", "--where", where, cwd=tmp_path, env=stores)
    assert (done.returncode, done.stdout) == (0, f"queued {queued} dynamics\n"), done.stderr


QBOXES = ("from enum import Enum\nfrom typing import Annotated, Any\n\n"
          "from pydantic import StringConstraints\n\n"
          "from dal import DataObject, Dynamic, Property, Relation\n\n\n"
          "class Color(Enum):\n    ONE = '1'\n    TWO = '2'\n\n\n"
          "class QPool(DataObject, hybrid_name='qpool'):\n"
          "    __properties: list[Any] = [Property('name', str)]\n\n\n"
          "class QBox(DataObject, hybrid_name='qbox'):\n"
          "    __properties: list[Any] = [\n"
          "        Property('name', str), Property('size', int, default=0),\n"
          "        Property('code', Annotated[str, StringConstraints(max_length=8)], mandatory=False),\n"
          "        Property('color', [Color.ONE, Color.TWO], mandatory=False)]\n"
          "    __relations = [Relation('pool', QPool, 'boxes', mandatory=False)]\n"
          "    __dynamics = [Dynamic('doubled', int, 60), Dynamic('tag', str, 60)]\n\n"
          "    def _doubled(self) -> int:\n        return self.size * 2\n\n"
          "    def _tag(self) -> str:\n        return self.name\n")


@pytest.fixture(scope="module")
def qboxes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory whose q.sqlite3 holds a box '123' (pool '123', code '123', color '1') and a box 'x'."""
    where = tmp_path_factory.mktemp("qboxes")
    (where / "qboxes.py").write_text(QBOXES)
    run_python("import dal, qboxes\ndal.configure('sqlite:///q.sqlite3', namespace='q')\n"
               "pool = qboxes.QPool(data={'name': '123'})\npool.save()\n"
               "qboxes.QBox(data={'name': '123', 'pool': pool, 'code': '123',\n"
               "                  'color': qboxes.Color.ONE}).save()\n"
               "qboxes.QBox(data={'name': 'x'}).save()\n", where)
    return where


@pytest.mark.parametrize(("where", "queued"), [
    ("pool_guid=null", 1), ("pool=null", 1), ("pool.name=123", 1), ("tag=123", 1), ("code=123", 1),
    ("color=1", 1), ("color=null", 1), ("code=null", 0), ("size=0", 2), ("name=123", 1),
])
def test_cache_queue_where_reads_a_value_as_the_field_resolved_takes_it(qboxes: Path, tmp_path: Path,
                                                                        where: str, queued: int) -> None:
    """A relation's guid took ``null`` as the text 'null' (exit 2); a str dynamic, a dotted path, a
    constrained str and an enum of str-valued members took ``123`` as a number (exit 2)."""
    shutil.copy(qboxes / "q.sqlite3", tmp_path / "q.sqlite3")
    stores = {"DAL_HYBRIDS": "qboxes", "DAL_PERSISTENT_URL": "sqlite:///q.sqlite3", "DAL_NAMESPACE": "q",
              "PYTHONPATH": os.pathsep.join([str(qboxes), os.environ.get("PYTHONPATH", "")])}
    done = run_dal("cache", "queue", "qbox.doubled", "--where", where, cwd=tmp_path, env=stores)
    assert (done.returncode, done.stdout) == (0, f"queued {queued} dynamics\n"), done.stderr
    if where == "size=0":  # once: a value nested past the recursion limit is refused typed (a traceback)
        deep = run_dal("cache", "queue", "qbox.doubled", "--where", "size=" + "[" * 100_000, cwd=tmp_path,
                       env=stores)
        assert deep.returncode == 2 and "nests lists or dicts deeper than any stored value" in deep.stderr
        assert "Traceback" not in deep.stderr
