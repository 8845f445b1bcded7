"""What dal offers the tests of its users: fakeredis:// and the fixture's choice of stores, the
message of a client library that is too old, the conformance suite on an unregistered backend, and
the plugin's name with pytest."""

from __future__ import annotations

import importlib
import importlib.util
import subprocess
import sys
import uuid
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any, ClassVar

import pytest

from dal import backends
from dal.backends import backend_class
from dal.backends.base import DeletePrefix
from dal.backends.memory import MemoryCache
from dal.backends.redis import fake
from dal.backends.sqlite import SqliteStore
from dal.backends.url import parse_url
from dal.exceptions import ConfigurationError
from dal.testing import pytest_plugin
from dal.testing.conformance import PersistentStoreContract

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parent.parent
PLUGIN = "dal.testing.pytest_plugin"


def _pyproject() -> dict[str, Any]:
    """pyproject.toml's [project] table (tomllib is Python 3.11 on)."""
    tomllib = pytest.importorskip("tomllib")
    project: dict[str, Any] = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return project

# --- fakeredis without Lua --------------------------------------------------------------------

#: fakeredis installed without its [lua] extra: lupa cannot be imported, before fakeredis is
NO_LUA = '''
import sys, time
sys.modules["lupa"] = None
from dal.testing.pytest_plugin import in_process_url
print("PICKS", in_process_url().partition(":")[0])
import dal
from dal.exceptions import ConfigurationError
started = time.monotonic()
try:
    dal.configure("fakeredis://", "fakeredis://", namespace="nolua")
except ConfigurationError as exc:
    print("REFUSED", "at once" if time.monotonic() - started < 1 else "late", exc)
'''


def test_without_lua_fakeredis_is_refused_and_the_fixture_takes_memory() -> None:
    result = subprocess.run([sys.executable, "-c", NO_LUA], capture_output=True, text=True, timeout=120,
                            check=False)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "PICKS memory"
    # at configure, at once: not each save failing after the store's 5 s as "may have been applied"
    assert lines[1] == ("REFUSED at once fakeredis:// needs fakeredis with Lua support (lupa): "
                        "pip install 'dal[fakeredis]'"), lines


def test_fakeredis_asks_fakeredis_whether_it_runs_lua(monkeypatch: pytest.MonkeyPatch) -> None:
    assert fake.lua_supported()  # installed here with its [lua] extra
    monkeypatch.setattr(fake, "lua_supported", lambda: False)
    for cls in (fake.FakeRedisStore, fake.FakeRedisCache):
        with pytest.raises(ConfigurationError, match=r"needs fakeredis with Lua support \(lupa\)"):
            cls.from_url(parse_url("fakeredis://"))


def test_the_fixture_takes_fakeredis_only_with_lua(monkeypatch: pytest.MonkeyPatch) -> None:
    assert pytest_plugin.in_process_url() == "fakeredis://"
    monkeypatch.setattr(fake, "lua_supported", lambda: False)  # what fakeredis:// asks before it opens
    assert pytest_plugin.in_process_url().startswith("memory://")


# --- a client library too old -----------------------------------------------------------------


def _importing_fails(monkeypatch: pytest.MonkeyPatch, module: str, missing: str) -> None:
    """Make importing ``module`` fail as when the module ``missing`` does not exist."""
    real = importlib.import_module

    def import_module(name: str, package: str | None = None) -> object:
        if name == module:
            raise ModuleNotFoundError(f"No module named {missing!r}", name=missing)
        return real(name, package)

    monkeypatch.setattr(importlib, "import_module", import_module)


def test_a_package_too_old_is_named_with_its_version(monkeypatch: pytest.MonkeyPatch) -> None:
    # redis-py older than 8.1 (another package's pin, say) has no redis.maint_notifications
    _importing_fails(monkeypatch, "dal.backends.redis.fake", "redis.maint_notifications")
    with pytest.raises(ConfigurationError) as caught:
        backend_class("persistent", "fakeredis")
    assert str(caught.value) == (
        f"fakeredis:// needs redis>=8.1; redis {metadata.version('redis')} is installed, which has no "
        "module 'redis.maint_notifications': pip install 'redis>=8.1'")


def test_a_package_dal_has_no_minimum_for_is_too_old_for_dal(monkeypatch: pytest.MonkeyPatch) -> None:
    _importing_fails(monkeypatch, "dal.backends.redis", "hiredis.newer")
    with pytest.raises(ConfigurationError) as caught:
        backend_class("volatile", "redis")
    assert str(caught.value) == (
        f"redis:// needs a newer hiredis; hiredis {metadata.version('hiredis')} is installed, which has no "
        "module 'hiredis.newer' (too old for dal): pip install --upgrade hiredis")


def test_a_package_not_installed_is_named_with_its_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    _importing_fails(monkeypatch, "dal.backends.redis.fake", "fakeredis")
    with pytest.raises(ConfigurationError, match=r"^fakeredis:// needs the Python package 'fakeredis', "
                                                 r"which is not installed: pip install 'dal\[fakeredis\]'$"):
        backend_class("volatile", "fakeredis")


