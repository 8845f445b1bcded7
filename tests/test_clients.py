"""The client cache of mirrored hybrids: one client per settings, keyed by an HMAC, thread-safe."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import subprocess
import sys
import threading
import time
from typing import Any

import pytest

from dal.clients import ClientCache, settings_key
from dal.exceptions import ConfigurationError, DalError


class Client:
    """A stand-in remote API client: counts how many are built and closed."""

    built = itertools.count()

    def __init__(self, **settings: Any) -> None:
        self.settings = settings
        self.serial = next(Client.built)
        self.closed = False

    def close(self) -> None:
        self.closed = True


SETTINGS = {"host": "ganeti.example", "port": 5080, "user": "admin", "password": "s3cret-pa55"}


def test_one_client_per_settings() -> None:
    cache = ClientCache(Client)
    first = cache.get(SETTINGS)
    assert isinstance(first, Client) and first.settings == SETTINGS
    assert cache.get(dict(SETTINGS)) is first
    # the order of the settings does not matter: the key is of their canonical JSON
    assert cache.get(dict(reversed(list(SETTINGS.items())))) is first
    assert len(cache) == 1 and SETTINGS in cache


def test_a_changed_setting_gets_a_new_client() -> None:
    cache = ClientCache(Client)
    first = cache.get(SETTINGS)
    second = cache.get({**SETTINGS, "password": "new"})
    assert second is not first and second.settings["password"] == "new"
    assert not first.closed  # without an owner, nobody said the old one is done with
    assert len(cache) == 2


def test_an_owner_s_previous_client_is_closed_and_dropped() -> None:
    cache = ClientCache(Client)
    old = cache.get(SETTINGS, owner="cluster-1")
    assert cache.get(SETTINGS, owner="cluster-1") is old and not old.closed
    new = cache.get({**SETTINGS, "password": "rotated"}, owner="cluster-1")
    assert new is not old
    assert old.closed
    assert SETTINGS not in cache and len(cache) == 1
    # the same settings again build a fresh client, not the closed one
    again = cache.get(SETTINGS, owner="cluster-1")
    assert again is not old and not again.closed and new.closed


def test_a_client_two_owners_share_stays_open_while_one_moves_on() -> None:
    cache = ClientCache(Client)
    shared = cache.get(SETTINGS, owner="a")
    assert cache.get(SETTINGS, owner="b") is shared
    cache.get({**SETTINGS, "port": 5081}, owner="a")
    assert not shared.closed and SETTINGS in cache
    cache.drop("b")
    assert shared.closed and SETTINGS not in cache


def test_a_client_also_handed_out_without_an_owner_stays_until_clear() -> None:
    cache = ClientCache(Client)
    shared = cache.get(SETTINGS)  # a caller without an owner (a report job, say) holds it
    assert cache.get(SETTINGS, owner="cluster-1") is shared  # the cluster's loader is given the same
    cache.get({**SETTINGS, "password": "rotated"}, owner="cluster-1")  # the cluster's password rotates
    assert not shared.closed and cache.get(SETTINGS) is shared  # its owner-less caller still uses it
    assert cache.get(SETTINGS, owner="cluster-2") is shared
    cache.drop("cluster-2")
    assert not shared.closed and SETTINGS in cache
    cache.clear()
    assert shared.closed and len(cache) == 0


def test_a_client_without_close_is_dropped_quietly() -> None:
    cache: ClientCache[object] = ClientCache(lambda **settings: object())
    first = cache.get({"host": "a"}, owner=1)
    assert cache.get({"host": "b"}, owner=1) is not first
    assert len(cache) == 1


def test_racing_threads_build_one_client() -> None:
    builds = []
    gate = threading.Barrier(16)

    def slow_factory(**settings: Any) -> Client:
        builds.append(settings)
        time.sleep(0.05)  # a login: the others arrive while it runs
        return Client(**settings)

    cache = ClientCache(slow_factory)
    got: list[Client] = []
    lock = threading.Lock()

    def get() -> None:
        gate.wait(timeout=10)
        client = cache.get(SETTINGS)
        with lock:
            got.append(client)

    threads = [threading.Thread(target=get) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert len(got) == 16
    assert len(builds) == 1
    assert len({id(client) for client in got}) == 1


def test_a_failing_factory_caches_nothing() -> None:
    attempts = []

    def flaky(**settings: Any) -> Client:
        attempts.append(1)
        if len(attempts) == 1:
            raise ConnectionError("remote down")
        return Client(**settings)

    cache = ClientCache(flaky)
    with pytest.raises(ConnectionError):
        cache.get(SETTINGS)
    assert len(cache) == 0
    assert isinstance(cache.get(SETTINGS), Client) and len(attempts) == 2


def test_the_key_is_an_hmac_that_hides_the_password() -> None:
    key = settings_key(SETTINGS)
    assert len(key) == 64 and int(key, 16) >= 0
    assert "s3cret" not in key
    canonical = json.dumps(SETTINGS, sort_keys=True, separators=(",", ":")).encode()
    # not a bare hash anyone could recompute (and so test guessed passwords against)
    assert key != hashlib.sha256(canonical).hexdigest()
    assert key != hashlib.sha1(b"admins3cret-pa55ganeti.example5080").hexdigest()
    assert settings_key(dict(SETTINGS)) == key


def test_no_separator_ambiguity() -> None:
    # Ganeti Web Manager's user+password+host+port would make these two one key
    assert settings_key({"user": "ab", "password": "c"}) != settings_key({"user": "a", "password": "bc"})
    assert settings_key({"a": 1}) != settings_key({"a": "1"})
    assert settings_key({"a": True}) != settings_key({"a": 1})
    assert settings_key({"a": None}) != settings_key({})
    assert settings_key({"a": [1, 2]}) != settings_key({"a": [12]})


def test_the_secret_is_per_process() -> None:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child draws no new secret (fork copies it), but a new process does
        os.close(read)
        os.write(write, settings_key(SETTINGS).encode())
        os._exit(0)
    os.close(write)
    child_key = os.read(read, 100).decode()
    os.close(read)
    os.waitpid(pid, 0)
    assert child_key == settings_key(SETTINGS)
    other = subprocess.run([sys.executable, "-c", "import json, sys; from dal.clients import settings_key; "
                            f"print(settings_key(json.loads({json.dumps(json.dumps(SETTINGS))})))"],
                           capture_output=True, text=True, check=True, timeout=60).stdout.strip()
    assert len(other) == 64 and other != settings_key(SETTINGS)


def test_a_forked_child_builds_its_own_clients() -> None:
    cache = ClientCache(Client)
    parent = cache.get(SETTINGS)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        child = cache.get(SETTINGS)
        os.write(write, b"own" if child is not parent and not parent.closed else b"shared")
        os._exit(0)
    os.close(write)
    answer = os.read(read, 10)
    os.close(read)
    os.waitpid(pid, 0)
    assert answer == b"own"
    assert cache.get(SETTINGS) is parent and not parent.closed


@pytest.mark.parametrize("bad", [{"host": {1, 2}}, {"host": object()}, {"ratio": float("nan")},
                                 {"nested": {1: "x"}}, {"when": b"bytes"}])
def test_a_setting_that_is_not_json_is_a_typed_error(bad: dict[str, Any]) -> None:
    cache = ClientCache(Client)
    with pytest.raises(ConfigurationError) as caught:
        cache.get(bad)
    assert isinstance(caught.value, DalError)
    assert len(cache) == 0


def test_settings_must_be_a_mapping() -> None:
    with pytest.raises(ConfigurationError):
        ClientCache(Client).get([("host", "a")])  # type: ignore[arg-type]


def test_clear_closes_every_client() -> None:
    cache = ClientCache(Client)
    clients = [cache.get({"host": name}) for name in "abc"]
    cache.clear()
    assert all(client.closed for client in clients) and len(cache) == 0
