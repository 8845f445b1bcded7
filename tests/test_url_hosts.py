"""Hosts, query values and namespaces ``configure()`` takes, or refuses before any store is opened."""

from __future__ import annotations

import getpass
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dal import configure
from dal.backends import open_persistent, open_volatile
from dal.backends.base import Put
from dal.backends.url import parse_url
from dal.exceptions import BackendError, ConfigurationError
from dal.testing.servers import ServerUnavailable, find_binary, free_port


@pytest.mark.parametrize(("name", "shown"), [
    ("\0leadership", "'\\x00' (U+0000)"), ("a\tb", "'\\t' (U+0009)"), ("a\nb", "'\\n' (U+000A)"),
    ("a\x7fb", "'\\x7f' (U+007F)"), ("a\x85b", "'\\x85' (U+0085)"), ("a/b", "'/' (U+002F)"),
])
def test_a_namespace_with_a_control_character_is_refused_naming_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, shown: str) -> None:
    """A NUL starts the keys outside every namespace (etcd's leadership leases): a namespace
    ``'\\0leadership'`` would scan them, and clearing it would delete them."""
    monkeypatch.chdir(tmp_path)
    for given in (name, None) if "\0" not in name else (name,):  # no variable holds a NUL
        if given is None:
            monkeypatch.setenv("DAL_NAMESPACE", name)
        with pytest.raises(ConfigurationError, match="control characters") as caught:
            configure("memory://", "memory://", namespace=given)
        assert shown in str(caught.value) and "leave them out" in str(caught.value)


def test_the_refusal_suggests_the_namespace_without_the_bad_characters() -> None:
    with pytest.raises(ConfigurationError, match=r"e\.g\. 'leadership'"):
        configure("memory://", "memory://", namespace="\0leader\nship")


def test_a_namespace_of_printable_text_is_taken() -> None:
    assert configure("memory://", "memory://", namespace="café ok-1.2_x").namespace == "café ok-1.2_x"


@pytest.mark.parametrize(("query", "value"), [
    ("a+b%26c", "a+b&c"), ("a+b", "a+b"), ("a%2Bb", "a+b"), ("a%20b", "a b"), ("a=b#c?d/e", "a=b#c?d/e"),
    ("%25%26%40", "%&@"),
])
def test_a_query_value_is_percent_decoded_and_nothing_else(query: str, value: str) -> None:
    """``+`` is a plus: parse_qsl's form rule made ``?password=a+b`` authenticate as ``a b``."""
    parsed = parse_url(f"redis://h:1?user={query}&password={query}&timeout={query}")
    assert (parsed.user, parsed.password, parsed.options["timeout"]) == (value, value, value)
    assert parse_url(parsed.settings()) == parsed


def test_a_password_with_a_plus_reads_the_same_in_both_forms() -> None:
    written = ("redis://:a+b%26c@h:1", "redis://h:1?password=a%2Bb%26c", "redis://h:1?password=a+b%26c")
    assert {parse_url(url).password for url in written} == {"a+b&c"}


@pytest.mark.parametrize("query", ["password", "a=1&&b=2", "=1", "a=1&"])
def test_malformed_options_are_refused(query: str) -> None:
    with pytest.raises(ConfigurationError, match="malformed"):
        parse_url(f"redis://h:1?{query}")


@pytest.mark.parametrize(("persistent", "volatile", "fragment"), [
    ("etcd://::1", None, "an IPv6 address goes in brackets"),
    ("etcd://::1:2379", None, "an IPv6 address goes in brackets"),
    (None, "memcached://[::1:1", "not a bracketed IPv6 address"),
    (None, "memcached://::1]:1", "an IPv6 address goes in brackets"),
    ("etcd://[::1]x", None, "not a bracketed IPv6 address"),
    ("etcd://[nohost]:1", None, "not a bracketed IPv6 address"),
    ("etcd://:2379", None, "names no host before :2379"),
    ("redis://:6379", None, "names no host before :6379"),
    (None, "memcached://:11211", "names no host before :11211"),
    ("etcd://h:1,,h:2", None, "names no host"),
    ("etcd://h:1,", None, "names no host"),
    ("memory://a:5", None, "takes no user, password, port or path"),
    (None, "memory://a:5", "takes no user, password, port or path"),
    # names the IDNA codec of Python's sockets refuses (a bare UnicodeError at the first connection)
    ("etcd://cache..example:2379", None, "not a valid host name"),
    ("redis://cache..example:6379", None, "not a valid host name"),
    (None, "redis://cache..example:6379", "not a valid host name"),
    (None, f"memcached://{'x' * 64}.example:11211", "not a valid host name"),
])
def test_a_host_the_clients_cannot_reach_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, persistent: str | None, volatile: str | None,
        fragment: str) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigurationError, match=fragment.replace("[", r"\[")):
        configure(persistent or "memory://", volatile or "memory://")


