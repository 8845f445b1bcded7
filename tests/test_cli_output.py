"""Where the command line writes: ``dal dump -o FILE``, stdout that cannot be written, ``demo --erd``.

No test here ever names a device file as a target: a bug that replaces its target would replace
the device (as root). FIFOs, symlinks and directories in a tmp dir stand in for them; a full disk
is a writer that raises, or a file size limit in a subprocess.
"""

from __future__ import annotations

import errno
import io
import json
import os
import signal
import stat
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import pytest
from test_cli import run_dal

from dal.cli import main
from dal.cli.output import Terminated, write_file
from dal.exceptions import DalError


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory whose dal.sqlite3 holds the demo's data (namespace ``dal``), for dumps to read."""
    where = tmp_path_factory.mktemp("dumped")
    done = run_dal("demo", "--count", "2", "--erd", "", cwd=where)
    assert done.returncode == 0, done.stderr
    return where


def dump_to(demo_dir: Path, target: Path | str, *,
            umask: int | None = None) -> subprocess.CompletedProcess[str]:
    url = f"sqlite:///{demo_dir / 'dal.sqlite3'}"
    if umask is None:
        return run_dal("dump", "--persistent", url, "-o", str(target), cwd=demo_dir)
    environment = {k: v for k, v in os.environ.items() if not k.startswith("DAL_")}
    return subprocess.run([sys.executable, "-m", "dal", "dump", "--persistent", url, "-o", str(target)],
                          cwd=demo_dir, env=environment, capture_output=True, text=True, timeout=120,
                          check=False, preexec_fn=lambda: os.umask(umask))


def is_dump(path: Path) -> bool:
    return json.loads(path.read_text())["format"] == "dal-dump"


def leftovers(folder: Path) -> list[str]:
    return sorted(name for name in os.listdir(folder) if name.endswith(".tmp"))


# --- dal dump -o FILE ---------------------------------------------------------------------------


@pytest.mark.parametrize("target", ["adir", ""])
def test_dump_refuses_a_directory_or_no_name(demo_dir: Path, tmp_path: Path, target: str) -> None:
    (tmp_path / "adir").mkdir()
    result = dump_to(demo_dir, tmp_path / target if target else "")
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: ") and "Traceback" not in result.stderr
    assert ("is a directory" if target else "names no file") in result.stderr
    assert os.listdir(tmp_path / "adir") == [] and leftovers(tmp_path) == []


def test_dump_through_a_symlink_writes_its_target(demo_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "backups").mkdir()
    real = tmp_path / "backups" / "real.json"
    real.write_text("old")
    link = tmp_path / "link.json"
    link.symlink_to(Path("backups") / "real.json")
    result = dump_to(demo_dir, link)
    assert result.returncode == 0, result.stderr
    assert link.is_symlink() and os.readlink(link) == str(Path("backups") / "real.json")
    assert is_dump(real)
    assert leftovers(tmp_path) == [] and leftovers(tmp_path / "backups") == []


def test_dump_into_a_fifo_writes_in_place(demo_dir: Path, tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    read: list[str] = []
    # a daemon: if the dump replaced the FIFO, the reader waits on the old one forever
    reader = threading.Thread(target=lambda: read.append(fifo.read_text()), daemon=True)
    reader.start()
    result = dump_to(demo_dir, fifo)
    reader.join(timeout=10)
    assert result.returncode == 0, result.stderr
    assert read, "the reader of the FIFO got nothing"
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)  # still the FIFO, not a regular file renamed over it
    assert json.loads(read[0])["format"] == "dal-dump"
    assert leftovers(tmp_path) == []


def test_dump_keeps_the_mode_of_the_file_it_replaces(demo_dir: Path, tmp_path: Path) -> None:
    kept = tmp_path / "kept.json"
    kept.write_text("old")
    kept.chmod(0o604)
    assert dump_to(demo_dir, kept, umask=0o077).returncode == 0
    assert stat.S_IMODE(kept.stat().st_mode) == 0o604 and is_dump(kept)


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_a_new_dump_file_gets_the_umask_mode(demo_dir: Path, tmp_path: Path, umask: int) -> None:
    new = tmp_path / "new.json"
    assert dump_to(demo_dir, new, umask=umask).returncode == 0
    assert stat.S_IMODE(new.stat().st_mode) == 0o666 & ~umask and is_dump(new)


def _writes_then(action: Callable[[], None]) -> Callable[[TextIO], int]:
    def write(stream: TextIO) -> int:
        stream.write("partial")
        action()
        stream.write(" and more")
        return 1
    return write


def test_sigterm_mid_write_removes_the_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "out.json"
    target.write_text("before")
    previous = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Terminated) as stopped:
        write_file(str(target), _writes_then(lambda: os.kill(os.getpid(), signal.SIGTERM)))
    assert stopped.value.signum == signal.SIGTERM
    assert target.read_text() == "before" and leftovers(tmp_path) == []
    assert signal.getsignal(signal.SIGTERM) == previous


