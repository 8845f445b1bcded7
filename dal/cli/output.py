"""Write a command's output file (``-o FILE``) whole or not at all, as the file it replaces was.

A regular file (or a new one) is written beside its target under a temporary name and renamed
over it once complete, so a failed or interrupted write leaves the target as it was and no
partial file behind; a symlink is followed (its target is replaced, the link stays); the new
file keeps the mode (and, where allowed, the owner) of the one it replaces, and a new file gets
``0o666`` less the umask, as a shell redirection would. A target that is no regular file (a
FIFO, a device) is a stream someone reads: it is written in place, never replaced.
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
from typing import TextIO, TypeVar

from dal.exceptions import DalError

T = TypeVar("T")
#: attempts at a temporary name nobody holds
ATTEMPTS = 100


class Terminated(BaseException):
    """SIGTERM arrived while a file was being written; the temporary file is removed."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"terminated by signal {signum}")
        self.signum = signum


def write_file(name: str, write: Callable[[TextIO], T]) -> T:
    """Write the file ``name`` with ``write(stream)`` and return what it returned.

    Bad targets (an empty name, a directory) and write errors raise DalError; SIGTERM during
    the write raises :class:`Terminated` once the temporary file is gone.
    """
    path = _target(name)
    if path.exists() and not path.is_file():
        return _write_in_place(name, path, write)
    temporary, handle = _temporary(name, path)
    try:
        with _sigterm_raises():
            with os.fdopen(handle, "w", encoding="utf-8") as stream:
                result = write(stream)
                stream.flush()
                os.fsync(stream.fileno())  # complete on disk before it takes the target's name
            os.replace(temporary, path)
    except BaseException as exc:
        temporary.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise DalError(f"cannot write {name!r}: {exc.strerror or exc}") from exc
        raise
    return result


def _target(name: str) -> Path:
    """Return the file ``name`` names, symlinks followed; refuse what cannot be one."""
    if not name:
        raise DalError("-o names no file; give a file name (or leave -o out to write to stdout)")
    try:
        path = Path(name).resolve()
    except (OSError, RuntimeError) as exc:  # a symlink loop
        raise DalError(f"cannot write {name!r}: {exc}; name another file with -o") from exc
    if path.is_dir():
        raise DalError(f"cannot write {name!r}: it is a directory; name a file with -o")
    return path


def _temporary(name: str, path: Path) -> tuple[Path, int]:
    """Create the temporary file beside ``path``, with the mode the finished file is to have."""
    try:
        existing = os.stat(path)
    except FileNotFoundError:
        existing = None
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
            _take_over(handle, existing)
        return temporary, handle
    raise DalError(f"cannot write {name!r}: no free temporary name beside it after {ATTEMPTS} tries")


def _take_over(handle: int, existing: os.stat_result) -> None:
    """Give the temporary file the owner and mode of the file it will replace."""
    with suppress(OSError):  # only root may give a file away; the mode is what matters
        os.fchown(handle, existing.st_uid, existing.st_gid)
    os.fchmod(handle, stat.S_IMODE(existing.st_mode))


def _write_in_place(name: str, path: Path, write: Callable[[TextIO], T]) -> T:
    try:
        with open(path, "w", encoding="utf-8") as stream:
            return write(stream)
    except OSError as exc:
        raise DalError(f"cannot write {name!r}: {exc.strerror or exc}") from exc


@contextmanager
def _sigterm_raises() -> Iterator[None]:
    """Turn SIGTERM into :class:`Terminated` (as SIGINT is KeyboardInterrupt), so cleanup runs."""
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may set a handler; a caller in a thread cleans up as it can
        return

    def stop(signum: int, frame: FrameType | None) -> None:
        raise Terminated(signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
