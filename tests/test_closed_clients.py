"""A client its owner closed is not handed out again: ``configure()`` (and ``open_persistent``,
``open_volatile``) open a new one, as the closed client's own error tells the caller to do."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from dal import configure
from dal.backends import open_persistent, open_volatile
from dal.backends.base import DeletePrefix, Put
from dal.exceptions import BackendError


@pytest.fixture(params=["sqlite", "etcd", "redis", "fakeredis"])
def persistent_url(request: pytest.FixtureRequest, tmp_path: Path, namespace: str) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'closed.sqlite3'}"
    if request.param == "fakeredis":
        return f"fakeredis://{namespace}"
    server: Any = request.getfixturevalue(f"{request.param}_server")
    return str(server.url)


def test_configure_after_the_store_was_closed_opens_it_again(persistent_url: str, namespace: str) -> None:
    context = configure(persistent_url, namespace=namespace)
    assert context.persistent.commit([], [Put(f"{namespace}/a", b"1")]).ok
    context.persistent.close()
    again = configure(persistent_url, namespace=namespace)  # a new client, or one that reconnects (Redis)
    try:
        entry = again.persistent.get(f"{namespace}/a")
        assert entry is not None and entry.value == b"1"
        assert open_persistent(persistent_url) is again.persistent
    finally:
        again.persistent.commit([], [DeletePrefix(f"{namespace}/")])


@pytest.mark.parametrize("kind", ["sqlite", "etcd"])
def test_a_closed_store_says_so_and_names_the_remedy_that_works(kind: str, tmp_path: Path,
                                                                request: pytest.FixtureRequest) -> None:
    url = (f"sqlite:///{tmp_path / 'closed.sqlite3'}" if kind == "sqlite"
           else str(request.getfixturevalue("etcd_server").url))
    store = open_persistent(url)
    store.close()
    with pytest.raises(BackendError, match="closed"):
        store.get("k")
    assert open_persistent(url) is not store


@pytest.mark.parametrize("kind", ["memcached", "redis"])
def test_a_closed_cache_is_usable_or_replaced(kind: str, namespace: str,
                                              request: pytest.FixtureRequest) -> None:
    url = str(request.getfixturevalue(f"{kind}_server").url)
    cache = open_volatile(url)
    cache.close()
    again = open_volatile(url)
    assert again.set(f"{namespace}/k", b"v", 60) and again.get(f"{namespace}/k") == b"v"
