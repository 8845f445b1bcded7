"""The demo's claim on its namespace: it clears what it wrote, and nothing else.

``dal demo`` empties its namespace before it starts, so it can run again and again. A marker
key under the namespace says what is there: ``running`` while a demo writes, ``finished`` once
it is done (or stopped by an error, Ctrl-C or SIGTERM), then written last, so its revision is
later than that of every key the demo wrote. The next demo clears the namespace only when

- it is empty, or
- every key there is of a family the demo writes (:func:`_demo_key`: the document, unique,
  index, one-to-one and link keys of the sample model's hybrids, their schema records,
  migration bookkeeping, commit journal records), and
- the marker says ``finished`` and no key was written after it, or the marker says
  ``running`` (a demo killed outright, or one running now) or is the empty value an older
  release wrote, which recorded no finish: then the families alone decide.

Anything else (no marker, a key of another hybrid or family, a key newer than a finished
marker) is refused, naming a key. The clear is one commit, conditional on nothing under the
namespace having been written since the scan that found it clear to take, so a writer racing
it is never wiped.

What the keys cannot tell: an application's hybrid named like one of the sample's (``disk``)
whose objects were saved into the demo's namespace *while* a demo ran (before its finished
marker), or at any time beside a ``running`` or older-release marker, is taken for the demo's
and cleared. Run applications in a namespace of their own.
"""

from __future__ import annotations

from contextlib import suppress
from dataclasses import dataclass, field

import dal.hybrids
from dal.backends.base import DeletePrefix, PrefixUnchanged, Put, Revision
from dal.backends.paging import scan_batches
from dal.cache.versions import changed_versions
from dal.config import Context
from dal.exceptions import DalError
from dal.model.registry import hybrids
from dal.objects import schema
from dal.objects.transaction import decode

#: the key (under the namespace) that marks it as the demo's own
MARKER = "demo-namespace"
RUNNING = b"running"
FINISHED = b"finished"
#: the marker of a release before this one, which recorded neither start nor finish
OLDER_RELEASE = b""


class ForeignDataError(DalError):
    """The demo's namespace holds data the demo did not write, or cannot tell from its own."""


@dataclass
class _Survey:
    """What a scan of the namespace found: the newest revision, the cache keys of its documents."""

    newest: int = 0
    cached: list[str] = field(default_factory=list)


def claim(context: Context) -> int:
    """Empty the namespace for a new run and mark it running; return the marker's revision.

    Raises :class:`ForeignDataError`, writing nothing, when the namespace holds data some other
    program wrote (or may have written).
    """
    marker = f"{context.keys.root}{MARKER}"
    survey = _survey(context, marker)
    result = context.persistent.commit([PrefixUnchanged(context.keys.root, survey.newest)],
                                       [DeletePrefix(context.keys.root), Put(marker, RUNNING)])
    if not result.ok:
        raise _refusal(context, "a key was written there while the demo was about to clear it")
    # a shared cache (memcached) outlives the previous run: drop what it held about the objects
    # just removed, as their deletes would have, so no cached result of that run is served now
    context.invalidate(*survey.cached)
    schema.forget(context)
    return result.revision


def finish(context: Context, claimed: int) -> None:
    """Mark the namespace finished: every key in it now is older than the marker.

    Conditional on the marker this run wrote, so a demo started meanwhile in the same namespace
    keeps its own claim.
    """
    marker = f"{context.keys.root}{MARKER}"
    context.persistent.commit([Revision(marker, claimed)], [Put(marker, FINISHED)])


def finish_quietly(context: Context, claimed: int) -> None:
    """:func:`finish` after a failed run: the run's own error is the one to report."""
    with suppress(DalError):
        finish(context, claimed)


def _survey(context: Context, marker: str) -> _Survey:
    """Scan the namespace; raise ForeignDataError at the first key the demo did not write."""
    survey = _Survey()
    found = context.persistent.get(marker)
    sample = {getattr(dal.hybrids, name)._meta.name for name in dal.hybrids.__all__}
    root = context.keys.root
    documents = f"{root}o/"
    for batch in scan_batches(context.persistent, root):
        for key, entry in batch:
            survey.newest = max(survey.newest, entry.revision)
            if key == marker:
                continue
            if found is None:
                raise _refusal(context, f"{key}, with no demo marker beside it")
            if found.value not in (FINISHED, RUNNING, OLDER_RELEASE):
                raise _refusal(context, f"{key}, beside a demo marker this release does not know "
                                        f"({found.value[:40]!r})")
            if found.value == FINISHED and entry.revision > found.revision:
                raise _refusal(context, f"{key}, written after the demo finished")
            if not _demo_key(key[len(root):], sample):
                raise _refusal(context, f"{key}, which is no key of the sample model's hybrids nor of "
                                        "dal's own bookkeeping")
            if key.startswith(documents):
                hybrid, _, guid = key[len(documents):].partition("/")
                survey.cached += _cache_keys(context, hybrid, guid, entry.value)
    return survey


def _demo_key(key: str, sample: set[str]) -> bool:
    """Whether a key (relative to the namespace) is of a family the demo writes.

    A document, unique, index or one-to-one key of a sample hybrid; a link key between two;
    the schema record or migration verification of one; migration steps and cursors; commit
    journal records (which name cache keys, no data). Not the cache queue of ``dal cache
    queue``, nor any other key.
    """
    family, _, rest = key.partition("/")
    parts = rest.split("/")
    if family in ("o", "u", "i", "r"):
        return parts[0] in sample
    if family == "l":  # l/<target>/<target guid>/<source>/<relation>/<source guid>
        return len(parts) > 3 and parts[0] in sample and parts[2] in sample
    if family == "m":
        if parts[0] == "schema":
            return len(parts) == 2 and parts[1] in sample
        if parts[0] == "verify":  # m/verify/<hybrid>[/<run id>]
            return len(parts) in (2, 3) and parts[1] in sample
        return parts[0] in ("steps", "cursor")
    return family == "x"


def _cache_keys(context: Context, hybrid: str, guid: str, value: bytes) -> list[str]:
    """Return the cache keys a delete of this stored object would invalidate."""
    keys = context.keys
    cached = [keys.cached_doc(hybrid, guid)]
    try:
        meta = hybrids.get(hybrid)._meta
        document = decode(value)
    except (LookupError, ValueError):
        return cached  # unreadable: only its cached copy can be known
    cached += [keys.cached_dynamic(hybrid, guid, name) for name in meta.dynamics]
    cached += changed_versions(keys, meta, guid, document, None)
    return cached


def _refusal(context: Context, why: str) -> ForeignDataError:
    return ForeignDataError(
        f"namespace {context.namespace!r} in {context.persistent_url} holds data the demo did not write "
        f"({why}); the demo clears its namespace before it runs, so it leaves this one alone: run it "
        "in another namespace with --namespace NAME (and give the other commands the same --namespace "
        "to read it), or, if nothing there is worth keeping, delete the SQLite file (or the keys "
        f"under {context.keys.root!r})")
