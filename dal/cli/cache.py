"""Administer the cache of a namespace: list, delete, prune, queue and prefetch dynamics, clean.

``dal cache ls [--kind K] [--hybrid NAME] [--sort hits|last_access|size] [--limit N]`` lists the
entries as the volatile store itself reports them; ``rm`` deletes (an invalidation, safe beside
live processes) and prints how many; ``prune --max-size BYTES`` removes least recently accessed
entries until the namespace fits; ``queue HYBRID.DYNAMIC [--where FIELD=VALUE ...]`` queues
dynamics in the durable store (``--list``, ``--clear``; each FIELD given once), ``prefetch [--workers N]``
computes them (skipping, and leaving queued, those the model does not declare);
``clean [--stall-time S]`` removes stalled locks and leases. On the process-local ``memory://``
only this process's own entries exist: use a shared store (memcached, Redis).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import TYPE_CHECKING, Any

import dal
from dal.cli import existing_store, unpublished
from dal.cli.progress import Progress
from dal.config import Context
from dal.exceptions import DalError
from dal.query.grammar import resolve_field
from dal.tools import cache
from dal.tools.cache.listing import registered

if TYPE_CHECKING:
    from dal.model.meta import HybridMeta
    from dal.validators import Validator

HELP = "list, delete, prune, queue and prefetch, clean cache entries"
#: the store options each action takes again, with the metavars the top-level ones show
STORE_OPTIONS = {"--persistent": "URL", "--volatile": "URL", "--namespace": "NAME",
                 "--hybrids": "MODULE[,MODULE]"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    ls = _action(actions, "ls", "list entries: kind, hybrid, guid, dynamic, size, hits, access, expiry")
    ls.add_argument("--kind", choices=cache.KINDS)
    ls.add_argument("--hybrid", metavar="NAME")
    ls.add_argument("--sort", choices=cache.SORTS)
    ls.add_argument("--limit", type=int, metavar="N")
    rm = _action(actions, "rm", "delete entries (an invalidation) and print how many")
    rm.add_argument("--hybrid", metavar="NAME")
    rm.add_argument("--guid", metavar="G")
    rm.add_argument("--dynamic", metavar="D")
    rm.add_argument("--all", action="store_true", help="every object, dynamic, query and version entry")
    prune = _action(actions, "prune", "remove least recently accessed entries until the namespace fits")
    prune.add_argument("--max-size", type=int, required=True, metavar="BYTES")
    queue = _action(actions, "queue", "queue dynamics to compute (HYBRID.DYNAMIC), or --list / --clear")
    queue.add_argument("target", nargs="?", metavar="HYBRID.DYNAMIC")
    queue.add_argument("--where", action="append", default=[], metavar="FIELD=VALUE",
                       help="only objects whose FIELD equals VALUE (JSON, else text; a text field takes "
                            "VALUE as text unless it is a JSON string); repeatable, each FIELD once")
    queue.add_argument("--list", action="store_true", help="print the queue in insertion order")
    queue.add_argument("--clear", action="store_true", help="empty the whole queue (given alone)")
    prefetch = _action(actions, "prefetch", "compute the queued dynamics")
    prefetch.add_argument("--workers", type=int, default=4, metavar="N", help="at once (default 4)")
    clean = _action(actions, "clean", "remove locks and leases taken more than --stall-time seconds ago")
    clean.add_argument("--stall-time", type=float, default=60.0, metavar="S", help="seconds (default 60)")


def _action(actions: Any, name: str, text: str) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = actions.add_parser(name, help=text, description=text)
    group = parser.add_argument_group("stores")  # also after the action, without overriding earlier ones
    for option, metavar in STORE_OPTIONS.items():
        group.add_argument(option, default=argparse.SUPPRESS, metavar=metavar)
    return parser


def run(args: argparse.Namespace) -> int:
    # every action opens an existing store only: a mistyped SQLite path would otherwise create an
    # empty database, whose cache root names no entry, and report success (``deleted 0 entries``)
    context = dal.configure(existing_store(args.persistent), args.volatile, namespace=args.namespace)
    if args.action != "prefetch":
        # an administration run is no application process: it publishes no statistics, as `dal stats`
        # does not (prefetch computes dynamics as an application does, and publishes their counts)
        unpublished(context)
    action: int = globals()[f"_{args.action}"](context, args)
    return action


def _ls(context: Context, args: argparse.Namespace) -> int:
    found = cache.entries(context, kind=args.kind, hybrid=args.hybrid, sort=args.sort, limit=args.limit)
    print(f"{'kind':8} {'hybrid':16} {'guid':36} {'dynamic':16} {'size':>8} {'hits':>6} "
          f"{'last access':19} {'expires':19}")
    for entry in found:
        print(f"{entry.kind:8} {entry.hybrid or '-':16} {entry.guid or '-':36} {entry.dynamic or '-':16} "
              f"{entry.size:>8} {'-' if entry.hits is None else entry.hits:>6} {_when(entry.last_access):19} "
              f"{_when(entry.expires_at):19}")
    print(f"{len(found)} entries, {sum(entry.size for entry in found)} bytes")
    return 0


def _when(stamp: float | None) -> str:
    return "-" if stamp is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp))


def _rm(context: Context, args: argparse.Namespace) -> int:
    deleted = cache.delete_report(context, hybrid=args.hybrid, guid=args.guid, dynamic=args.dynamic,
                                  everything=args.all)
    print(f"deleted {deleted.entries} entries")
    return _left_hashed(deleted.hashed)


def _prune(context: Context, args: argparse.Namespace) -> int:
    pruned = cache.prune(context, args.max_size)
    print(f"pruned {pruned.entries} entries, {pruned.bytes} bytes; {pruned.remaining} bytes cached")
    return _left_hashed(pruned.hashed)


def _left_hashed(count: int) -> int:
    """Say that entries under hashed keys were left, and exit 1: the removal asked for is not complete."""
    if not count:
        return 0
    print(f"warning: {count} entries are stored under hashed keys (over memcached's 250 bytes) and were "
          "left: which entries they are cannot be read back; they expire with their TTL (see "
          "docs/caching.md, Cache administration)", file=sys.stderr)
    return 1


def _queue(context: Context, args: argparse.Namespace) -> int:
    given = [option for option, on in (("HYBRID.DYNAMIC", args.target), ("--where", args.where),
                                       ("--list", args.list), ("--clear", args.clear)) if on]
    if (args.list or args.clear) and len(given) > 1:
        # --clear empties the whole queue: with a target it would clear more than it names
        raise DalError(f"{' and '.join(given)} do not go together: give `queue HYBRID.DYNAMIC "
                       "[--where FIELD=VALUE ...]` to queue, `queue --list` to print the queue, or "
                       "`queue --clear` alone to empty all of it")
    if args.list:
        items = cache.queued(context)
        for item in items:
            print(f"{item.hybrid}.{item.dynamic} {item.guid}")
        print(f"{len(items)} queued")
        return 0
    if args.clear:
        print(f"cleared {cache.clear(context)} queued dynamics")
        return 0
    if not args.target or "." not in args.target:
        raise DalError("name what to queue as HYBRID.DYNAMIC (or give --list or --clear)")
    hybrid, dynamic = args.target.split(".", 1)
    meta = _hybrid_meta(hybrid)
    conditions = [_condition(text, meta) for text in args.where]
    fields = [name for name, _ in conditions]
    repeated = sorted({name for name in fields if fields.count(name) > 1})
    if repeated:  # a dict would keep the last and queue the objects of one value, silently
        raise DalError(f"--where names {', '.join(repeated)} more than once, but an object holds one value "
                       "of a field: give each field once (to queue the objects of several values, queue each "
                       "value in its own run)")
    where = dict(conditions)
    print(f"queued {cache.queue(context, hybrid, dynamic, where)} dynamics")
    return 0


def _condition(text: str, meta: HybridMeta | None) -> tuple[str, Any]:
    """Return ``FIELD=VALUE`` as a condition: VALUE read as JSON, else as text. A JSON string is that
    string (``name='"x"'`` matches ``x``); a field of ``meta`` (resolved as a query resolves it: a
    property, a dynamic, a dotted path) that takes VALUE's text but not its JSON value, or holds text
    and is given ``null``, takes the text: ``name=123``, ``name=null`` match the name ``"123"``,
    ``"null"``. Every other field takes the JSON value (``size=7``, ``pool_guid=null``)."""
    field, sep, value = text.partition("=")
    if not sep or not field:
        raise DalError(f"--where takes FIELD=VALUE, not {text!r}")
    try:
        found = json.loads(value)
    except ValueError:
        return field, value
    except RecursionError:  # past Python's limit, far past the 100 levels a stored value may nest
        raise DalError(f"--where {field}=...: the value nests lists or dicts deeper than any stored value "
                       "(at most 100 levels); give one an object can hold") from None
    if isinstance(found, str) or meta is None:
        return field, found
    return field, (value if _takes_text(meta, field, found, value) else found)


def _takes_text(meta: HybridMeta, name: str, found: Any, text: str) -> bool:
    """Whether field ``name`` of ``meta`` reads the ``--where`` VALUE ``text`` as text, not as the JSON
    value ``found``: its type takes the text but refuses ``found`` (``null``: every field takes it).
    A guid or a relation's guid never does: a guid is never JSON, and ``null`` means no object."""
    try:
        validator = resolve_field(meta, name).validator
    except DalError:  # no such field: the query names the fields there are
        return False
    return validator is not None and _fits(validator, text) and (found is None or not _fits(validator, found))


