"""The ``dal_context`` fixture of the pytest plugin, run in pytester's inner sessions."""

from __future__ import annotations

import sqlite3

import pytest

from dal.backends import BACKENDS
from dal.testing import pytest_plugin

pytest_plugins = ["pytester"]

USER_TEST = '''
import pytest
from dal import DataObject, Property, configure
from dal.config import current
from dal.backends.base import DeletePrefix

class Note(DataObject, hybrid_name="pluginnote"):
    text: str = Property(unique=True)

SEEN = []

@pytest.mark.parametrize("run", [1, 2])
def test_each_test_has_a_fresh_namespace(dal_context, run):
    assert current() is dal_context
    assert Note.where().count() == 0        # nothing of the other run is visible
    Note(text="hello").save()
    assert Note.get_by(text="hello").text == "hello"
    SEEN.append((dal_context.persistent_url.scheme, dal_context.volatile_url.scheme, dal_context.keys.root))

def test_what_a_test_wrote_is_removed():
    assert len({root for _, _, root in SEEN}) == 2
    print("SCHEMES", sorted({(p, v) for p, v, _ in SEEN}))
'''


def test_dal_context_defaults_to_in_process_stores(pytester: pytest.Pytester) -> None:
    """Loaded through the pytest11 entry point, as in a user's project after `pip install dal`."""
    pytester.makepyfile(USER_TEST)
    result = pytester.runpytest_subprocess("-s", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=3)
    expected = "fakeredis" if pytest_plugin.in_process_url() == "fakeredis://" else "memory"
    result.stdout.fnmatch_lines([f"*SCHEMES [[]('{expected}', '{expected}')[]]"])


def test_dal_context_takes_the_stores_from_the_options(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(USER_TEST)
    database = pytester.path / "app.sqlite3"
    result = pytester.runpytest_subprocess("-s", "-p", "no:cacheprovider",
                                f"--dal-persistent=sqlite:///{database}", "--dal-volatile=memory://")
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(["*SCHEMES [[]('sqlite', 'memory')[]]"])
    # every test's namespace was removed: the shared file holds nothing of them
    with sqlite3.connect(database) as connection:
        keys = [row[0] for row in connection.execute("select key from kv")]
    assert not [key for key in keys if "test-" in key], keys


def test_the_default_follows_the_registered_schemes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(BACKENDS["persistent"], "fakeredis", "x:y")
    monkeypatch.setitem(BACKENDS["volatile"], "fakeredis", "x:y")
    assert pytest_plugin.in_process_url() == "fakeredis://"  # the fakeredis package is installed here
    monkeypatch.delitem(BACKENDS["volatile"], "fakeredis")
    assert pytest_plugin.in_process_url().startswith("memory://")


AFTER_TEST = '''
from dal import configure
from dal.config import current

BEFORE = configure("memory://before", "memory://before", namespace="before")
OWN = []

def test_with_the_fixture(dal_context):
    OWN.append(dal_context)

def test_after_it():
    # neither the context configure() closed for the fixture nor the fixture's own, closed after
    # its test, is handed out again: the next current() is a fresh one
    context = current()
    assert context is not BEFORE and context is not OWN[0]
'''


def test_after_a_test_no_closed_context_is_current(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(AFTER_TEST)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--dal-persistent=memory://after",
                                           "--dal-volatile=memory://after")
    result.assert_outcomes(passed=2)


@pytest.mark.parametrize("empty", ["--dal-persistent", "--dal-volatile"])
def test_an_empty_store_option_stops_the_run(pytester: pytest.Pytester, empty: str) -> None:
    """``--dal-persistent=$URL`` with the variable unset: a usage error, never the in-process default."""
    pytester.makepyfile(USER_TEST)
    other = "--dal-volatile" if empty == "--dal-persistent" else "--dal-persistent"
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", f"{empty}=", f"{other}=memory://")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: {empty} is empty*give it a store URL, or leave the option out*"])
    assert "passed" not in result.stdout.str(), "no test ran on the in-process default"
