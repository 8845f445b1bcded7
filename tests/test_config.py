"""Store URLs, ``configure()`` validation, and the per-process client cache."""

from __future__ import annotations

from pathlib import Path

import pytest

from dal import configure
from dal.backends import open_persistent, open_volatile, settings_digest
from dal.backends.url import parse_url
from dal.config import current
from dal.exceptions import ConfigurationError


def test_url_parts_and_both_credential_forms() -> None:
    inline = parse_url("etcd://alice:s3cret@10.0.0.1:2379,10.0.0.2?timeout=2")
    assert inline.hosts == (("10.0.0.1", 2379), ("10.0.0.2", None))
    assert (inline.user, inline.password, dict(inline.options)) == ("alice", "s3cret", {"timeout": "2"})
    options = parse_url("etcd://10.0.0.1:2379?user=alice&password=s3cret")
    assert (options.user, options.password) == ("alice", "s3cret")
    assert options.options == {}


@pytest.mark.parametrize("url", ["etcd://alice:s3cret@h:2379", "etcd://h:2379?user=alice&password=s3cret"])
def test_password_never_in_repr_or_str(url: str) -> None:
    parsed = parse_url(url)
    assert "s3cret" not in repr(parsed) and "s3cret" not in str(parsed)
    assert "***" in str(parsed)


def test_sqlite_paths(tmp_path: Path) -> None:
    assert parse_url("sqlite:///relative/dal.db").path == "/relative/dal.db"
    assert parse_url(f"sqlite:///{tmp_path}/dal.db").path == f"/{tmp_path}/dal.db"


@pytest.mark.parametrize(("persistent", "volatile", "fragment"), [
    ("nosuch://x", None, "known: etcd://, memory://, sqlite://"),
    ("memcached://127.0.0.1:11211", None, "memcached:// is a volatile store"),
    (None, "sqlite:///x.db", "sqlite:// is a persistent store"),
    ("not a url", None, "is not a store URL"),
    ("sqlite:///x.db?bogus=1", None, "known options"),
    ("sqlite:///x.db?timeout=soon", None, "timeout='soon'"),
    (None, "memory://?max_size=big", "max_size"),
    ("etcd://127.0.0.1:99999", None, "port"),
])
def test_configure_rejects_bad_input_saying_how_to_fix_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, persistent: str | None, volatile: str | None,
        fragment: str) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigurationError) as caught:
        configure(persistent, volatile)
    assert fragment in str(caught.value)


def test_password_not_in_configuration_errors() -> None:
    with pytest.raises(ConfigurationError) as caught:
        configure("etcd://alice:s3cret@127.0.0.1:2379?bogus=1")
    assert "s3cret" not in str(caught.value)


def test_environment_fallbacks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DAL_PERSISTENT_URL", f"sqlite:///{tmp_path}/env.sqlite3")
    monkeypatch.setenv("DAL_VOLATILE_URL", "memory://envcache")
    monkeypatch.setenv("DAL_NAMESPACE", "fromenv")
    context = configure()
    assert context.namespace == "fromenv"
    assert context.persistent_url.path == f"/{tmp_path}/env.sqlite3"
    assert current() is context


def test_embedded_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DAL_PERSISTENT_URL", "DAL_VOLATILE_URL", "DAL_NAMESPACE", "DAL_HMAC_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    context = configure()
    schemes = (context.persistent.scheme, context.volatile.scheme, context.namespace)
    assert schemes == ("sqlite", "memory", "dal")
    assert str(context.persistent_url) == "sqlite:///dal.sqlite3"


def test_short_hmac_key_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="at least 16 bytes"):
        configure("memory://", "memory://", hmac_key="short")


def test_clients_are_cached_by_keyed_hash_of_all_settings(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/a.sqlite3"
    assert open_persistent(url) is open_persistent(url)
    assert open_persistent(url) is not open_persistent(url + "?timeout=3")
    assert open_volatile("memory://one") is not open_volatile("memory://two")
    first = settings_digest("persistent", parse_url("etcd://alice:one@h:2379"))
    second = settings_digest("persistent", parse_url("etcd://alice:two@h:2379"))
    assert first != second, "a changed password must give a new client"
    assert "one" not in first and len(first) == 64
