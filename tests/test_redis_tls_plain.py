"""A ``rediss://`` URL naming a server that does not serve TLS: the handshake waits for an answer
that never comes, so the failure is a timeout, and its message names the likelier cause."""

from __future__ import annotations

import pytest

from dal.backends import open_persistent
from dal.exceptions import BackendError
from dal.testing.servers import RunningServer

pytestmark = pytest.mark.redis


def test_rediss_against_a_plain_server_suggests_redis_urls(redis_server: RunningServer) -> None:
    store = open_persistent(f"rediss://127.0.0.1:{redis_server.port}/1?timeout=0.3")
    with pytest.raises(BackendError, match=r"raise timeout, or the server does not serve TLS on this port "
                                           r"\(write redis://\)"):
        store.get("k")