def test_sigterm_mid_dump_exits_143_and_writes_nothing(demo_dir: Path, tmp_path: Path) -> None:
    """The command: SIGTERM while the dump is written (here: as its first document is read)."""
    script = ("import os, signal, sys\n"
              "import dal.tools.transfer.dump as d\n"
              "real = d.decode\n"
              "def decode(value):\n"
              "    os.kill(os.getpid(), signal.SIGTERM)\n"
              "    return real(value)\n"
              "d.decode = decode\n"
              "from dal.cli import main\n"
              "sys.exit(main(sys.argv[1:]))\n")
    target = tmp_path / "out.json"
    environment = {k: v for k, v in os.environ.items() if not k.startswith("DAL_")}
    result = subprocess.run([sys.executable, "-c", script, "dump", "--persistent",
                             f"sqlite:///{demo_dir / 'dal.sqlite3'}", "-o", str(target)], cwd=demo_dir,
                            env=environment, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 128 + signal.SIGTERM, result.stderr
    assert "error: terminated" in result.stderr and "Traceback" not in result.stderr
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("fails", ["write", "replace"])
def test_a_failed_write_is_a_typed_error_and_leaves_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fails: str) -> None:
    target = tmp_path / "out.json"
    target.write_text("before")

    def full(*args: Any) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    if fails == "replace":
        monkeypatch.setattr(os, "replace", full)
    with pytest.raises(DalError, match=r"cannot write .*No space left on device"):
        write_file(str(target), _writes_then(full if fails == "write" else lambda: None))
    assert target.read_text() == "before" and leftovers(tmp_path) == []


@pytest.mark.parametrize("target", ["file-as-dir", "too-long"])
def test_dump_to_a_path_it_cannot_look_at_is_an_error(demo_dir: Path, tmp_path: Path, target: str) -> None:
    """ENOTDIR, ENAMETOOLONG: a typed error naming why (exit 2), not a traceback."""
    (tmp_path / "plain").write_text("a file")
    name = str(tmp_path / "plain" / "x.json") if target == "file-as-dir" else str(tmp_path / ("a" * 300))
    result = dump_to(demo_dir, name)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    says = "Not a directory" if target == "file-as-dir" else "File name too long"
    assert result.stderr.startswith(f"error: cannot write {name!r}: {says}; choose a writable directory")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a write as another user")
def test_write_into_a_directory_it_may_not_enter_is_an_error(tmp_path: Path) -> None:
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    os.chmod(tmp_path, 0o755)
    script = ("from dal.cli.output import write_file\nfrom dal.exceptions import DalError\n"
              f"try:\n    write_file({str(private / 'x.json')!r}, lambda s: s.write('x'))\n"
              "except DalError as exc:\n    print(exc)\n")
    done = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
                           sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                          check=False, cwd="/")
    assert done.returncode == 0, done.stderr
    assert "Permission denied; choose a writable directory" in done.stdout


def test_dump_into_a_pipe_named_by_its_dev_fd_path(demo_dir: Path) -> None:
    """``-o >(gzip > f)`` and ``-o /dev/stdout`` into a pipe: /dev/fd/N, which resolve() breaks."""
    read_end, write_end = os.pipe()
    chunks: list[bytes] = []

    def drain() -> None:
        with os.fdopen(read_end, "rb") as pipe:
            chunks.append(pipe.read())

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    environment = {k: v for k, v in os.environ.items() if not k.startswith("DAL_")}
    try:
        result = subprocess.run([sys.executable, "-m", "dal", "dump", "--persistent",
                                 f"sqlite:///{demo_dir / 'dal.sqlite3'}", "-o", f"/dev/fd/{write_end}"],
                                cwd=demo_dir, env=environment, capture_output=True, text=True, timeout=120,
                                check=False, pass_fds=(write_end,))
    finally:
        os.close(write_end)
    reader.join(timeout=10)
    assert result.returncode == 0, result.stderr
    assert chunks and json.loads(chunks[0])["format"] == "dal-dump"


def test_sigterm_once_the_file_is_renamed_is_delivered_after_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The file is complete: no Terminated ("not written"); the signal reaches the previous handler."""
    target = tmp_path / "out.json"
    real = os.replace

    def replace(source: Any, destination: Any) -> None:
        real(source, destination)
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(os, "replace", replace)
    received: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: received.append(signum))
    try:
        assert write_file(str(target), lambda stream: stream.write("complete")) == len("complete")
        assert received == [signal.SIGTERM]
        assert signal.getsignal(signal.SIGTERM) is not previous  # still the recorder, restored
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert target.read_text() == "complete" and leftovers(tmp_path) == []


def test_sigterm_as_the_temporary_file_is_created_leaves_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A SIGTERM right after the temporary file exists is held until its name is known."""
    real = os.open

    def open_then_term(path: Any, flags: int, mode: int = 0o777) -> int:
        handle = real(path, flags, mode)
        os.kill(os.getpid(), signal.SIGTERM)
        return handle

    monkeypatch.setattr(os, "open", open_then_term)

    def outer(signum: int, frame: Any) -> None:
        raise RuntimeError("the handler write_file should have replaced by now")

    previous = signal.signal(signal.SIGTERM, outer)
    try:
        with pytest.raises(Terminated):
            write_file(str(tmp_path / "out.json"), lambda stream: stream.write("x"))
        assert signal.getsignal(signal.SIGTERM) is outer
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert os.listdir(tmp_path) == []


