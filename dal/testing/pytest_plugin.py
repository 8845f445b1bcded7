"""A pytest plugin for the tests of applications built on dal: the ``dal_context`` fixture.

Registered through the ``pytest11`` entry point under its module's name (``dal.testing.pytest_plugin``),
so a project that also names it, with ``pytest -p dal.testing.pytest_plugin`` or
``pytest_plugins = ["dal.testing.pytest_plugin"]``, loads it once; ``pytest -p
no:dal.testing.pytest_plugin`` disables it. ``dal_context`` configures dal on a fresh namespace for
one test and yields the :class:`~dal.config.Context`; afterwards it removes everything the test wrote
to the durable store under that namespace (its cache entries stay: no other test reads that namespace,
and not every cache can delete by prefix) and closes it; the next ``current()`` configures afresh
(``configure()`` closed the context current before, which is never handed back).

The stores: ``--dal-persistent URL`` and ``--dal-volatile URL`` when given (given empty, as an unset
variable gives, the run stops with a usage error); otherwise in-process
ones, ``fakeredis://`` for both roles when the ``fakeredis`` package is installed with its Lua
support (lupa: fakeredis:// refuses to open without) and dal knows the scheme, else ``memory://`` (a
store of its own per test).
"""

from __future__ import annotations

import importlib.util
import uuid
from collections.abc import Iterator

import pytest

from dal import config
from dal.backends import BACKENDS
from dal.backends.base import DeletePrefix
from dal.config import Context, configure

#: what the two options default to, for their help
DEFAULT = "fakeredis:// if installed with Lua, else memory://"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("dal", "dal: the stores of the dal_context fixture")
    group.addoption("--dal-persistent", metavar="URL", default=None,
                    help=f"durable store of dal_context (default: {DEFAULT})")
    group.addoption("--dal-volatile", metavar="URL", default=None,
                    help=f"volatile store of dal_context (default: {DEFAULT})")


def pytest_configure(config: pytest.Config) -> None:
    """Refuse an empty ``--dal-persistent=`` or ``--dal-volatile=`` (as an unset variable gives) once, for
    the run: the in-process default stands for an option left out, never for one given empty."""
    for option in ("--dal-persistent", "--dal-volatile"):
        value = config.getoption(option.lstrip("-").replace("-", "_"))
        if value is not None and not value.strip():
            raise pytest.UsageError(
                f"{option} is empty (an unset variable in {option}=$URL?); give it a store URL, or leave "
                f"the option out for the in-process default ({DEFAULT})")


def in_process_url() -> str:
    """Return the URL of a fresh in-process store that serves both roles."""
    fake = "fakeredis" in BACKENDS["persistent"] and "fakeredis" in BACKENDS["volatile"]
    if fake and importlib.util.find_spec("fakeredis") is not None and _runs_lua():
        return "fakeredis://"
    return f"memory://{uuid.uuid4().hex[:12]}"


def _runs_lua() -> bool:
    """Whether fakeredis runs Lua here, as fakeredis:// asks before it opens (it refuses without)."""
    try:
        from dal.backends.redis.fake import lua_supported
    except ImportError:  # a redis-py too old for dal: fakeredis:// names it at configure, not silently
        return True
    return lua_supported()


@pytest.fixture
def dal_context(request: pytest.FixtureRequest) -> Iterator[Context]:
    """dal configured on a fresh namespace; what the test wrote there is removed afterwards."""
    # only an option left out takes the default: pytest_configure refused an empty one
    persistent = _option(request.config, "dal_persistent")
    volatile = _option(request.config, "dal_volatile")
    # configure() closes the context current before (its sweeps stop): it is never handed back, and
    # the next current() after this test configures afresh
    context = configure(persistent, volatile, namespace=f"test-{uuid.uuid4().hex[:12]}")
    try:
        yield context
    finally:
        try:
            context.persistent.commit([], [DeletePrefix(context.keys.root)])
        finally:
            context.close()
            if config._context is context:
                config._context = None


def _option(config: pytest.Config, name: str) -> str:
    """Return the URL of option ``name``, or a fresh in-process store's when the option was left out."""
    value = config.getoption(name)
    return in_process_url() if value is None else str(value)