def test_the_extras_pin_what_dal_names_as_its_minimum() -> None:
    extras = _pyproject()["optional-dependencies"]
    # fakeredis's own requirement accepts redis-py 4.3: the extra pins the redis extra's redis-py
    assert "redis>=8.1" in extras["fakeredis"] and "redis>=8.1" in extras["redis"]
    pins = {requirement.partition("[")[0].partition(">=")[0]: requirement.partition(">=")[2]
            for extra in ("redis", "fakeredis") for requirement in extras[extra]}
    assert {dist: pins[dist] for dist in backends.MINIMUM} == backends.MINIMUM


# --- the conformance suite on a backend dal does not know -------------------------------------


class UnregisteredStore(SqliteStore):
    """A third-party backend whose scheme is not in dal's registry."""

    scheme: ClassVar[str] = "unregisteredstore"


class UnregisteredCache(MemoryCache):
    scheme: ClassVar[str] = "unregisteredcache"


@pytest.fixture
def unregistered(tmp_path: Path) -> Iterator[UnregisteredStore]:
    store = UnregisteredStore.from_url(parse_url(f"unregisteredstore:///{tmp_path}/third.db"))
    yield store
    store.close()


def test_the_suite_reopens_an_unregistered_backend(unregistered: UnregisteredStore) -> None:
    assert unregistered.shared  # the two tests reopen the store only then
    with pytest.raises(ConfigurationError):
        backend_class("persistent", "unregisteredstore")
    contract = PersistentStoreContract()
    contract.test_identity_names_the_data_not_the_client(unregistered)
    prefix = f"t{uuid.uuid4().hex[:8]}/"
    contract.test_data_survives_close_and_reopen(unregistered, prefix)
    reopened = UnregisteredStore.from_url(unregistered.url)
    try:
        assert reopened.commit([], [DeletePrefix(prefix)]).ok
    finally:
        reopened.close()


THIRD_PARTY = '''
from typing import ClassVar
import uuid
import pytest
from dal.backends.memory import MemoryCache
from dal.backends.sqlite import SqliteStore
from dal.backends.url import parse_url
from dal.testing.conformance import PersistentStoreContract, VolatileStoreContract

class MyStore(SqliteStore):
    scheme: ClassVar[str] = "mystore"

class MyCache(MemoryCache):
    scheme: ClassVar[str] = "mycache"

@pytest.fixture
def prefix():
    return f"t{uuid.uuid4().hex[:8]}/"

class TestMyStore(PersistentStoreContract):
    @pytest.fixture
    def store(self, tmp_path):
        return MyStore.from_url(parse_url(f"mystore:///{tmp_path}/x.db"))

class TestMyCache(VolatileStoreContract):
    @pytest.fixture
    def store(self):
        return MyCache.from_url(parse_url("mycache://"))
'''


def test_the_whole_suite_passes_for_an_unregistered_backend(pytester: pytest.Pytester) -> None:
    """As docs/backends.md tells a third party to run it: nothing of it fails or errors."""
    pytester.makepyfile(test_third_party=THIRD_PARTY)
    result = pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider")
    outcomes = result.parseoutcomes()
    assert outcomes.get("passed", 0) > 0 and not outcomes.get("failed") and not outcomes.get("errors"), \
        result.stdout.str()[-3000:]


# --- the plugin's name with pytest ------------------------------------------------------------

USER_TEST = '''
def test_uses_the_fixture(dal_context):
    assert dal_context.keys.root
'''


def test_the_entry_point_has_the_plugins_module_name() -> None:
    entry_points = _pyproject()["entry-points"]["pytest11"]
    assert entry_points == {PLUGIN: PLUGIN}
    # what this environment installed (pip install -e . again after the entry point changes)
    installed = {point.name: point.value for point in metadata.entry_points(group="pytest11")
                 if point.value == PLUGIN}
    assert installed == {PLUGIN: PLUGIN}


@pytest.mark.parametrize("how", ["entry point", "-p", "pytest_plugins"])
def test_the_plugin_loads_once_however_it_is_named(pytester: pytest.Pytester, how: str) -> None:
    pytester.makepyfile(test_user=USER_TEST)
    arguments = ["-p", "no:cacheprovider", "--dal-persistent=memory://", "--dal-volatile=memory://"]
    if how == "-p":
        arguments += ["-p", PLUGIN]
    if how == "pytest_plugins":
        pytester.makeconftest(f"pytest_plugins = [{PLUGIN!r}]\n")
    result = pytester.runpytest_subprocess(*arguments)
    assert result.ret == 0, result.stdout.str() + result.stderr.str()
    result.assert_outcomes(passed=1)


def test_the_plugin_is_disabled_by_its_name(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_user=USER_TEST)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", f"no:{PLUGIN}")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*fixture 'dal_context' not found*"])
