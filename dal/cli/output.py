"""Write a command's output file (``-o FILE``) whole or not at all, as the file it replaces was.

A regular file (or a new one) is written beside its target under a temporary name and renamed
over it once complete, so a failed or interrupted write leaves the target as it was and no
partial file behind; a symlink is followed (its target is replaced, the link stays); the new
file keeps the mode (and, where allowed, the owner) of the one it replaces, and a new file gets
``0o666`` less the umask, as a shell redirection would. A target that is no regular file (a
FIFO, a device, a pipe named ``/dev/fd/N`` or ``/dev/stdout``) is a stream someone reads: it is
written in place, by the name given, never replaced.

SIGTERM while a file is written raises :class:`Terminated` once the temporary file is gone;
from the rename on the file is written, and a SIGTERM is held and delivered once the write is
done, so it never reports as unwritten a file that was.
"""

from __future__ import annotations

import os
import secrets
import signal
import stat
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from types import FrameType
from typing import IO, Any, BinaryIO, TextIO, TypeVar

from dal.exceptions import DalError

T = TypeVar("T")
#: the stream a write is given: text or bytes
S = TypeVar("S", bound=IO[Any])
#: attempts at a temporary name nobody holds
ATTEMPTS = 100


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


def write_file(name: str, write: Callable[[TextIO], T]) -> T:
    """Write the file ``name`` with ``write(stream)`` (a UTF-8 text stream) and return what it returned.

    Bad targets (an empty name, a directory, a path that cannot be looked at) and write errors
    raise DalError; SIGTERM during the write raises :class:`Terminated` once the temporary file
    is gone.
    """
    return _write(name, _text, write)


def write_bytes(name: str, data: bytes) -> None:
    """Write ``data`` to the file ``name``, whole or not at all, as :func:`write_file` writes text."""
    _write(name, _binary, lambda stream: stream.write(data))


def _text(file: int | str) -> TextIO:
    return open(file, "w", encoding="utf-8")


def _binary(file: int | str) -> BinaryIO:
    return open(file, "wb")


def _write(name: str, opener: Callable[[int | str], S], write: Callable[[S], T]) -> T:
    path, existing = _target(name)
    if path is None:
        return _write_in_place(name, opener, write)
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
    if not name:
        raise DalError("-o names no file; give a file name (or leave -o out to write to stdout)")
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


def _write_in_place(name: str, opener: Callable[[int | str], S], write: Callable[[S], T]) -> T:
    try:
        stream = opener(name)
        with stream:  # not `as`: that would be typed IO[Any], not the stream the opener gives
            return write(stream)
    except OSError as exc:
        raise DalError(f"cannot write {name!r}: {exc.strerror or exc}") from exc
