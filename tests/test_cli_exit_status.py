"""The exit status of a command whose output could not all be written: a reader that went away
(``dal ... | head``) is 141, as for a Unix tool killed by SIGPIPE; ``--help`` that cannot be written
is an error like any other output."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from test_cli_output import _Full

from dal.cli import main

#: 128 + SIGPIPE, what a Unix tool killed by the broken pipe reports
EXIT_BROKEN_PIPE = 141

#: version 1 of a model, to store objects with; version 2 gives both a default and an index
MODEL_V1 = '''from dal import DataObject, Property
class Thing(DataObject, hybrid_name="thing"):
    __properties = [Property("name", str)]
class Other(DataObject, hybrid_name="other"):
    __properties = [Property("name", str)]
'''
MODEL_V2 = '''from dal import DataObject, Property
class Thing(DataObject, hybrid_name="thing"):
    __properties = [Property("name", str), Property("color", str, default="red", indexed=True)]
class Other(DataObject, hybrid_name="other"):
    __properties = [Property("name", str), Property("size", int, default=1, indexed=True)]
'''


def environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("DAL_")}


def seeded(folder: Path, count: int) -> list[str]:
    """Store ``count`` objects of each hybrid of version 1 in ``folder``/s.sqlite3; return its options."""
    (folder / "v1.py").write_text(MODEL_V1)
    (folder / "v2.py").write_text(MODEL_V2)
    url = f"sqlite:///{folder / 's.sqlite3'}"
    seed = (f"import dal, v1\ndal.configure({url!r}, 'memory://', namespace='dal')\n"
            f"dal.save_many([v1.Thing(name=f't{{i}}') for i in range({count})])\n"
            f"dal.save_many([v1.Other(name=f'o{{i}}') for i in range({count})])\n")
    done = subprocess.run([sys.executable, "-c", seed], cwd=folder, env=environment(), capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return ["--persistent", url]


def started(folder: Path, *args: str) -> tuple[subprocess.Popen[bytes], Path]:
    """Start ``dal ARGS`` with its stdout on a pipe and its stderr in a file (returned)."""
    errors = folder / "stderr.txt"
    with errors.open("wb") as stderr:
        process = subprocess.Popen([sys.executable, "-m", "dal", *args], cwd=folder, env=environment(),
                                   stdout=subprocess.PIPE, stderr=stderr)
    return process, errors


def assert_quiet(errors: Path) -> None:
    text = errors.read_text()
    assert "Traceback" not in text and "error:" not in text and "Exception ignored" not in text, text


@pytest.fixture(scope="module")
def checked_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """A store `dal check --hybrids dal.hybrids` finds problems in: documents of undeclared hybrids."""
    folder = tmp_path_factory.mktemp("checked")
    return folder, seeded(folder, 3)


def test_check_with_problems_exits_141_when_its_reader_left_first(checked_store: Any) -> None:
    folder, store = checked_store
    process, errors = started(folder, "check", "--hybrids", "dal.hybrids", *store)
    assert process.stdout is not None
    process.stdout.close()  # `dal check | head -0`: gone before the report
    assert process.wait(120) == EXIT_BROKEN_PIPE
    assert_quiet(errors)


def test_check_keeps_its_status_when_its_output_was_all_written(checked_store: Any) -> None:
    """The report fits in the pipe: once the command ended, its reader leaving changes nothing."""
    folder, store = checked_store
    process, errors = started(folder, "check", "--hybrids", "dal.hybrids", *store)
    assert process.stdout is not None
    assert process.wait(120) == 1  # problems found: the report sits in the pipe, unread
    report = process.stdout.read().decode()
    process.stdout.close()
    assert "6 problems" in report and report.endswith("\n"), report
    assert_quiet(errors)


def test_migrate_stopped_by_its_reader_exits_141(tmp_path: Path) -> None:
    """`dal migrate | head -1`: the first hybrid's line, then the reader goes; the rest is not done."""
    store = seeded(tmp_path, 300)
    process, errors = started(tmp_path, "migrate", "--hybrids", "v2", *store)
    assert process.stdout is not None
    first = process.stdout.readline().decode()
    process.stdout.close()
    assert process.wait(120) == EXIT_BROKEN_PIPE, first
    assert first.startswith(("thing: 300 objects", "other: 300 objects")), first
    assert_quiet(errors)
    left = subprocess.run([sys.executable, "-m", "dal", "migrate", "--dry-run", "--hybrids", "v2", *store],
                          cwd=tmp_path, env=environment(), capture_output=True, text=True, timeout=120,
                          check=False)
    assert "objects would change" in left.stdout, left.stdout + left.stderr  # it did stop part-way


# --- --help that cannot be written ------------------------------------------------------------------


@pytest.mark.parametrize("buffered", [False, True], ids=["written-through", "buffered"])
@pytest.mark.parametrize("argv", [["--help"], ["check", "--help"]])
def test_help_on_a_full_stdout_is_an_error(monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str], argv: list[str],
                                           buffered: bool) -> None:
    raw = _Full()
    stream = io.BufferedWriter(raw, buffer_size=1 << 20) if buffered else raw
    monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(stream, write_through=not buffered))
    assert main(argv) == 2
    assert capsys.readouterr().err.splitlines() == ["error: cannot write output: No space left on device"]


def test_help_to_a_stdout_that_refuses_writes_exits_2(tmp_path: Path) -> None:
    """The real stdout of a process (a file opened for reading only)."""
    (tmp_path / "read-only").write_text("")
    with open(tmp_path / "read-only", "rb") as read_only:
        result = subprocess.run([sys.executable, "-m", "dal", "--help"], cwd=tmp_path, env=environment(),
                                stdout=read_only, stderr=subprocess.PIPE, text=True, timeout=120,
                                check=False)
    assert (result.returncode, result.stderr) == (2, "error: cannot write output: Bad file descriptor\n")


def test_help_and_usage_errors_keep_their_status(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    assert "usage: dal" in capsys.readouterr().out
    assert main(["check", "--no-such-option"]) == 2
    assert "unrecognized arguments: --no-such-option" in capsys.readouterr().err
