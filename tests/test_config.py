"""Store URLs, ``configure()`` validation, and the per-process client cache."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import at_once

from dal import config, configure
from dal.backends import open_persistent, open_volatile, settings_digest
from dal.backends.url import parse_url
from dal.config import Context, current
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
    ("nosuch://x", None, "known: etcd://, fakeredis://, memory://, redis://, rediss://, sqlite://"),
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


VARIABLES = ["DAL_PERSISTENT_URL", "DAL_VOLATILE_URL", "DAL_NAMESPACE", "DAL_HMAC_KEY"]


@pytest.mark.parametrize("variable", VARIABLES)
def test_a_variable_set_to_nothing_is_refused_not_taken_for_the_default(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, variable: str) -> None:
    """A deployment whose setting came out empty must not quietly open the embedded store, write into
    the default namespace (another application's, perhaps) or run with an unsigned cache."""
    monkeypatch.chdir(tmp_path)
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(variable, "")
    with pytest.raises(ConfigurationError, match=variable):
        configure()
    assert not (tmp_path / "dal.sqlite3").exists()


@pytest.mark.parametrize("argument", ["persistent", "volatile", "namespace", "hmac_key"])
@pytest.mark.parametrize("empty", ["", "  "])
def test_an_empty_argument_is_refused_not_taken_for_the_default(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, argument: str, empty: str) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DAL_NAMESPACE", raising=False)
    with pytest.raises(ConfigurationError, match=r"empty|at least 16 bytes|not a store URL"):
        configure(**{argument: empty})
    assert not (tmp_path / "dal.sqlite3").exists()


@pytest.mark.parametrize("name", ["a/b", "caf\udce9", "\ud800"])
def test_a_namespace_no_key_can_hold_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                name: str) -> None:
    """A lone surrogate is what os.environ makes of DAL_NAMESPACE bytes that are not UTF-8."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigurationError, match="namespace"):
        configure(namespace=name)
    assert configure(namespace="café ok").namespace == "café ok"


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


@pytest.mark.parametrize("key", [12345678901234567890, [1] * 20, "\ud800" * 20])
def test_a_signing_key_of_another_type_is_refused_at_configure(key: object) -> None:
    with pytest.raises(ConfigurationError, match="hmac_key"):
        configure("memory://", "memory://", hmac_key=key)  # type: ignore[arg-type]


def test_a_signing_key_from_the_environment_is_taken_as_its_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    """A key of random bytes need not be UTF-8: os.environ holds them surrogate-escaped."""
    monkeypatch.setenv("DAL_HMAC_KEY", os.fsdecode(b"\xff" * 20))
    assert configure("memory://", "memory://").hmac_key == b"\xff" * 20


def test_a_namespace_that_is_not_text_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="namespace must be text"):
        configure("memory://", "memory://", namespace=5)  # type: ignore[arg-type]


def test_clients_are_cached_by_keyed_hash_of_all_settings(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/a.sqlite3"
    assert open_persistent(url) is open_persistent(url)
    assert open_persistent(url) is not open_persistent(url + "?timeout=3")
    assert open_volatile("memory://one") is not open_volatile("memory://two")
    first = settings_digest("persistent", parse_url("etcd://alice:one@h:2379"))
    second = settings_digest("persistent", parse_url("etcd://alice:two@h:2379"))
    assert first != second, "a changed password must give a new client"
    assert "one" not in first and len(first) == 64
    alone = [settings_digest("persistent", parse_url(f"redis://:{word}@h:6379")) for word in ("a", "b")]
    assert alone[0] != alone[1], "a password without a user (Redis's AUTH) must count too"


# --- passwords never leak, whatever they contain --------------------------------------------


@pytest.mark.parametrize("url", [
    "etcd://root:s3cr/ET9@127.0.0.1:2379",        # '/' written as it is
    "etcd://root:s3cr?ET9@127.0.0.1:2379",        # '?'
    "etcd://root:s3cr/ET9@127.0.0.1:99999",
    "etcd://root:s3cr?ET9=1@127.0.0.1:2379",
    "etcd://root:s3cr@ET9/x@127.0.0.1:2379",       # '@' and '/'
    "etcd://root:s3cr#ET9@127.0.0.1:99999",       # '#' is an ordinary character: the port is wrong
    "etcd://root:s3crET9@127.0.0.1:2379?timeout",  # malformed options
    "etcd://root:s3crET9@127.0.0.1:2379?timeout=1&timeout=2",
    "etcd://root:s3crET9@127.0.0.1:2379?bogus=1",
    "etcd://root:s3crET9@127.0.0.1:2379/path",
    "etcd://127.0.0.1:2379?timeout=5;password=s3crET9",  # ';' is no separator: a bad timeout
    "etcd://127.0.0.1:2379?password=s3crET9&password=s3crET9",
    "e tcd://root:s3crET9@127.0.0.1:2379",
    "etcd:/root:s3crET9@127.0.0.1:2379",
    "memcached://root:s3crET9@127.0.0.1:11211",
    "sqlite://root:s3crET9@/x.db",
])
def test_no_error_shows_the_password(url: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        configure(url, "memory://")
    message = str(caught.value)
    assert "s3cr" not in message and "ET9" not in message, message


@pytest.mark.parametrize("url", ["etcd://root:s3cr/et@127.0.0.1:2379", "etcd://root:s3cr?et@127.0.0.1:2379",
                                 "etcd://127.0.0.1:2379?ca_cert=/certs/a@b.pem"])
def test_an_at_sign_after_the_host_part_says_to_percent_encode(url: str) -> None:
    with pytest.raises(ConfigurationError, match="percent-encode") as caught:
        parse_url(url)
    assert "%2F" in str(caught.value) and "%40" in str(caught.value)


@pytest.mark.parametrize(("written", "password"), [
    ("s3cr%2Fet", "s3cr/et"), ("s3cr%3Fet", "s3cr?et"), ("s3cr%23et", "s3cr#et"), ("s3cr#et", "s3cr#et"),
    ("s3cr%40et", "s3cr@et"), ("s3cr%25et", "s3cr%et"), ("s3:cr", "s3:cr"),
    ("s%2F%3F%23%40%25%3A", "s/?#@%:"),
])
def test_a_percent_encoded_password_is_read_exactly(written: str, password: str) -> None:
    inline = parse_url(f"etcd://root:{written}@127.0.0.1:2379,h2?timeout=2")
    assert (inline.user, inline.password) == ("root", password)
    assert inline.hosts == (("127.0.0.1", 2379), ("h2", None))
    assert dict(inline.options) == {"timeout": "2"}
    option = parse_url(f"etcd://127.0.0.1:2379?user=root&password={written.replace('#', '%23')}")
    assert option.password == password
    assert parse_url(inline.settings()) == inline  # the full form reads back the same
    for shown in (str(inline), repr(inline)):
        assert "s3" not in shown and "***" in shown


@pytest.mark.parametrize("url", [
    "sqlite:///home/u@corp/dal.db", "sqlite:///odd%25name%3F.db", "sqlite:///x.db?timeout=3&synchronous=FULL",
    "memory://a", "memcached://h1:1,h2:2?timeout=0.5", "etcd://us%3Aer:pw@h:1?ca_cert=/c%40x.pem",
])
def test_every_url_reads_back_from_its_full_form(url: str) -> None:
    parsed = parse_url(url)
    assert parse_url(parsed.settings()) == parsed


def test_an_at_sign_in_a_sqlite_path_is_a_path() -> None:
    assert parse_url("sqlite:///home/u@corp/dal.db").path == "/home/u@corp/dal.db"
    assert parse_url("etcd://h:1?ca_cert=/c%40x.pem").options["ca_cert"] == "/c@x.pem"


def test_an_option_value_that_could_hold_a_secret_is_masked() -> None:
    parsed = parse_url("etcd://127.0.0.1:2379?timeout=5;password=s3cret")
    assert "s3cret" not in str(parsed) and "s3cret" not in repr(parsed)
    with pytest.raises(ConfigurationError, match=r"option timeout='\*\*\*' in .* is not valid") as caught:
        configure("etcd://127.0.0.1:2379?timeout=5;password=s3cret", "memory://")
    assert "s3cret" not in str(caught.value)
    plain = parse_url("sqlite:///x.db?timeout=soon")
    assert str(plain) == "sqlite:///x.db?timeout=soon"  # a plain value is shown, as it helps


@pytest.mark.parametrize(("persistent", "volatile"), [
    ("memory://", "memcached://127.0.0.1:11211?password=s3cret"),
    ("memory://", "memory://?password=s3cret"),
    ("memory://?password=s3cret", "memory://"),
    ("sqlite:///x.db?password=s3cret", "memory://"),
    ("fakeredis://?password=s3cret", "memory://"),
])
def test_a_password_a_store_cannot_use_is_refused_not_dropped(persistent: str, volatile: str) -> None:
    """A password given with no user was parsed into the URL's password and then ignored: a user
    who thought it set one got an unauthenticated client."""
    with pytest.raises(ConfigurationError, match="no user, password"):
        configure(persistent, volatile)


def test_threads_meeting_the_first_use_share_one_context(monkeypatch: pytest.MonkeyPatch,
                                                         tmp_path: Path) -> None:
    """A pool's threads all reaching dal before anything configured it get the one context the first
    builds: each building its own would close the others' under them and lose their counts."""
    monkeypatch.setenv("DAL_PERSISTENT_URL", f"sqlite:///{tmp_path}/first.sqlite3")
    monkeypatch.setenv("DAL_VOLATILE_URL", "memory://")
    monkeypatch.setattr(config, "_context", None)
    built = []
    slow_configure = config.configure

    def configure_slowly(*args: Any, **kwargs: Any) -> Context:
        time.sleep(0.05)  # every thread is past the unlocked first look before the first is done
        built.append(slow_configure(*args, **kwargs))
        return built[-1]

    monkeypatch.setattr(config, "configure", configure_slowly)
    try:
        seen = at_once(16, current)
        assert len(built) == 1 and all(context is built[0] for context in seen)
    finally:
        for context in built:
            context.close()
        config._context = None


@pytest.mark.parametrize("url", ["redis://127.0.0.1:6379?Password=s3cret", "etcd://h:2379?passwd=s3cret&timeout=2",
                                 "redis://app@127.0.0.1:6379?pass=s3cret", "memcached://h:11211?secret=s3cret"])
def test_a_misspelled_option_never_shows_its_value(url: str) -> None:
    """An unknown option may be a misspelled password: refused by name, its value masked."""
    role = "volatile" if url.startswith("memcached") else "persistent"
    with pytest.raises(ConfigurationError, match="unknown option") as raised:
        configure(url, "memory://") if role == "persistent" else configure(None, url)
    assert "s3cret" not in str(raised.value) and "***" in str(raised.value)
