"""A stderr that cannot be written stops no command: the progress bar and the messages there are for
the reader, never part of the work.

Started with ``2>&-``, with stderr on a full device or on a pipe whose reader left, ``dal load``,
``copy`` and ``check`` used to stop at the first progress line (5 of 43 objects loaded), silently, with
exit 1 or 141. Every command runs in a subprocess, as users run it.
"""

from __future__ import annotations

import errno
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_cli import run_dal

from dal.cli.output import diagnostics
from dal.cli.progress import Progress

#: how stderr is made unwritable: closed by the shell, on a full device, a pipe nobody reads
REDIRECTS = ["2>&-", "2>/dev/full", "a pipe whose reader left"]


@pytest.fixture(scope="module")
def dumped(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory whose dal.sqlite3 holds the demo's data and full.json its dump."""
    where = tmp_path_factory.mktemp("stderr")
    assert run_dal("demo", "--count", "4", "--erd", "", cwd=where).returncode == 0
    dumped = run_dal("dump", "--persistent", "sqlite:///dal.sqlite3", "-o", "full.json", cwd=where)
    assert dumped.returncode == 0, dumped.stderr
    return where


def run_without_stderr(command: str, redirect: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run ``dal COMMAND`` (words split on spaces) with stderr made unwritable by ``redirect``."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("DAL_")}
    words = [sys.executable, "-m", "dal", *command.split()]
    if redirect == "2>&-":
        return subprocess.run(["bash", "-c", 'exec "$@" 2>&-', "dal", *words], cwd=cwd, env=environment,
                              stdout=subprocess.PIPE, text=True, timeout=120, check=False)
    if redirect == "2>/dev/full":
        if not os.path.exists("/dev/full"):
            pytest.skip("no /dev/full here")
        with open("/dev/full", "w") as full:
            return subprocess.run(words, cwd=cwd, env=environment, stdout=subprocess.PIPE, stderr=full,
                                  text=True, timeout=120, check=False)
    read, write = os.pipe()
    os.close(read)  # the reader left before the first line: every write fails with EPIPE
    try:
        return subprocess.run(words, cwd=cwd, env=environment, stdout=subprocess.PIPE, stderr=write,
                              text=True, timeout=120, check=False)
    finally:
        os.close(write)


def counts(where: Path, url: str) -> dict[str, int]:
    """Return the objects per hybrid the store at ``url`` holds, read by a dump."""
    done = run_dal("dump", "--persistent", url, cwd=where)
    assert done.returncode == 0, done.stderr
    found: dict[str, int] = json.loads(done.stdout)["counts"]
    return found


@pytest.mark.parametrize("redirect", REDIRECTS)
def test_load_finishes_whatever_stderr_is(dumped: Path, redirect: str) -> None:
    target = f"load{REDIRECTS.index(redirect)}.sqlite3"
    done = run_without_stderr(f"load full.json --persistent sqlite:///{target} --batch-size 5", redirect,
                              dumped)
    expected = json.loads((dumped / "full.json").read_text())["counts"]
    assert done.returncode == 0 and done.stdout.startswith(f"loaded {sum(expected.values())} objects"), done
    assert counts(dumped, f"sqlite:///{target}") == expected


@pytest.mark.parametrize("redirect", REDIRECTS)
def test_copy_finishes_whatever_stderr_is(dumped: Path, redirect: str) -> None:
    target = f"copy{REDIRECTS.index(redirect)}.sqlite3"
    done = run_without_stderr(f"copy sqlite:///dal.sqlite3 sqlite:///{target} --batch-size 5", redirect,
                              dumped)
    assert done.returncode == 0 and "verified: the destination holds as many" in done.stdout, done
    assert counts(dumped, f"sqlite:///{target}") == counts(dumped, "sqlite:///dal.sqlite3")


@pytest.mark.parametrize("redirect", REDIRECTS)
def test_check_reports_whatever_stderr_is(dumped: Path, redirect: str) -> None:
    done = run_without_stderr("check --persistent sqlite:///dal.sqlite3", redirect, dumped)
    assert done.returncode == 0 and "clean" in done.stdout, done


@pytest.mark.parametrize("redirect", ["2>&-", "2>/dev/full"])
def test_an_error_with_stderr_unwritable_keeps_its_exit_status(tmp_path: Path, redirect: str) -> None:
    """The error line is lost, not the status: no traceback, no exit 1 standing for 2."""
    done = run_without_stderr("load missing.json --persistent sqlite:///new.sqlite3", redirect, tmp_path)
    assert done.returncode == 2 and done.stdout == "", done


class Refusing(io.StringIO):
    def write(self, text: str) -> int:
        raise OSError(28, "No space left on device")


@pytest.mark.parametrize("kind", ["full", "closed", "none"])
def test_a_progress_bar_that_cannot_draw_turns_itself_off(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    stream = Refusing() if kind == "full" else io.StringIO()
    if kind == "closed":
        stream.close()
    if kind == "none":  # a process started with 2>&-: Python's sys.stderr is None
        monkeypatch.setattr(sys, "stderr", None)
    with Progress(10, "load", None if kind == "none" else stream) as bar:
        for _ in range(10):
            bar.advance()
    assert bar.done == 10 and not bar.enabled


class FailingOnce(io.StringIO):
    """A log on a device full (or busy) for a moment: its first write fails with ``error``."""

    def __init__(self, error: int) -> None:
        super().__init__()
        self.error: int | None = error

    def write(self, text: str) -> int:
        if self.error is not None:
            error, self.error = self.error, None
            raise OSError(error, os.strerror(error))
        return super().write(text)


@pytest.mark.parametrize("error", [errno.ENOSPC, errno.EAGAIN, errno.EIO])
def test_a_failed_stderr_write_drops_that_write_alone(error: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """One failed write turned stderr off for the process: a long `dal refresh` lost every later warning."""
    log = FailingOnce(error)
    monkeypatch.setattr(sys, "stderr", log)
    with diagnostics():
        sys.stderr.write("lost while the device is full\n")
        print("warning: could not refresh 3 objects", file=sys.stderr)
        print("error: a later one", file=sys.stderr)
    assert log.getvalue() == "warning: could not refresh 3 objects\nerror: a later one\n"


@pytest.mark.parametrize("gone", [errno.EPIPE, errno.EBADF, "closed"])
def test_a_stderr_that_is_gone_is_not_written_again(gone: int | str, monkeypatch: pytest.MonkeyPatch) -> None:
    log = FailingOnce(errno.EPIPE if gone == "closed" else int(gone))
    if gone == "closed":
        log.close()
    monkeypatch.setattr(sys, "stderr", log)
    with diagnostics():
        stand_in = sys.stderr
        print("first", file=sys.stderr)
        print("second", file=sys.stderr)
    assert getattr(stand_in, "stream", "?") is None
    if gone != "closed":
        assert log.error is None and log.getvalue() == ""  # one attempt, then none
