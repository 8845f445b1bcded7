"""The command line at its edges: ``-o /dev/stdout`` appended to a file, stdout or stdin closed,
refused loads that must create nothing, applications whose hybrids are named like the sample's,
and ``dal erd`` on packages that export more than hybrids.

Every command runs in a subprocess, as users run it, and every model a test declares lives in a
package of its own in a tmp dir, imported only there: nothing registers in the suite's process.
No test names a device as a target: ``/dev/stdout`` is each time a file in a tmp dir opened by
the test as the subprocess's stdout.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from test_cli import run_dal

EMPTY_DUMP = {"format": "dal-dump", "version": 1, "namespace": "dal", "hybrids": {}, "counts": {}}


def environment(**extra: str) -> dict[str, str]:
    found = {k: v for k, v in os.environ.items() if not k.startswith("DAL_")}
    return found | extra


def package(root: Path, name: str, files: dict[str, str]) -> None:
    """Write the package ``name`` under ``root``: its files, by name, dedented."""
    (root / name).mkdir()
    for file, text in files.items():
        (root / name / file).write_text(textwrap.dedent(text))


def shell(command: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run ``command`` in bash, ``$DAL`` standing for ``python -m dal``."""
    return subprocess.run(["bash", "-c", command], cwd=cwd, capture_output=True, text=True, timeout=120,
                          check=False, env=environment(DAL=f"{sys.executable} -m dal"))


def store(where: Path) -> str:
    """Return the URL of a SQLite store made under ``where`` (by a migrate: the sample model's records)."""
    url = f"sqlite:///{where / 'made.sqlite3'}"
    assert run_dal("migrate", "--persistent", url, cwd=where).returncode == 0
    return url


# --- -o naming an open descriptor ------------------------------------------------------------------


@pytest.mark.parametrize("target", ["/dev/stdout", "/dev/fd/1", "/proc/self/fd/1", "link"])
def test_erd_into_dev_stdout_appends_to_the_file_the_shell_opened(tmp_path: Path, target: str) -> None:
    """``>> log`` appends: the old code followed /dev/stdout to ``log`` and replaced it whole."""
    if not os.path.exists("/proc/self/fd"):
        pytest.skip("no /proc: /dev/stdout is no symlink to an open file here")
    (tmp_path / "link").symlink_to("/dev/stdout")
    log = tmp_path / "log.txt"
    log.write_text("PRECIOUS LINE\n")
    with log.open("a") as appended:
        done = subprocess.run([sys.executable, "-m", "dal", "erd", "--format", "mermaid", "-o", target],
                              cwd=tmp_path, stdout=appended, stderr=subprocess.PIPE, text=True, timeout=120,
                              check=False, env=environment())
    assert done.returncode == 0, done.stderr
    lines = log.read_text().splitlines()
    assert lines[0] == "PRECIOUS LINE" and lines[1] == "erDiagram"
    # the summary follows the diagram, not lost in an unlinked file
    assert lines[-1].startswith(f"wrote {target} (mermaid, ")
    assert (tmp_path / "link").is_symlink() and sorted(os.listdir(tmp_path)) == ["link", "log.txt"]


def test_dump_into_dev_stdout_appends_to_the_file_the_shell_opened(tmp_path: Path) -> None:
    url = store(tmp_path)
    done = shell(f'printf "PRECIOUS LINE\\n" > log.json && $DAL dump --persistent {url} -o /dev/stdout '
                 ">> log.json", tmp_path)
    assert done.returncode == 0, done.stderr
    first, rest = (tmp_path / "log.json").read_text().split("\n", 1)
    assert first == "PRECIOUS LINE" and json.loads(rest)["format"] == "dal-dump"


# --- stdout or stdin closed -------------------------------------------------------------------------


@pytest.mark.parametrize(("command", "says"), [
    ("$DAL erd >&-", "error: cannot write output: stdout is closed"),
    ("$DAL dump --persistent {url} >&-", "error: cannot write output: stdout is closed"),
    ("$DAL load --persistent sqlite:///new.sqlite3 - <&-", "error: cannot read stdin: it is closed"),
])
def test_a_closed_stdout_or_stdin_is_one_error_line(tmp_path: Path, command: str, says: str) -> None:
    done = shell(command.format(url=store(tmp_path) if "{url}" in command else ""), tmp_path)
    assert done.returncode == 2 and done.stderr.startswith(says), done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "new.sqlite3").exists()


