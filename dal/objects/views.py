"""What a create or a delete plans from: the hybrid's schema record as this process last read it.

A newer model may have recorded its own model since (its first save into an empty hybrid, or
``dal migrate``): its documents then hold fields this process's model does not declare, and its
cached query results read a document lacking one as that field's default. So a create or delete
names the versions of those fields at their defaults (:func:`dal.cache.versions.changed_versions`),
and its commit checks that the record is still the one it planned from (:class:`View`): a view up
to READY_TTL old would otherwise miss a record written just before the commit. When the check
fails, the writer reads the record again (:func:`stale`) and plans once more. The record also says
which unique keys are built, so which of the keys a write gives up it must read first
(:func:`unique_owners`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dal.backends.base import Entry, Revision
from dal.config import Context
from dal.model.meta import HybridMeta
from dal.objects.schema import current_state, ensure_recorded, undeclared_defaults
from dal.objects.transaction import Document, Reason, gives_up_unique, read_owners

#: the reason of a view's check in a plan: a failure means "read the record again", never a refusal
SCHEMA = Reason("schema")


@dataclass(frozen=True)
class View:
    #: the record's revision when read (absent: 0), checked by the commit; ``None`` when not known
    #: (a record this process wrote through a commit whose revision the store did not tell)
    check: Revision | None
    #: the fields the record lists that the writer's model does not declare, at their defaults
    undeclared: Mapping[str, Any]


def writer_view(context: Context, meta: HybridMeta, *, ensure: bool) -> View:
    """Return the view a create (``ensure``: the one :func:`ensure_recorded` made sure of, which
    keeps the writer's unmaintained keys out of ``ready``) or a delete plans from."""
    state = ensure_recorded(context, meta) if ensure else current_state(context, meta)
    revision = 0 if state.record is None else state.record.revision
    check = Revision(context.keys.schema(meta.name), revision) if revision >= 0 and (
        revision or state.record is None) else None
    return View(check, undeclared_defaults(state, meta))


def stale(context: Context, meta: HybridMeta) -> None:
    """A commit found the record changed since its view was read: read it again now."""
    current_state(context, meta, again=True)


def unique_owners(context: Context, meta: HybridMeta, stored: Document | None,
                  new: Document | None) -> dict[str, Entry | None]:
    """Return the ``owners`` :func:`~dal.objects.transaction.plan_write` checks: what is stored under the
    keys of the unique values ``new`` (None: a delete) gives up, of the properties whose keys the hybrid's
    record (as this process last read it) does not list as built; no store call for the others."""
    given_up = gives_up_unique(meta, stored, new)
    if stored is None or not given_up:
        return {}  # the usual save: no unique value changes
    record = current_state(context, meta).record
    built = record.unique if record is not None else frozenset()
    # a built key names its holder (the usual delete: deleted unread); the others are read
    return read_owners(context.persistent, [context.keys.unique(meta.name, name, stored[name])
                                            for name in given_up if name not in built])
