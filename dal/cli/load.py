"""Load a dump (``dal dump``'s JSON) into a namespace: validated first, then written in atomic batches.

Everything is checked before anything is written: the format and version, every document
against the declared model, unique values, guids already stored (refused unless
``--replace``) and relation targets. Then each batch of objects is one commit holding their
documents with their unique keys, index entries and links. If a batch fails, the earlier
batches stay written; run the same load with ``--replace`` to finish.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import dal
from dal.backends.url import StoreURL
from dal.cli import lasting_store, unpublished
from dal.cli.progress import Progress
from dal.config import DEFAULT_PERSISTENT, DEFAULT_VOLATILE
from dal.exceptions import DalError
from dal.model.meta import HybridMeta
from dal.tools.transfer.dump import Dump, read_dump, select_hybrids
from dal.tools.transfer.load import BATCH_SIZE, MAX_TXN_OPS, LoadInterrupted, load

HELP = "load a dump (FILE, or - for stdin) into a namespace"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="FILE", help="a file written by `dal dump`, or - to read stdin")
    parser.add_argument("--replace", action="store_true",
                        help="overwrite objects whose guid is already stored (default: refuse them); "
                             "objects not in the dump are never touched")
    add_only_option(parser, "load only these hybrids of the dump")
    add_batch_options(parser)


def add_only_option(parser: argparse.ArgumentParser, text: str) -> None:
    parser.add_argument("--only", metavar="HYBRID[,HYBRID]",
                        help=f"{text} (class or logical names, e.g. Backend,backendtype; a class name "
                             "several hybrids share is refused: use their logical names)")


def selection_words(args: argparse.Namespace) -> list[str]:
    """Return the options of a load or copy that say what it writes and how, as typed (defaults left out):
    the command that finishes an interrupted one repeats them."""
    words: list[str] = []
    if args.hybrids != "dal.hybrids":
        words += ["--hybrids", args.hybrids]
    if args.only is not None:
        words += ["--only", args.only]
    if args.batch_size != BATCH_SIZE:
        words += ["--batch-size", str(args.batch_size)]
    if args.max_txn_ops != MAX_TXN_OPS:
        words += ["--max-txn-ops", str(args.max_txn_ops)]
    return words


def add_batch_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("batches")
    group.add_argument("--batch-size", type=int, default=BATCH_SIZE, metavar="N",
                       help=f"objects per commit (default {BATCH_SIZE})")
    group.add_argument("--max-txn-ops", type=int, default=MAX_TXN_OPS, metavar="N",
                       help=f"operations per commit (default {MAX_TXN_OPS}, etcd's own default "
                            "--max-txn-ops; raise it with your etcd's)")


def selected(args: argparse.Namespace) -> list[HybridMeta] | None:
    """Return the hybrids ``--only`` names, or ``None`` for all."""
    return None if args.only is None else select_hybrids(args.only.split(","))


def check_batches(args: argparse.Namespace) -> None:
    """Refuse batch options no load can run with, before any store is opened (or created)."""
    if args.batch_size < 1 or args.max_txn_ops < 1:
        raise DalError(f"--batch-size and --max-txn-ops must be at least 1, not {args.batch_size} and "
                       f"{args.max_txn_ops}")


def read(name: str) -> Dump:
    """Read and parse the dump ``name`` (``-``: stdin); a file that cannot be read is a DalError."""
    if name == "-":
        if sys.stdin is None:  # started with stdin closed (<&-)
            raise DalError("cannot read stdin: it is closed; feed the dump on stdin, or give its path")
        try:
            return read_dump(sys.stdin, "stdin")
        except OSError as exc:
            raise DalError(f"cannot read stdin: {exc.strerror or exc}; feed the dump on stdin, or give "
                           "its path") from exc
    path = Path(name)
    try:
        with path.open(encoding="utf-8") as stream:
            return read_dump(stream, str(path))
    except OSError as exc:
        raise DalError(f"cannot read {path}: {exc.strerror or exc}; give the path of a file written by "
                       "`dal dump`, or - for stdin") from exc


def run(args: argparse.Namespace) -> int:
    # everything that can refuse the load without a store comes first: a refused load must not
    # create the destination's SQLite file, which would then read as a clean, empty namespace
    url = lasting_store(args.persistent, "load")
    check_batches(args)
    only = selected(args)
    data = read(args.file).select(only)
    context = unpublished(dal.configure(url, args.volatile, namespace=args.namespace))
    try:
        with Progress(data.total, "load") as bar:
            result = load(context, data, replace=args.replace, batch_size=args.batch_size,
                          max_ops=args.max_txn_ops, progress=bar.advance,
                          source="stdin" if args.file == "-" else args.file)
    except LoadInterrupted as stopped:
        print(f"error: interrupted: {stopped.summary}", file=sys.stderr)
        print(finishing(args, context), file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("error: interrupted before any object was written; nothing to finish", file=sys.stderr)
        return 130
    counts = ", ".join(f"{name} {count}" for name, count in result.counts.items()) or "nothing"
    replaced = f", {result.replaced} of them replacing stored objects" if result.replaced else ""
    commits = f"{result.batches} commit{'' if result.batches == 1 else 's'}"
    print(f"loaded {result.total} objects ({counts}) in {commits}{replaced} into namespace "
          f"{context.namespace!r} of {context.persistent_url}")
    return 0


def finishing(args: argparse.Namespace, context: dal.config.Context) -> str:
    """Return the advice that finishes an interrupted load: this load again, with ``--replace``.

    Every setting that differs from the built-in default is spelled out (whether it came from
    an option or a ``DAL_*`` variable), so the command means the same in another shell.
    """
    words = ["dal", "load", args.file, "--replace"]
    hidden = False
    for option, url, default in (("--persistent", context.persistent_url, DEFAULT_PERSISTENT),
                                 ("--volatile", context.volatile_url, DEFAULT_VOLATILE)):
        if url.settings() != default:
            words += [option, str(url)]
            hidden = hidden or has_password(url)
    if context.namespace != "dal":
        words += ["--namespace", context.namespace]
    words += selection_words(args)
    text = f"finish the load with: {shlex.join(words)}"
    if args.file == "-":
        text += " (feeding it the same dump on stdin)"
    if hidden:
        text += " (with the password in place of ***)"
    return text


def has_password(url: StoreURL) -> bool:
    return str(url) != url.settings()