# --- refused loads and copies create nothing ------------------------------------------------------


@pytest.mark.parametrize("args", [["missing.json"], ["/etc/hostname"], ["dump.json", "--only", "Nope"],
                                  ["dump.json", "--batch-size", "0"], ["dump.json", "--max-txn-ops", "0"]],
                         ids=["missing", "not-json", "only-nope", "batch-0", "ops-0"])
def test_a_refused_load_creates_no_database(tmp_path: Path, args: list[str]) -> None:
    """The mistyped database a refused load left behind read as clean to ``dal check``."""
    (tmp_path / "dump.json").write_text(json.dumps(EMPTY_DUMP))
    done = run_dal("load", "--persistent", "sqlite:///typo.sqlite3", *args, cwd=tmp_path)
    assert done.returncode == 2 and done.stderr.startswith("error: "), done.stderr
    assert not (tmp_path / "typo.sqlite3").exists()


@pytest.mark.parametrize("args", [["--batch-size", "0"], ["--only", "Nope"]])
def test_a_refused_copy_creates_no_destination(tmp_path: Path, args: list[str]) -> None:
    done = run_dal("copy", store(tmp_path), "sqlite:///typo.sqlite3", *args, cwd=tmp_path)
    assert done.returncode == 2 and done.stderr.startswith("error: "), done.stderr
    assert not (tmp_path / "typo.sqlite3").exists()


# --- the demo beside an application's hybrids ---------------------------------------------------


@pytest.mark.parametrize("command", [["demo", "--erd", ""], ["stats", "--demo"]])
def test_the_demo_runs_beside_hybrids_named_like_its_own(tmp_path: Path, command: list[str]) -> None:
    """docs/cli.md: your hybrids may be named like the sample model's (Disk); DAL_HYBRIDS names them."""
    package(tmp_path, "clash", {"__init__.py": """\
        from dal.objects.dataobject import DataObject
        from dal.structures import Property

        class Disk(DataObject):
            __properties = [Property("label", str)]
        """})
    done = run_dal(*command, "--count", "2", "--persistent", "memory://", cwd=tmp_path,
                   env={"DAL_HYBRIDS": "clash"})
    assert done.returncode == 0, done.stderr


# --- dal erd on packages -----------------------------------------------------------------------


def app(root: Path) -> None:
    """A package exporting a hybrid and a settings dict, a junction with two relations to one hybrid in
    a submodule its __init__ does not import, and a mirrored hybrid nowhere."""
    package(root, "appx", {"__init__.py": """\
        from appx.node import Node

        DEFAULTS = {"timeout": 5}
        ROLES = ["a", "b"]
        __all__ = ["DEFAULTS", "Node", "ROLES"]
        """, "node.py": """\
        from dal.objects.dataobject import DataObject
        from dal.structures import Property

        class Node(DataObject):
            __properties = [Property("name", str)]
        """, "work.py": """\
        from dal.objects.dataobject import DataObject
        from dal.structures import Property, Relation

        class Person(DataObject):
            __properties = [Property("name", str)]

        class Project(DataObject):
            __properties = [Property("name", str)]

        class Assignment(DataObject):
            __relations = [Relation("person", Person, "assignments"),
                           Relation("project", Project, "assignments"),
                           Relation("reviewer", Person, "reviews")]
        """})


def test_erd_and_refresh_take_a_package_exporting_a_dict(tmp_path: Path) -> None:
    app(tmp_path)
    drawn = run_dal("erd", "--hybrids", "appx", cwd=tmp_path)
    assert drawn.returncode == 0, drawn.stderr
    assert all(f'"{name}" {{' in drawn.stdout or f"{name} {{" in drawn.stdout
               for name in ("Node", "Person", "Project", "Assignment"))
    url = store(tmp_path)
    refreshed = run_dal("refresh", "--once", "--hybrids", "appx", "--persistent", url, cwd=tmp_path)
    assert refreshed.returncode == 2 and refreshed.stderr.startswith("error: no mirrored hybrid in 'appx'"), \
        refreshed.stderr


