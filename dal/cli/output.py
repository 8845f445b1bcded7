"""Write a command's output file (``-o FILE``) whole or not at all, as the file it replaces was.

A regular file (or a new one) is written beside its target under a temporary name and renamed
over it once complete, so a failed or interrupted write leaves the target as it was and no
partial file behind; a symlink is followed (its target is replaced, the link stays); the new
file keeps the mode (and, where allowed, the owner) of the one it replaces, and a new file gets
``0o666`` less the umask, as a shell redirection would. A target that is no regular file (a
FIFO, a device) is a stream someone reads: it is written in place, by the name given, never
replaced. So is a name that leads to an open descriptor (``/dev/stdout``, ``/dev/stderr``,
``/dev/fd/N``, ``/proc/self/fd/N``, or a symlink to one), whatever it is open on: this
process's own descriptor is written through a duplicate of it, so ``dal dump -o /dev/stdout >>
log`` appends to ``log`` as the shell opened it, and never replaces it.

A command that opened a SQLite store names its database: a target that is that file, or one SQLite
keeps beside it (``-wal``, ``-journal``, ``-shm``), by any name, is refused with
:class:`OutputIsStoreError` before anything is written (the rename would replace the store).

SIGTERM while a file is written raises :class:`Terminated` once the temporary file is gone;
from the rename on the file is written, and a SIGTERM is held and delivered once the write is
done, so it never reports as unwritten a file that was.
"""

from __future__ import annotations

import errno
import io
import os
import re
import secrets
import signal
import stat
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from types import FrameType
from typing import IO, Any, BinaryIO, TextIO, TypeVar, cast

from dal.exceptions import DalError

T = TypeVar("T")
#: the stream a write is given: text or bytes
S = TypeVar("S", bound=IO[Any])
#: attempts at a temporary name nobody holds
ATTEMPTS = 100
#: a folder of open descriptors, links resolved: Linux's /proc/PID/fd (/dev/fd leads there), a BSD's /dev/fd
DESCRIPTORS = re.compile(r"/proc/(?P<pid>\d+)(?:/task/\d+)?/fd|/dev/fd")
#: symlinks followed at most, as the kernel does (ELOOP past it)
MAX_LINKS = 40
#: the endings of the files SQLite keeps beside a database, named after it ("": the database itself)
SQLITE_FILES = ("", "-wal", "-journal", "-shm")


class OutputIsStoreError(DalError):
    """The file to write is the SQLite database of the store the command opened, or one SQLite keeps
    beside it: writing it would replace the store's data."""


class ClosedOutput(io.TextIOBase):
    """Stands for a stdout the process was started without (``dal ... >&-``): Python leaves
    ``sys.stdout`` None then, and a print would vanish. Every write fails as a write to a closed
    descriptor does, so the command reports output that cannot be written."""

    def write(self, text: str) -> int:
        raise OSError(errno.EBADF, "stdout is closed (started with >&-); give the command an output")

    @property
    def buffer(self) -> ClosedOutput:  # where binary output (dal erd's pictures) goes
        return self


def open_stdout() -> None:
    """Put a :class:`ClosedOutput` in place of a stdout the process was started without."""
    if sys.stdout is None:
        sys.stdout = cast(TextIO, ClosedOutput())


class Diagnostics(io.TextIOBase):
    """Stands for stderr while a command runs: what goes there (the progress bar, a warning, an error
    line) is for the reader, never part of the work. A write that fails (a full device, EAGAIN) is
    dropped alone, so a long ``dal refresh`` loses only the lines of that moment; a stream that is gone
    (started with ``2>&-``, closed, a pipe whose reader left, EBADF) is not written again. Either way
    the command finishes its work and keeps its exit status."""

    def __init__(self, stream: TextIO | None) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        self._attempt(lambda stream: stream.write(text))
        return len(text)

    def flush(self) -> None:
        self._attempt(lambda stream: stream.flush())

    def isatty(self) -> bool:
        return bool(self._attempt(lambda stream: stream.isatty()))

    def fileno(self) -> int:
        if self.stream is None:
            raise io.UnsupportedOperation("stderr is closed")
        return self.stream.fileno()

    def writable(self) -> bool:
        return True

    def _attempt(self, call: Callable[[TextIO], object]) -> object:
        if self.stream is not None:
            try:
                return call(self.stream)
            except (OSError, ValueError, AttributeError) as exc:
                if _gone(self.stream, exc):
                    self.stream = None  # no later write can succeed: the rest is dropped, not retried
        return None


