"""How a store URL's text decodes: strictly, so that two URLs never name one store, and a URL that
cannot be read is a ConfigurationError (``dal`` exits 2) that never shows a password.

- A byte that is not UTF-8 (from the environment, held as a lone surrogate) in a user name, a password,
  an option's name or value is refused; in a SQLite path it is a file name's byte, kept as it is.
- A percent-escape that spells no UTF-8 (``%ff``, which ``unquote()`` read as U+FFFD, as it did ``%fe``)
  and a ``%`` that starts no escape are refused, saying to write ``%`` as ``%25``.
- Any URL's full form reads back as that URL, a path holding ``@``, ``%`` or ``?`` too, and a password
  without a user (``redis://:pw@host``: no user, not an empty one).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from dal import configure
from dal.backends.url import parse_url
from dal.exceptions import ConfigurationError


@pytest.mark.parametrize(("persistent", "volatile"), [
    ("memory://", "memory://?max_size=\udcff"),
    ("memory://", "memory://?x\udcff=1"),
    ("fakeredis://u\udcff@", "memory://"),
    ("fakeredis://?password=s3cr\udcff", "memory://"),
    ("redis://127.0.0.1:1?password=s3cr\udcff", "memory://"),
    ("etcd://root:s3cr\udcff@127.0.0.1:1", "memory://"),
], ids=["option-value", "option-name", "user", "password-option", "redis-password", "etcd-password"])
def test_a_byte_that_is_not_utf8_in_a_url_is_a_configuration_error(persistent: str, volatile: str) -> None:
    with pytest.raises(ConfigurationError, match=r"not UTF-8.*write it as UTF-8 text") as caught:
        configure(persistent, volatile, namespace="urlbytes")
    assert "s3cr" not in str(caught.value)


def test_dal_exits_2_on_a_url_from_the_environment_that_is_not_utf8(tmp_path: Path) -> None:
    configure(f"sqlite:///{tmp_path}/a.db", "memory://", namespace="urlbytes").close()  # dump opens it first
    environment = {name: value for name, value in os.environ.items() if not name.startswith("DAL_")}
    environment["DAL_VOLATILE_URL"] = os.fsdecode(b"fakeredis://?password=s3cr\xff")
    done = subprocess.run([sys.executable, "-m", "dal", "dump", "--persistent", f"sqlite:///{tmp_path}/a.db",
                           "--namespace", "urlbytes", "-o", str(tmp_path / "out.json")], cwd=tmp_path,
                          env=environment, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("error: option 'password'") and "not UTF-8" in done.stderr
    assert "Traceback" not in done.stderr and "s3cr" not in done.stderr


@pytest.mark.parametrize(("url", "fragment"), [
    ("sqlite:///a%ff.db", r"the path .* not UTF-8 .*'%' as %25, and a file name that is not UTF-8 as it is"),
    ("sqlite:///a%fe.db", "the path .* not UTF-8"),
    ("sqlite:///50%.db", r"the path .* a '%' that starts no percent-escape; write a '%' as %25"),
    ("redis://u:s3cr%ff@h:1", r"the password of this redis:// URL holds percent-escapes that are not UTF-8"),
    ("redis://u:s3cr%zz@h:1", r"the password .* starts no percent-escape; write a '%' as %25"),
    ("redis://us%C3:s3cr@h:1", "the user name .* not UTF-8"),
    ("redis://h:1?password=s3cr%", "option 'password' .* starts no percent-escape"),
    ("etcd://h:1?ca_cert=/c%ED%B3%BF.pem", "option 'ca_cert' .* not UTF-8"),  # a surrogate's bytes
    ("etcd://h:1?x%ff=1", "an option's name .* not UTF-8"),
])
def test_an_escape_that_is_not_utf8_or_a_stray_percent_is_refused(url: str, fragment: str) -> None:
    # unquote() read %ff and %fe alike as U+FFFD: sqlite:///a%ff.db and a%fe.db opened one file
    with pytest.raises(ConfigurationError, match=fragment) as caught:
        parse_url(url)
    assert "s3cr" not in str(caught.value)


def test_escapes_of_utf8_decode_and_a_raw_file_name_byte_stays_as_it_is() -> None:
    assert parse_url("sqlite:///caf%C3%A9%25.db").path == "/café%.db"
    raw = os.fsdecode(b"/lat\xe9 %C3%A9.db")  # a file name that is not UTF-8, as os.fsdecode holds it
    assert parse_url(f"sqlite://{raw}").path == os.fsdecode(b"/lat\xe9 \xc3\xa9.db")
    assert parse_url("redis://u:s%C3%A9%25@h:1?timeout=2").password == "sé%"


@pytest.mark.parametrize("url", [
    "memory://h/%40", "memory://h/a%40b%25c%3Fd", "fakeredis://n/%40", "etcd://u:p%40w@h:1/x%40y?timeout=2",
    "sqlite:///u@corp/%25%3F.db", "sqlite:///lat\udce9%40.db", "memory://u@/%40",
])
def test_an_odd_path_reads_back_from_its_full_form(url: str) -> None:
    parsed = parse_url(url)
    assert parse_url(parsed.render(hide_password=False)) == parsed
    assert str(parse_url("sqlite:///home/u@corp/dal.db")) == "sqlite:///home/u@corp/dal.db"  # no host: kept


def test_a_password_without_a_user_reads_back_as_no_user() -> None:
    """``StoreURL(user=None, password=...)`` renders ``:pw@``, which read back as user ``''``, another URL."""
    parsed = parse_url("redis://:p%40ss@h:1/0")
    assert (parsed.user, parsed.password) == (None, "p@ss")
    assert parse_url(parsed.render(hide_password=False)) == parsed
    assert parse_url("etcd://u:@h:1").password == ""  # an empty password stays one
    with pytest.raises(ConfigurationError, match="give both"):  # etcd: a user and a password, or neither
        configure("etcd://:pw@127.0.0.1:1", "memory://", namespace="n")