def test_hybrids_in_imports_the_submodules_of_a_package(tmp_path: Path) -> None:
    """Its docstring says submodules are imported, as `dal --hybrids` imports them: subpackages too."""
    package(tmp_path, "walked", {"__init__.py": ""})
    package(tmp_path / "walked", "inner", {"__init__.py": "", "disk.py": """\
        from dal.objects.dataobject import DataObject
        from dal.structures import Property

        class Platter(DataObject):
            __properties = [Property("name", str)]
        """})
    script = "from dal.tools import erd; print(sorted(cls.__name__ for cls in erd.hybrids_in(['walked'])))"
    # `python -c` puts the working directory on the path
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120, check=False, env=environment())
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['Platter']"


def test_a_junction_with_two_relations_to_one_hybrid_draws_each_link_once(tmp_path: Path) -> None:
    app(tmp_path)
    done = run_dal("erd", "--hybrids", "appx.work", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    links = [line.strip() for line in done.stdout.splitlines() if "many-to-many via" in line]
    assert links == ['"Person" }o..o{ "Person" : "many-to-many via Assignment"',
                     '"Person" }o..o{ "Project" : "many-to-many via Assignment"']


# --- -o naming the store's own database --------------------------------------------------------------


#: names of the store's database (made.sqlite3) and of the files SQLite keeps beside it
OWN_DATABASE = ["made.sqlite3", "link.sqlite3", "sub/../made.sqlite3", "made.sqlite3-wal",
                "made.sqlite3-journal"]


def _own_store(where: Path) -> tuple[str, bytes, list[str]]:
    """Return the URL of a store under ``where`` (with a symlink to it and a folder ``sub``), its bytes
    and the names in ``where``."""
    url = store(where)
    (where / "sub").mkdir()
    (where / "link.sqlite3").symlink_to("made.sqlite3")
    return url, (where / "made.sqlite3").read_bytes(), sorted(os.listdir(where))


@pytest.mark.parametrize("target", OWN_DATABASE)
def test_dump_refuses_to_write_over_the_database_it_reads(tmp_path: Path, target: str) -> None:
    """The rename would replace the store by the JSON of one namespace: every other one lost."""
    url, before, names = _own_store(tmp_path)
    done = run_dal("dump", "--persistent", url, "-o", target, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(f"error: cannot write {target!r}: it is "), done.stderr
    assert "SQLite database" in done.stderr and "name another file" in done.stderr
    assert (tmp_path / "made.sqlite3").read_bytes() == before and sorted(os.listdir(tmp_path)) == names


@pytest.mark.parametrize("target", ["made.sqlite3-wal", "made.sqlite3-shm"])
def test_dump_through_a_symlink_refuses_the_side_files_of_the_file_it_leads_to(
        tmp_path: Path, target: str) -> None:
    """SQLite keeps ``-wal`` and ``-shm`` beside the file a symlink leads to (``made.sqlite3-wal``), not
    beside the link's name: replacing the live WAL of a store in use lost its committed objects."""
    url, before, names = _own_store(tmp_path)
    done = run_dal("dump", "--persistent", url.replace("made.sqlite3", "link.sqlite3"), "-o", target,
                   cwd=tmp_path)
    side = target.rsplit("-", 1)[1]
    assert done.returncode == 2 and f"it is the {side} file of" in done.stderr, done.stderr
    assert (tmp_path / "made.sqlite3").read_bytes() == before and sorted(os.listdir(tmp_path)) == names


@pytest.mark.parametrize("command", [["erd", "--format", "mermaid", "-o"], ["demo", "--count", "1", "--erd"]])
@pytest.mark.parametrize("target", ["link.sqlite3", "made.sqlite3-wal"])
def test_erd_and_demo_refuse_to_draw_over_the_database_of_the_store(
        tmp_path: Path, command: list[str], target: str) -> None:
    """``dal erd`` opens no store, but the one --persistent names is not written over either; the demo
    refuses before it starts."""
    url, before, names = _own_store(tmp_path)
    done = run_dal(*command, target, "--persistent", url, cwd=tmp_path)
    assert done.returncode == 2 and "the SQLite database" in done.stderr, done.stderr
    assert (tmp_path / "made.sqlite3").read_bytes() == before and sorted(os.listdir(tmp_path)) == names


# --- smaller refusals ----------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["svg", "dot"])
def test_erd_refuses_an_empty_output_name_as_dump_does(tmp_path: Path, fmt: str) -> None:
    """``-o "$OUT"`` with OUT unset: neither ./erd.svg nor stdout, which were not asked for."""
    done = run_dal("erd", "--format", fmt, "-o", "", cwd=tmp_path)
    assert done.returncode == 2 and "error: -o names no file" in done.stderr, done.stderr
    assert done.stdout == "" and os.listdir(tmp_path) == []


def test_erd_only_naming_nothing_says_name_one(tmp_path: Path) -> None:
    done = run_dal("erd", "--only", "", cwd=tmp_path)
    assert done.returncode == 2 and "no hybrid selected; name at least one" in done.stderr, done.stderr


def test_erd_with_a_dot_that_fails_silently_says_so(tmp_path: Path) -> None:
    done = run_dal("erd", "--format", "svg", "--dot", shutil.which("false") or "/bin/false", "-o", "x.svg",
                   cwd=tmp_path)
    assert done.returncode == 2 and "(exit 1): it printed no reason" in done.stderr, done.stderr
    assert not (tmp_path / "x.svg").exists()


@pytest.mark.parametrize(("fmt", "prints", "says"), [
    ("svg", "", "exited 0 but wrote nothing"),
    ("svg", "not a picture", "bytes that are no svg picture"),
    ("png", "<svg></svg>", "bytes that are no png picture"),
])
def test_erd_with_a_dot_that_draws_nothing_keeps_the_old_picture(tmp_path: Path, fmt: str, prints: str,
                                                                  says: str) -> None:
    """A --dot that exits 0 with nothing (or no picture) on stdout replaced the good diagram, exit 0."""
    program = tmp_path / "fake-dot"
    program.write_text(f"#!/bin/sh\ncat >/dev/null\nprintf '%s' '{prints}'\n")
    program.chmod(0o755)
    (tmp_path / f"good.{fmt}").write_bytes(b"THE GOOD PICTURE")
    done = run_dal("erd", "--format", fmt, "--dot", str(program), "-o", f"good.{fmt}", cwd=tmp_path)
    assert done.returncode == 2 and says in done.stderr and "no file was written" in done.stderr, done.stderr
    assert (tmp_path / f"good.{fmt}").read_bytes() == b"THE GOOD PICTURE" and done.stdout == ""


def test_migrate_refuses_modules_declaring_no_hybrids(tmp_path: Path) -> None:
    """As dal erd does: a module with no hybrids would read as 'up to date'."""
    done = run_dal("migrate", "--hybrids", "json", "--persistent", "sqlite:///m.sqlite3", cwd=tmp_path)
    assert done.returncode == 2 and "the modules 'json' declare no hybrids" in done.stderr, done.stderr
    assert not (tmp_path / "m.sqlite3").exists()


@pytest.mark.parametrize(("name", "magic"), [("model.png", b"\x89PNG"), ("model.mmd", b"erDiagram")])
def test_demo_draws_its_diagram_in_the_format_of_the_suffix(tmp_path: Path, name: str, magic: bytes) -> None:
    if name.endswith(".png") and shutil.which("dot") is None:
        pytest.skip("Graphviz's dot is not installed: the demo draws no picture")
    done = run_dal("demo", "--count", "2", "--erd", name, "--persistent", "memory://", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / name).read_bytes().startswith(magic)
    assert [n for n in os.listdir(tmp_path) if n.endswith(".tmp")] == []


def test_the_demo_shows_why_its_refresher_failed(tmp_path: Path) -> None:
    """It kept only the stderr lines holding a lowercase "error": a traceback's last line has none."""
    hook = tmp_path / "hook"
    package(tmp_path, "hook", {"sitecustomize.py": """
        import sys
        if "refresh" in sys.orig_argv:  # the demo's `dal refresh --once` only: it crashes
            import dal.cli.refresh

            def crash(args):
                raise RuntimeError("injected crash: the disk went away")

            dal.cli.refresh.run = crash
        """})
    path = os.pathsep.join(filter(None, [str(hook), os.environ.get("PYTHONPATH")]))
    done = run_dal("demo", "--count", "2", "--erd", "", cwd=tmp_path, env={"PYTHONPATH": path})
    assert "`dal refresh --once` (another process): exit 1" in done.stdout, done.stdout
    assert "| RuntimeError: injected crash: the disk went away" in done.stdout, done.stdout
