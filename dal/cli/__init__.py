"""The ``dal`` command line: ``main(argv) -> exit code``.

Every command takes ``--persistent URL --volatile URL --namespace NAME --hybrids MODULES``
(defaults: the ``DAL_*`` variables, then the embedded default and ``dal.hybrids``). Bad
input prints ``error: ...`` on stderr and exits 2; a reader that went away before the output was
written (``dal ... | head``) ends the command quietly with exit 141 (128 + SIGPIPE).
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
from collections.abc import Sequence
from dataclasses import replace
from types import MappingProxyType, ModuleType
from typing import TYPE_CHECKING

from dal.backends import backend_class, located
from dal.backends.url import StoreURL, parse_url
from dal.cli.output import diagnostics, open_stdout
from dal.config import DEFAULT_PERSISTENT, Context
from dal.exceptions import ConfigurationError, DalError
from dal.settings import setting

if TYPE_CHECKING:
    from _typeshed import SupportsWrite

#: command name -> module with HELP, add_arguments(parser) and run(args) -> int; one per line
COMMAND_MODULES = {
    "demo": "dal.cli.demo",
    "migrate": "dal.cli.migrate",
    "erd": "dal.cli.erd",
    "stats": "dal.cli.stats",
    "dump": "dal.cli.dump",
    "load": "dal.cli.load",
    "copy": "dal.cli.copy",
    "check": "dal.cli.check",
    "refresh": "dal.cli.refresh",
    "cache": "dal.cli.cache",
}


def command(name: str) -> ModuleType:
    return importlib.import_module(COMMAND_MODULES[name])


#: the exit status of a command whose reader went away before its output was written: what a Unix
#: tool killed by SIGPIPE reports, so a ``set -o pipefail`` script sees the command did not finish
EXIT_BROKEN_PIPE = 128 + 13


class Parser(argparse.ArgumentParser):
    """An argument parser whose ``--help`` raises when it cannot be written (argparse ignores it)."""

    def print_help(self, file: SupportsWrite[str] | None = None) -> None:
        (sys.stdout if file is None else file).write(self.format_help())


def build_parser() -> argparse.ArgumentParser:
    # the subcommands' parsers are of the same class (add_subparsers' default parser_class)
    parser = Parser(prog="dal", description="Work with dal stores and hybrids.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        module = command(name)
        sub = commands.add_parser(name, help=module.HELP, description=module.__doc__)
        add_store_options(sub)
        module.add_arguments(sub)
    return parser


def add_store_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("stores")
    # None when not given: configure() reads $DAL_PERSISTENT_URL itself (and refuses it empty)
    group.add_argument("--persistent", metavar="URL", default=None,
                       help="durable store URL (default: $DAL_PERSISTENT_URL or sqlite:///dal.sqlite3)")
    group.add_argument("--volatile", metavar="URL", default=None,
                       help="cache store URL (default: $DAL_VOLATILE_URL or memory://)")
    group.add_argument("--namespace", metavar="NAME", default=None,
                       help="key namespace (default: $DAL_NAMESPACE or the command's own)")
    # None when not given: hybrids_setting reads $DAL_HYBRIDS (and refuses it empty) for the commands
    # that import the modules
    group.add_argument("--hybrids", metavar="MODULE[,MODULE]", default=None,
                       help="modules declaring hybrids (default: $DAL_HYBRIDS or dal.hybrids)")


def hybrids_setting(given: str | None) -> str:
    """Return the modules declaring hybrids: ``given`` (--hybrids), else ``$DAL_HYBRIDS``, else
    ``dal.hybrids``. One empty, blank or naming no module (``,``) is refused (ConfigurationError), as
    every empty ``DAL_*`` setting is: it would import no hybrid, and ``dal check`` would then report
    every key of the namespace as an orphan."""
    modules = setting(given, "DAL_HYBRIDS", "dal.hybrids", "list of hybrids modules")
    if not any(part.strip() for part in modules.split(",")):
        raise ConfigurationError(f"the list of hybrids modules {modules!r} names no module; give one with "
                                 "--hybrids MODULE[,MODULE] (or DAL_HYBRIDS), or leave it unset for "
                                 "'dal.hybrids'")
    return modules


def existing_store(url: str | None) -> str:
    """Return the URL a command that only reads a store opens: a SQLite file must exist already.

    ``url`` (default: ``$DAL_PERSISTENT_URL``, then the embedded default) gets ``mode=rw`` when it
    names a SQLite file and sets no mode, so a mistyped path fails (exit 2) instead of creating an
    empty database that then reads as clean.
    """
    text = setting(url, "DAL_PERSISTENT_URL", DEFAULT_PERSISTENT, "persistent URL")
    parsed = parse_url(text)
    if parsed.scheme != "sqlite" or "mode" in parsed.options:
        return text
    return replace(parsed, options=MappingProxyType({**parsed.options, "mode": "rw"})).settings()


def lasting_store(url: str | None, command: str) -> str:
    """Return the URL of the store a command writes (``url``, default: ``$DAL_PERSISTENT_URL``, then the
    embedded default), unless it lives in this process only (``memory://``, ``fakeredis://``): what
    the command wrote there would vanish when it exits, after it said done."""
    text = setting(url, "DAL_PERSISTENT_URL", DEFAULT_PERSISTENT, "persistent URL")
    parsed = parse_url(text)
    if not backend_class("persistent", parsed.scheme).shared:
        raise ConfigurationError(
            f"{parsed.scheme}:// lives in this process only: what `dal {command}` wrote there would be "
            "gone when it exits; name a store that outlives the command (sqlite:///path, etcd://..., "
            "redis://...)")
    return text


def unpublished(context: Context) -> Context:
    """Return ``context`` once it publishes no statistics: an administration command is no application
    process, and ``dal stats`` counts those only (a published run stays listed for a day, its counters
    summed in). Every command that configures a context calls it, but the demo, ``dal refresh`` and
    ``dal cache prefetch``, which compute dynamics as an application does."""
    if context.publisher is not None:
        context.publisher.withdraw()
    return context


def sqlite_files(*urls: str | StoreURL | None) -> tuple[str, ...]:
    """Return the absolute paths of the SQLite databases ``urls`` name (``None``: ``$DAL_PERSISTENT_URL``,
    then the embedded default), which a command writing a file must not write over
    (:func:`dal.cli.output.refuse_target`). A URL naming no SQLite file gives none: a bad one is
    refused when a store is opened by it."""
    found = []
    for url in urls:
        try:
            parsed = url if isinstance(url, StoreURL) else parse_url(
                setting(url, "DAL_PERSISTENT_URL", DEFAULT_PERSISTENT, "persistent URL"))
            if parsed.scheme == "sqlite":
                found.append(located("persistent", parsed).path[1:])
        except DalError:
            continue
    return tuple(found)


def shown_store(url: StoreURL) -> StoreURL:
    """Return ``url`` as given to a read-only command: without the ``mode=rw`` it was opened with."""
    if url.scheme != "sqlite" or url.options.get("mode") != "rw":
        return url
    return replace(url, options=MappingProxyType({k: v for k, v in url.options.items() if k != "mode"}))


def import_hybrids(modules: str) -> None:
    """Import the modules that declare hybrids, so they register; a package with all its submodules.

    The working directory comes first on the import path, as with ``python -m dal``: the
    installed ``dal`` script starts with its own directory there instead, so ``--hybrids
    mymodule`` would not find ``./mymodule.py``.
    """
    if not {"", os.curdir, os.getcwd()} & set(sys.path):
        sys.path.insert(0, os.getcwd())
    for name in filter(None, (part.strip() for part in modules.split(","))):
        module = _import(name)
        # one module per hybrid is the convention: a package's hybrids need not be imported by its
        # __init__ to be found
        for found in pkgutil.walk_packages(getattr(module, "__path__", []), prefix=f"{name}."):
            _import(found.name)


def _import(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except DalError:
        raise
    except Exception as exc:  # anything a user's module raises on import
        raise DalError(f"cannot import hybrids module {name!r}: {type(exc).__name__}: {exc}; "
                       "check --hybrids / DAL_HYBRIDS") from exc


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``dal`` command line and return its exit code.

    stderr carries no output: when it cannot be written (``2>&-``, a full device, a pipe whose reader
    left), its messages are dropped and the command still does its work and keeps its exit status.
    """
    open_stdout()  # started with stdout closed (>&-): what it prints is output that cannot be written
    with diagnostics():
        return _reported(argv)


def _reported(argv: Sequence[str] | None) -> int:
    """Run the command; turn its errors into an ``error: ...`` line on stderr and an exit code."""
    try:
        code = _run(argv)
        sys.stdout.flush()  # here, not at exit, so an output error is reported like any other
        return code
    except DalError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        # an interrupted load (or copy) says what it had written and how to finish
        print(f"error: interrupted{f': {exc}' if str(exc) else ''}", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader went away (`dal ... | head`) before the output was all written: stop quietly,
        # but not as a success, whatever the command found so far (output written before it left is
        # in the pipe: that command finished, and keeps its own status)
        _discard_stdout()
        return EXIT_BROKEN_PIPE
    except OSError as exc:
        if not _output_error(exc):
            raise
        # stdout's file or device is full, or gone: say so once, as any other error
        _discard_stdout()
        print(f"error: cannot write output: {exc.strerror or exc}", file=sys.stderr)
        return 2


def _run(argv: Sequence[str] | None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2): main flushes what --help wrote
        return exc.code if isinstance(exc.code, int) else 2
    module = command(args.command)
    # the demo (dal demo, dal stats --demo) runs the sample model alone: --hybrids may name an
    # application whose hybrids are named like the sample's (Disk, Pool)
    if getattr(module, "uses_hybrids", lambda args: True)(args):
        args.hybrids = hybrids_setting(args.hybrids)
        import_hybrids(args.hybrids)
    return int(module.run(args))


def _output_error(exc: OSError) -> bool:
    """Whether ``exc`` came from writing stdout: the commands turn the errors of the files they
    open and of the stores they reach into DalError, so one naming no file is the output's."""
    return exc.filename is None and not isinstance(exc, ConnectionError | TimeoutError)


def _discard_stdout() -> None:
    """Point stdout at the null device, so the flush at exit does not fail again."""
    try:
        descriptor = sys.stdout.fileno()
    except (OSError, ValueError, AttributeError):
        return  # not a file (a test's stand-in): nothing is flushed at exit
    os.dup2(os.open(os.devnull, os.O_WRONLY), descriptor)
