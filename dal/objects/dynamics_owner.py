"""The object a dynamic is read of (:class:`Owner`), and whether a value computed from it is everyone's.

Only an object whose fields are those of its stored revision fills the cache, and only under the
``configure()`` it was loaded under (:mod:`dal.objects.dynamics` checks that). Its fields are
compared with its stored document as this version of the model reads it, not as it is spelled: a
document stored by an earlier version or another client (a set in another order, a datetime ending
``+00:00``, ints in a list a widened model declares of floats) is the revision everyone loads, and
an object only loaded from it is unchanged, as a save tells it
(:func:`~dal.objects.transaction.edited_since`); compared as spelt, every such object would be
changed, and its dynamics never cached nor locked. One the record of seen revisions can no longer
judge (forgotten into a slot a later revision reached) is judged by its stored revision, read once.
"""

from __future__ import annotations

from typing import Any, Protocol

from dal.cache.seen import FRESH, STALE
from dal.config import Context
from dal.exceptions import BackendError
from dal.model.meta import HybridMeta
from dal.objects.decoding import document as decode
from dal.objects.transaction import edited_since


class Owner(Protocol):
    """What reading a dynamic needs of its object (a ``DataObject``): its guid, its hybrid, its
    revision, and its fields as stored (``_document``), to tell whether they are that revision's."""

    @property
    def guid(self) -> str: ...

    @property
    def _meta(self) -> HybridMeta: ...

    @property
    def _revision(self) -> int: ...

    def _document(self) -> dict[str, Any]: ...


def stored_revision(context: Context, obj: Owner) -> bool:
    """Tell whether ``obj``'s fields are those of its stored revision, and no older than any revision
    of it this process has seen: only then is a value computed from them everyone's to read (the
    caller has checked that it was loaded under ``context``'s store and namespace).

    Run on a miss only (the computation it precedes costs more): it compares the object with the
    document it was loaded as, as a save does (:func:`~dal.objects.transaction.edited_since`), so an
    assignment or a list changed in place counts as a change, a stored spelling this version would
    write otherwise does not.
    """
    state = obj.__dict__
    raw, revision = state.get("_raw"), state.get("_revision", 0)
    if raw is None or revision <= 0 or "_uncertain" in state:
        return False  # new, deleted, saved without a known revision, or a save's outcome unknown
    meta = obj._meta
    verdict = context.seen.verdict(meta.name, obj.guid, revision)
    if verdict is STALE:
        return False  # loaded before a revision this process has read or written since
    try:  # undeclared fields are not compared: a value reads declared fields only
        if edited_since(meta, decode(raw), obj._document(), {}):
            return False
    except (TypeError, ValueError):
        return False  # a value changed in place that no longer encodes: not what is stored
    return verdict is FRESH or _still_stored(context, meta.name, obj.guid, revision)


def _still_stored(context: Context, hybrid: str, guid: str, revision: int) -> bool:
    """Tell whether ``revision`` is the one stored of an object the record of seen revisions forgot
    into a slot a later revision of another object reached (verdict UNSURE: it may or may not be
    older than one this process saw), reading the durable store, as a cached document so judged is.

    The revision read is noted (as a load notes it), so the object is judged exactly again: one
    read per forgetting, not one per miss. Without it, a long-held unchanged object of a process
    that had seen more objects than the record holds would never cache nor lock its dynamics again.
    """
    try:
        entry = context.persistent.get(context.keys.doc(hybrid, guid))
    except BackendError:
        return False  # not known to be stored: its value stays its own
    if entry is None:
        return False  # deleted since
    context.seen.note(hybrid, guid, entry.revision)
    return entry.revision == revision