def _fits(validator: Validator, value: Any) -> bool:
    try:
        validator(value)
    except DalError:
        return False
    return True


def _hybrid_meta(hybrid: str) -> HybridMeta | None:
    """Return the model of ``hybrid`` (None when no hybrid has that name: the queue says so)."""
    try:
        return registered(hybrid)._meta
    except DalError:
        return None


def _prefetch(context: Context, args: argparse.Namespace) -> int:
    items = cache.queued(context)
    with Progress(len(items), "prefetch") as bar:
        outcome = cache.prefetch(context, args.workers, progress=lambda item: bar.advance(), items=items)
    for item, error in outcome.failed:
        print(f"failed: {item.hybrid}.{item.dynamic} {item.guid}: {error} (still queued)")
    for item in outcome.undeclared:  # another model's, maybe: left queued, and no failure of this run
        print(f"skipped: {item.hybrid}.{item.dynamic} {item.guid}: the model does not declare it (still "
              "queued; pass the module declaring it with --hybrids; `dal check` reports it)")
    print(f"prefetched {len(outcome.done)} dynamics, {len(outcome.failed)} failed, "
          f"{len(outcome.gone)} of deleted objects dropped"
          + (f", {len(outcome.undeclared)} undeclared skipped" if outcome.undeclared else ""))
    return 1 if outcome.failed else 0


def _clean(context: Context, args: argparse.Namespace) -> int:
    removed = cache.clean(context, args.stall_time)
    for key in removed:
        print(f"removed {key}")
    print(f"cleaned {len(removed)} stalled locks and leases")
    return 0