def _gone(stream: TextIO, error: Exception) -> bool:
    """Whether ``error``, raised writing ``stream``, means no later write to it can succeed."""
    if isinstance(error, OSError) and error.errno is not None:
        return error.errno in (errno.EPIPE, errno.EBADF)
    try:
        return isinstance(error, AttributeError) or bool(getattr(stream, "closed", False))
    except ValueError:  # a wrapper whose buffer was detached
        return True


@contextmanager
def diagnostics() -> Iterator[None]:
    """Put a :class:`Diagnostics` in place of ``sys.stderr`` while a command runs.

    A process started without descriptor 2 (``2>&-``) gets the null device there, so no file the
    command opens takes that number, where a child process or a C library would write its messages.
    """
    before = sys.stderr
    if before is None:
        with suppress(OSError):
            _hold_descriptor(2)
    sys.stderr = cast(TextIO, Diagnostics(before))
    try:
        yield
    finally:
        sys.stderr = before


def _hold_descriptor(number: int) -> None:
    """Open the null device on descriptor ``number`` if nothing is open there."""
    try:
        os.fstat(number)
        return
    except OSError:
        pass
    null = os.open(os.devnull, os.O_WRONLY)
    if null != number:
        os.dup2(null, number)
        os.close(null)


class Terminated(BaseException):
    """SIGTERM arrived while a file was being written; the temporary file is removed."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"terminated by signal {signum}")
        self.signum = signum


class Sigterm:
    """The SIGTERM handler :func:`sigterm_raises` installs: it raises :class:`Terminated`, or,
    between :meth:`hold` and :meth:`release`, keeps the signal for later (where cleanup could
    not know what to clean, or where the work is done and must not be reported undone)."""

    def __init__(self) -> None:
        self.holding = False
        #: the signal that arrived while held, not yet delivered
        self.pending: int | None = None

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        if self.holding:
            self.pending = signum
            return
        raise Terminated(signum)

    def hold(self) -> None:
        self.holding = True

    def release(self) -> None:
        """Stop holding, and raise :class:`Terminated` for a SIGTERM that arrived meanwhile."""
        self.holding = False
        if self.pending is not None:
            signum, self.pending = self.pending, None
            raise Terminated(signum)


@contextmanager
def sigterm_raises() -> Iterator[Sigterm]:
    """Turn SIGTERM into :class:`Terminated` (as SIGINT is KeyboardInterrupt), so cleanup runs.

    A SIGTERM still held at the end is delivered then, to the handler this replaced (by default
    it ends the process, as the signal would have).
    """
    sigterm = Sigterm()
    if threading.current_thread() is not threading.main_thread():
        yield sigterm  # only the main thread may set a handler; a caller in a thread cleans up as it can
        return
    previous = signal.signal(signal.SIGTERM, sigterm)
    try:
        yield sigterm
    finally:
        sigterm.hold()  # a SIGTERM now must not skip restoring the previous handler
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
        if sigterm.pending is not None:
            signal.raise_signal(sigterm.pending)


def write_file(name: str, write: Callable[[TextIO], T], *, databases: Sequence[str] = ()) -> T:
    """Write the file ``name`` with ``write(stream)`` (a UTF-8 text stream) and return what it returned.

    Bad targets (an empty name, one of the SQLite ``databases`` the command opened, see
    :func:`refuse_target`, a directory, a path that cannot be looked at) and write errors raise
    DalError; SIGTERM during the write raises :class:`Terminated` once the temporary file is gone.
    """
    return _write(name, _text, write, databases)


def write_bytes(name: str, data: bytes, *, databases: Sequence[str] = ()) -> None:
    """Write ``data`` to the file ``name``, whole or not at all, as :func:`write_file` writes text."""
    _write(name, _binary, lambda stream: stream.write(data), databases)


def refuse_target(name: str, databases: Sequence[str] = ()) -> None:
    """Raise DalError for an empty ``name``, and :class:`OutputIsStoreError` when it is one of the SQLite
    ``databases`` (absolute paths) or a file SQLite keeps beside one: the same file (device and inode)
    when both exist, so a symlink, a hard link or another spelling is caught, else the same resolved path."""
    if not name:
        raise DalError("-o names no file; give a file name (or leave -o out to write to stdout)")
    # SQLite keeps its side files beside the file the database's name resolves to: a symlink's are the
    # target's, so both spellings are checked
    for database in {spelling: None for path in databases for spelling in (path, os.path.realpath(path))}:
        for ending in SQLITE_FILES:
            if _same_file(name, database + ending):
                what = f"the {ending[1:]} file of " if ending else ""
                raise OutputIsStoreError(
                    f"cannot write {name!r}: it is {what}the SQLite database {database}, the command's "
                    "persistent store (--persistent): writing it would replace the store's data; name "
                    "another file")


def _same_file(name: str, other: str) -> bool:
    try:
        found, kept = os.stat(name), os.stat(other)
    except OSError:  # one of them is not there (yet), or cannot be looked at: compare where they lead
        return os.path.realpath(name) == os.path.realpath(other)
    return (found.st_dev, found.st_ino) == (kept.st_dev, kept.st_ino)


def _text(file: int | str) -> TextIO:
    return open(file, "w", encoding="utf-8")


def _binary(file: int | str) -> BinaryIO:
    return open(file, "wb")


def _write(name: str, opener: Callable[[int | str], S], write: Callable[[S], T],
           databases: Sequence[str]) -> T:
    refuse_target(name, databases)
    descriptor = _descriptor(name)
    if descriptor is not None:
        return _write_in_place(name, opener, write, descriptor)
    path, existing = _target(name)
    if path is None:
        return _write_in_place(name, opener, write, name)
    with sigterm_raises() as sigterm:
        sigterm.hold()  # until the temporary file is known, so a SIGTERM cannot leave it behind
        temporary, handle = _temporary(name, path, existing)
        stream = opener(handle)
        try:
            sigterm.release()
            with stream:
                result = write(stream)
                stream.flush()
                os.fsync(stream.fileno())  # complete on disk before it takes the target's name
            sigterm.hold()  # renamed, the file is written: a SIGTERM waits until this returns
            os.replace(temporary, path)
        except BaseException as exc:
            sigterm.hold()  # a SIGTERM now would skip the cleanup: it waits, as in the rename
            with suppress(OSError):  # closed already, unless the write failed before its end
                stream.close()
            temporary.unlink(missing_ok=True)
            if sigterm.pending is not None:  # held while the rename failed: nothing was written
                signum, sigterm.pending = sigterm.pending, None
                raise Terminated(signum) from exc
            if isinstance(exc, OSError):
                raise DalError(f"cannot write {name!r}: {exc.strerror or exc}") from exc
            raise
    return result


def _target(name: str) -> tuple[Path | None, os.stat_result | None]:
    """Return the regular file ``name`` names (symlinks followed) and its status, if it exists.

    ``None`` for the path: ``name`` is a stream (a FIFO, a device, a pipe), written in place by
    that name, since resolving ``/dev/fd/N`` gives a ``pipe:[...]`` that cannot be opened.
    Refuse what cannot be a file.
    """
    try:
        existing: os.stat_result | None = os.stat(name)
    except FileNotFoundError:
        existing = None  # a new file (or a dangling symlink's target): its directory is tried later
    except OSError as exc:  # not a directory on the way, a name too long, no permission, a loop
        raise DalError(f"cannot write {name!r}: {exc.strerror or exc}; choose a writable "
                       "directory") from exc
    if existing is not None and stat.S_ISDIR(existing.st_mode):
        raise DalError(f"cannot write {name!r}: it is a directory; name a file with -o")
    if existing is not None and not stat.S_ISREG(existing.st_mode):
        return None, existing
    try:
        return Path(name).resolve(), existing
    except (OSError, RuntimeError) as exc:  # a symlink loop
        raise DalError(f"cannot write {name!r}: {exc}; name another file with -o") from exc


def _temporary(name: str, path: Path, existing: os.stat_result | None) -> tuple[Path, int]:
    """Create the temporary file beside ``path``, with the mode the finished file is to have."""
    # a new file: the kernel applies the umask to 0o666; an existing one: private until it has its mode
    mode = 0o666 if existing is None else 0o600
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    for _ in range(ATTEMPTS):
        temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            handle = os.open(temporary, flags, mode)
        except FileExistsError:
            continue
        except OSError as exc:
            raise DalError(f"cannot write {name!r}: {exc.strerror or exc}; choose a writable "
                           "directory") from exc
        if existing is not None:
            try:
                _take_over(handle, existing)
            except OSError as exc:
                os.close(handle)
                temporary.unlink(missing_ok=True)
                raise DalError(f"cannot write {name!r}: {exc.strerror or exc}") from exc
        return temporary, handle
    raise DalError(f"cannot write {name!r}: no free temporary name beside it after {ATTEMPTS} tries")


def _take_over(handle: int, existing: os.stat_result) -> None:
    """Give the temporary file the owner and mode of the file it will replace."""
    with suppress(OSError):  # only root may give a file away; the mode is what matters
        os.fchown(handle, existing.st_uid, existing.st_gid)
    os.fchmod(handle, stat.S_IMODE(existing.st_mode))


def _descriptor(name: str) -> int | None:
    """Return what to write when ``name`` leads (through symlinks) to an open descriptor, else None.

    ``os.stat`` would follow ``/dev/stdout`` to the file the shell opened and have it replaced,
    and opening it by name would truncate what ``>>`` appends to: this process's own descriptor
    is duplicated (its offset and append mode shared, as the shell set them up); another
    process's is opened anew, to append. The descriptor returned is the caller's to close.
    """
    folder, base = os.path.realpath(os.path.dirname(os.path.abspath(name))), os.path.basename(name)
    for _ in range(MAX_LINKS):
        found = DESCRIPTORS.fullmatch(folder)
        if found is not None:
            if not base.isdigit():
                return None  # not a descriptor: let the usual checks say what it is
            own = found["pid"] in (None, str(os.getpid()))
            flags = os.O_WRONLY | os.O_APPEND | getattr(os, "O_CLOEXEC", 0)
            try:
                return os.dup(int(base)) if own else os.open(os.path.join(folder, base), flags)
            except OSError as exc:
                what = f"descriptor {base}" if own else "it"
                raise DalError(f"cannot write {name!r}: {what} is not open for writing "
                               f"({exc.strerror or exc}); name a file with -o") from exc
        try:
            link = os.readlink(os.path.join(folder, base))
        except OSError:
            return None  # no symlink (or nothing there): the usual checks follow
        target = os.path.join(folder, link)
        folder, base = os.path.realpath(os.path.dirname(target)), os.path.basename(target)
    return None


def _write_in_place(name: str, opener: Callable[[int | str], S], write: Callable[[S], T],
                    target: int | str) -> T:
    """Write ``target`` (a name, or a descriptor this closes) where it stands, never replacing it."""
    try:
        stream = opener(target)
        with stream:  # not `as`: that would be typed IO[Any], not the stream the opener gives
            return write(stream)
    except OSError as exc:
        raise DalError(f"cannot write {name!r}: {exc.strerror or exc}") from exc
