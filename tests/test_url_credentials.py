"""Credentials and options of the URLs that take them: one way of giving credentials at a time, and
an unknown option's error naming every option the scheme takes."""

from __future__ import annotations

import pytest

from dal.backends import open_persistent, open_volatile
from dal.backends.url import parse_url
from dal.exceptions import ConfigurationError


@pytest.mark.parametrize(("url", "twice"), [
    ("redis://alice:pw1@h:1/0?user=bob", "user"), ("redis://alice:pw1@h:1/0?password=pw2", "password"),
    ("redis://u:@h:1/0?password=pw2", "password"), ("etcd://alice:pw1@h:1?user=alice&password=pw1",
                                                   "user and the password")])
def test_a_credential_given_both_before_the_host_and_as_an_option_is_refused(url: str, twice: str) -> None:
    """The query's would win silently (a login as another user): which is meant is not known."""
    with pytest.raises(ConfigurationError, match=rf"gives the {twice} both before its host .* each one way"
                       ) as caught:
        parse_url(url)
    assert "pw1" not in str(caught.value) and "pw2" not in str(caught.value)


def test_credentials_given_one_way_each_are_the_same_url() -> None:
    """Each part given once, whichever way (a user before the host and its password as an option too, as
    such URLs were written before parts given twice were refused)."""
    assert parse_url("etcd://h:1?user=alice&password=pw") == parse_url("etcd://alice:pw@h:1")
    assert parse_url("redis://h:1/0?user=u&password=pw") == parse_url("redis://u:pw@h:1/0")
    assert parse_url("etcd://alice@h:1?password=pw") == parse_url("etcd://alice:pw@h:1")
    assert parse_url("redis://:pw@h:1?user=u") == parse_url("redis://u:pw@h:1")
    assert parse_url("redis://@h:1?password=pw").password == "pw"


@pytest.mark.parametrize(("url", "known"), [
    ("etcd://127.0.0.1:1?zz=1", "timeout, user, password, ca_cert, cert_key, cert_cert"),
    ("redis://127.0.0.1:1?zz=1", "timeout, user, password, ca_cert, cert_key, cert_cert"),
    ("rediss://127.0.0.1:1?zz=1", "timeout, user, password, ca_cert, cert_key, cert_cert")])
def test_an_unknown_option_names_every_option_the_store_takes(url: str, known: str) -> None:
    """``user`` and ``password`` are options too (``?user=&password=``)."""
    with pytest.raises(ConfigurationError, match=rf"unknown option\(s\) zz .*known options: {known}$"):
        open_persistent(url)


def test_an_unknown_option_of_the_redis_cache_names_hits_too() -> None:
    with pytest.raises(ConfigurationError,
                       match=r"known options: timeout, user, password, ca_cert, cert_key, cert_cert, hits$"):
        open_volatile("redis://127.0.0.1:1?hitz=1")
