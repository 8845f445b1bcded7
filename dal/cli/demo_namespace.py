"""The demo's claim on its namespace: it clears what it wrote, and nothing else.

``dal demo`` empties its namespace before it starts, so it can run again and again. A marker
key under the namespace says what is there: ``running`` while a demo writes, ``finished`` once
it is done, then written last, so its revision is later than that of every key the demo wrote.
The next demo clears the namespace only when

- it is empty, or
- the marker says ``finished``, no key under the namespace was written after the marker, and
  every document there is of the sample model.

Anything else is data the demo did not write, or cannot tell from data it wrote (a demo killed
before it finished, a marker of an older release that recorded nothing), and the demo refuses,
naming a key. The clear is one commit, conditional on nothing under the namespace having been
written since the scan that found it clear to take, so a writer racing it is never wiped.
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
    documents = f"{context.keys.root}o/"
    for batch in scan_batches(context.persistent, context.keys.root):
        for key, entry in batch:
            survey.newest = max(survey.newest, entry.revision)
            if key == marker:
                continue
            if found is None:
                raise _refusal(context, f"{key}, with no demo marker beside it")
            if found.value != FINISHED:
                raise _refusal(context, f"{key}, of a demo that did not finish (or of an older release), "
                                        "which cannot be told from data others wrote")
            if entry.revision > found.revision:
                raise _refusal(context, f"{key}, written after the demo finished")
            if key.startswith(documents):
                hybrid, _, guid = key[len(documents):].partition("/")
                if hybrid not in sample:
                    raise _refusal(context, f"{key}, of {hybrid}, which is no hybrid of the sample model")
                survey.cached += _cache_keys(context, hybrid, guid, entry.value)
    return survey


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
        "to read it)")
