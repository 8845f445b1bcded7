"""Where a SQLite database may be: checked as a process first opens it, before SQLite touches it.

SQLite's own messages ("unable to open database file") say neither what is wrong nor how to fix it,
and some settings it never refuses: a file with two hard links opens through each as if it were two
databases (see :func:`check_location`).
"""

from __future__ import annotations

import os
import shlex

from dal.exceptions import ConfigurationError


def _file_in_the_way(directory: str) -> str | None:
    """Return the nearest existing ancestor of ``directory`` (itself included) when it is not a
    directory (a regular file, say), else None."""
    while directory and not os.path.exists(directory):
        parent = os.path.dirname(directory)
        if parent == directory:
            return None
        directory = parent
    return directory if directory and not os.path.isdir(directory) else None


def _links(path: str) -> int:
    """Return how many names (hard links) the file at ``path`` has; 0 when there is none."""
    try:
        return os.stat(path).st_nlink
    except OSError:
        return 0


def check_location(path: str, mode: str, *, one_name: bool = True) -> None:
    """Refuse a database path naming a directory, or whose directory (or, with ``mode=rw``, whose
    file) does not exist, or, when ``one_name``, a database file with more than one hard link.

    SQLite names a database's ``-wal`` and ``-shm`` files, which hold its locks and its latest
    commits, after the path it was opened by: processes opening one file through two hard links would
    neither see each other's commits nor wait for each other's locks, and lose writes (SQLite's "How
    To Corrupt An SQLite Database File" says as much). A symlink has no such effect: SQLite follows it.
    A forked child reopening the file its parent opened through ``path`` passes ``one_name=False``:
    a link made since splits no one that way.
    """
    directory = os.path.dirname(path)
    if os.path.isdir(path):
        raise ConfigurationError(
            f"sqlite database {path} is a directory, not a file; name a database file, "
            f"one in it for instance (sqlite:///{os.path.join(path, 'dal.sqlite3')})")
    blocking = _file_in_the_way(directory)
    if blocking is not None:
        raise ConfigurationError(
            f"sqlite database {path} cannot be in {directory}: {blocking} is a file, not a "
            "directory; correct the path (dal never creates directories, nor removes files)")
    if not os.path.isdir(directory):
        raise ConfigurationError(
            f"the directory {directory} of sqlite database {path} does not exist; create it "
            f"(mkdir -p {shlex.quote(directory)}) or correct the path: dal never creates directories")
    links = _links(path)
    if mode == "rw" and not links:
        raise ConfigurationError(
            f"sqlite database {path} does not exist (opened with mode=rw, which never "
            "creates one); correct the path, or create the database first (without mode=rw: "
            "dal load, dal migrate or dal demo create a missing file)")
    if links > 1 and one_name:
        new = path + ".new"
        # SQLite's backup reads through the -wal, which a plain cp of the file alone misses
        copy = f"sqlite3 {shlex.quote(path)} " + shlex.quote('.backup "' + new + '"')
        raise ConfigurationError(
            f"sqlite database {path} has {links} hard links: SQLite names the -wal and -shm files, "
            "which hold its locks and latest commits, after the path a process opens, so processes "
            "reaching the file through different links would not see each other's commits and would "
            "lose writes; give the file one name and reach it by that name only, or through "
            "symlinks to it: remove its other links, or make it a copy of its own while no process "
            f"has it open ({copy} && mv {shlex.quote(new)} {shlex.quote(path)}; a plain cp onto "
            "a link fails, the same file, and misses commits still in its -wal)")