# --- stdout that cannot be written ------------------------------------------------------------


class _Full(io.RawIOBase):
    """A stdout on a full disk."""

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.parametrize("buffered", [False, True], ids=["written-through", "buffered"])
@pytest.mark.parametrize("command", [["erd"], ["check"], ["dump"]])
def test_main_reports_a_full_stdout_as_an_error(
        demo_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        command: list[str], buffered: bool) -> None:
    """Buffered, the error comes from the flush main does once the command returned."""
    raw = _Full()
    stream = io.BufferedWriter(raw, buffer_size=1 << 20) if buffered else raw
    monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(stream, write_through=not buffered))
    url = f"sqlite:///{demo_dir / 'dal.sqlite3'}"
    assert main([*command, "--hybrids", "dal.hybrids", "--persistent", url]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("check ")]
    assert errors == ["error: cannot write output: No space left on device"]


@pytest.mark.parametrize("command", [["erd"], ["check"], ["dump"]])
def test_a_stdout_that_refuses_writes_is_one_error_line(demo_dir: Path, command: list[str]) -> None:
    """The real stdout of a process (a file opened for reading only): exit 2, one line, nothing at exit."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("DAL_")}
    with open(demo_dir / "dal.sqlite3", "rb") as read_only:
        result = subprocess.run([sys.executable, "-m", "dal", *command], cwd=demo_dir, env=environment,
                                stdout=read_only, stderr=subprocess.PIPE, text=True, timeout=120,
                                check=False)
    errors = [line for line in result.stderr.splitlines() if not line.startswith("check ")]
    assert (result.returncode, errors) == (2, ["error: cannot write output: Bad file descriptor"]), \
        result.stderr


# --- dal demo --erd FILE ---------------------------------------------------------------------------


@pytest.mark.parametrize(("erd", "says"), [("missing/erd.svg", "does not exist"),
                                           ("adir", "is a directory")])
def test_demo_refuses_an_unwritable_diagram_before_it_starts(tmp_path: Path, erd: str, says: str) -> None:
    (tmp_path / "adir").mkdir()
    result = run_dal("demo", "--count", "2", "--erd", erd, cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.startswith("error: --erd "), result.stderr
    assert says in result.stderr and "Traceback" not in result.stderr
    assert result.stdout == "" and not (tmp_path / "dal.sqlite3").exists()  # refused before it began


@pytest.mark.parametrize("erd", ["plain/erd.svg", "a" * 300])
def test_demo_refuses_a_diagram_path_it_cannot_look_at(tmp_path: Path, erd: str) -> None:
    (tmp_path / "plain").write_text("a file")
    result = run_dal("demo", "--count", "2", "--erd", erd, cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.startswith(f"error: cannot write --erd {erd!r}: ")
    assert not (tmp_path / "dal.sqlite3").exists()


def test_a_diagram_that_cannot_be_written_at_the_end_is_a_typed_error(tmp_path: Path) -> None:
    from dal.cli.demo_report import Report
    from dal.cli.demo_tools import diagram
    from dal.tools import erd

    try:
        erd.render_picture(erd.hybrids_in(["dal.hybrids"]), "svg")
    except erd.GraphvizNotFoundError:
        pytest.skip("Graphviz's dot is not installed: the demo writes no diagram")
    (tmp_path / "erd.svg").mkdir()  # made after the check the demo runs first
    with pytest.raises(DalError, match=r"cannot write .*erd\.svg"):
        diagram(Report(lambda line: None), tmp_path / "erd.svg")


def test_a_sigterm_during_the_cleanup_of_a_failed_dump_still_leaves_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A second SIGTERM (a supervisor repeating it) while the temporary file is removed waits."""
    unlink = Path.unlink

    def signalled(self: Path, missing_ok: bool = False) -> None:
        os.kill(os.getpid(), signal.SIGTERM)
        unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", signalled)

    def write(stream: Any) -> None:
        stream.write("partial")
        raise DalError("the store went away mid-dump")

    with pytest.raises(Terminated):  # held through the cleanup, then raised: nothing was written
        write_file(str(tmp_path / "dump.json"), write)
    assert os.listdir(tmp_path) == []
