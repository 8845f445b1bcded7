"""etcd's keys as dal reads them: UTF-8 text, and the error naming a key another client wrote that is not."""

from __future__ import annotations

from typing import Any

from dal.backends.base import Entry
from dal.backends.keytext import bash_quoted, first_undecodable
from dal.exceptions import BackendError


def key_texts(where: str, kvs: Any) -> list[str]:
    """Return the keys of a range response's ``kvs`` as text (see :func:`not_utf8`)."""
    try:
        return [kv.key.decode() for kv in kvs]
    except UnicodeDecodeError:
        raise not_utf8(where, kvs) from None


def key_entries(where: str, kvs: Any) -> list[tuple[str, Entry]]:
    """Return the keys and entries of a range response's ``kvs`` (see :func:`not_utf8`)."""
    try:
        return [(kv.key.decode(), Entry(kv.value, kv.mod_revision)) for kv in kvs]
    except UnicodeDecodeError:
        raise not_utf8(where, kvs) from None


def not_utf8(where: str, kvs: Any) -> BackendError:
    """Return the error of a read that met a key that is not UTF-8 text, which another client wrote
    (dal writes text keys only): it names the key as bash reads it, and says to delete it."""
    shown = bash_quoted(first_undecodable(kv.key for kv in kvs))
    return BackendError(
        f"etcd at {where} holds the key {shown}, which is not UTF-8 text: another client wrote it (dal "
        "writes UTF-8 keys only), and dal cannot read the keys around it; delete it (in bash: etcdctl del "
        f"{shown}) or have its writer move it out of dal's namespace")