def test_the_refusal_of_a_host_masks_the_password() -> None:
    with pytest.raises(ConfigurationError) as caught:
        configure("redis://:s3cret@:6379", "memory://")
    assert "s3cret" not in str(caught.value) and "***" in str(caught.value)


def test_a_bracketed_ipv6_address_is_held_without_its_brackets() -> None:
    parsed = parse_url("etcd://u:p@[::1]:2379,[fd00::2],h:1")
    assert parsed.hosts == (("::1", 2379), ("fd00::2", None), ("h", 1))
    assert str(parsed) == "etcd://u:***@[::1]:2379,[fd00::2],h:1"
    assert parse_url(parsed.settings()) == parsed


def test_etcd_is_dialled_at_a_bracketed_ipv6_address(tmp_path: Path) -> None:
    """gRPC reads its target as host:port: without brackets it fails to resolve ``::1:port``."""
    store = open_persistent(f"etcd://[::1]:{free_port()}?timeout=0.3")
    with pytest.raises(BackendError) as caught:
        store.get("k")
    assert "[::1]:" in str(caught.value) and "Misformatted" not in str(caught.value)


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.fixture
def ipv6_servers(tmp_path: Path) -> Iterator[dict[str, int]]:
    """A redis-server and a memcached listening on ::1 alone, by port."""
    if not _ipv6_loopback():
        pytest.skip("no IPv6 loopback address on this machine")
    try:
        redis, memcached = (find_binary("redis-server", "DAL_REDIS_BIN", "redis-server"),
                            find_binary("memcached", "DAL_MEMCACHED_BIN", "memcached"))
    except ServerUnavailable as exc:
        pytest.skip(str(exc))
    ports = {"redis": free_port(), "memcached": free_port()}
    commands = ([redis, "--bind", "::1", "--port", str(ports["redis"]), "--save", "", "--appendonly", "no",
                 "--dir", str(tmp_path)],
                [memcached, "-u", getpass.getuser(), "-l", "[::1]", "-p", str(ports["memcached"]), "-U", "0"])
    processes = [subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                 for command in commands]
    try:
        for port in ports.values():
            deadline = time.monotonic() + 10
            while True:
                try:
                    socket.create_connection(("::1", port), timeout=1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
        yield ports
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=10)


def test_redis_and_memcached_are_reached_at_a_bracketed_ipv6_address(ipv6_servers: dict[str, int]) -> None:
    """Given ``[::1]`` with its brackets, redis-py and pymemcache failed: 'Name or service not known'."""
    redis_url = f"redis://[::1]:{ipv6_servers['redis']}"
    memcached_url = f"memcached://[::1]:{ipv6_servers['memcached']}"
    store = open_persistent(redis_url)
    assert store.commit([], [Put("k", b"v")]).ok and store.get("k") is not None
    for cache in (open_volatile(redis_url), open_volatile(memcached_url)):  # memcached: pymemcache, and
        assert cache.set("k", b"v", 10)                                     # dal's own client for a get
        assert cache.get("k") == b"v" and cache.get_many(["k"]) == {"k": b"v"}


@pytest.mark.parametrize("url", [
    "memory://?max_size=%E0%A5%A7_0", "memory://?max_size=%201", "memory://?max_size=1_0",
    "memcached://127.0.0.1:11211?timeout=%E0%A5%A7", "memcached://127.0.0.1:11211?dead_timeout=1%20",
    "redis://127.0.0.1:6379?timeout=1_0", "etcd://127.0.0.1:2379?timeout=%E0%A5%A8",
    "sqlite:///x.sqlite3?timeout=%203",
])
def test_a_number_option_is_written_plainly_in_ascii(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     url: str) -> None:
    """float() and int() take '१' (a Devanagari one), ' 3' and '1_0': no one means those as a timeout."""
    monkeypatch.chdir(tmp_path)
    opener = open_volatile if url.startswith(("memory", "memcached")) else open_persistent
    with pytest.raises(ConfigurationError, match=r"plainly in ASCII .*without spaces or '_'"):
        opener(url)


def test_a_port_is_written_in_ascii_digits() -> None:
    with pytest.raises(ConfigurationError, match=r"port '१२३' .* is not a number from 1 to 65535"):
        parse_url("memcached://127.0.0.1:१२३")
