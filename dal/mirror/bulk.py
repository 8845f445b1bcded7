"""Refreshing every stale object of a mirrored hybrid: what ``dal refresh`` runs.

:func:`refresh_stale` finds the stale objects of one hybrid (reading the stored documents: no
remote call), then refreshes them in batches, each through one ``_refresh_many`` call when the
hybrid defines it (else ``_refresh`` per object), with the same single flight and storage as a
lazy refresh (:func:`dal.mirror.refresh.refresh`). A failing object or remote never stops it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from dal.config import current
from dal.exceptions import ConfigurationError, MirrorError
from dal.mirror.refresh import ELSEWHERE, FAILED, FRESH, REFRESHED, UNCHANGED, has_bulk, is_frozen, refresh
from dal.model.registry import hybrids
from dal.objects.dataobject import DataObject
from dal.objects.mirrored import clock
from dal.query.datalist import DataList
from dal.structures import GUID_RULE, is_guid


@dataclass(frozen=True)
class RefreshReport:
    """What :func:`refresh_stale` did.

    ``total``: due objects found (stale, or stale within the look-ahead); ``refreshed``: written
    with a changed answer; ``unchanged``:
    the same answer (only ``cached_at`` advanced), or refreshed by another process meanwhile;
    ``failed``: guid -> error text. Objects deleted meanwhile count in ``total`` only.
    """

    total: int
    refreshed: int
    unchanged: int
    failed: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Whether no refresh failed."""
        return not self.failed


def mirrored_hybrids() -> list[type[DataObject]]:
    """Return every registered hybrid that declares ``__mirror``, sorted by logical name."""
    return [cls for cls in hybrids.all() if cls._meta.mirror is not None]


def stale_guids(hybrid: type[DataObject], ahead: float = 0.0) -> list[str]:
    """Return the guids of the objects of ``hybrid`` stale ``ahead`` seconds from now, in stored order.

    No remote call. ``ahead`` > 0 also lists the objects that will go stale within it (the bulk
    refresher's look-ahead: those would time out before its next pass).
    """
    mirror = _mirror_of(hybrid)._meta.mirror
    assert mirror is not None
    due_by = clock.now() + _look_ahead(ahead)
    # the stored fields only: reading a property of a stale object would refresh it
    return [obj.guid for obj in DataList(hybrid)
            if mirror.stale(obj._data["cached_at"], obj._data["ignore_cache"], due_by)]


def stale_count(hybrid: type[DataObject]) -> int:
    """Return how many objects of ``hybrid`` are stale now."""
    return len(stale_guids(hybrid))


def refresh_stale(hybrid: type[DataObject], *, batch_size: int = 100,
                  progress: Callable[[int], None] | None = None,
                  guids: Sequence[str] | None = None, ahead: float = 0.0) -> RefreshReport:
    """Refresh every stale object of ``hybrid`` in the configured context, ``batch_size`` at a time.

    ``progress(n)`` is called after each batch with the number of objects done so far.
    ``ahead``: also refresh the objects that will be stale within that many seconds (the bulk
    refresher's look-ahead to its next pass; 0: only those stale now).
    ``guids``: the due guids when the caller has just listed them (:func:`stale_guids`, with
    the same ``ahead``), so that they are not listed twice: a list of guids (ConfigurationError
    otherwise), a guid given twice counted and refreshed once. Every argument is checked before
    the first batch. Never raises for a remote failure (see the report's ``failed``); MirrorError
    inside :func:`dal.mirror.frozen`.
    """
    _mirror_of(hybrid)
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ConfigurationError(f"refresh_stale: batch_size must be a positive int, not {batch_size!r}")
    if progress is not None and not callable(progress):
        raise ConfigurationError(f"refresh_stale: progress must be None or a callable taking the number of "
                                 f"objects done, not {progress!r:.80}")
    if is_frozen():
        raise MirrorError("refresh_stale() inside dal.mirror.frozen(): refreshes are frozen here")
    ahead = _look_ahead(ahead)
    guids = stale_guids(hybrid, ahead) if guids is None else _guid_list(guids)
    refreshed = unchanged = 0
    failed: dict[str, str] = {}
    bulk = has_bulk(hybrid)
    done = 0
    for start in range(0, len(guids), batch_size):
        batch = guids[start:start + batch_size]
        objects = list(hybrid._load_many(batch).values())
        for obj in objects:
            obj.__dict__["_mirror_checked"] = True  # the loaders' own reads must not refresh again
        # again: an object whose refresh another caller made meanwhile and failed is tried here too
        results = refresh(objects, bulk=bulk, ahead=ahead, again=True) if objects else {}
        for guid, result in results.items():
            if result.outcome == REFRESHED:
                refreshed += 1
            elif result.outcome in (UNCHANGED, FRESH, ELSEWHERE):
                unchanged += 1
            elif result.outcome == FAILED:
                failed[guid] = result.error or "failed"
        done += len(batch)
        if progress is not None:
            progress(done)
    current().stats.add(f"mirror.{hybrid._meta.name}.bulk_runs")
    return RefreshReport(len(guids), refreshed, unchanged, failed)


def _guid_list(guids: object) -> list[str]:
    """Return ``guids`` as a list without repeats (an object counts and refreshes once); refuse the rest."""
    # a str is a sequence too: "abc" would be refreshed as three guids "a", "b", "c"
    if isinstance(guids, (str, bytes)) or not isinstance(guids, Sequence):
        raise ConfigurationError(f"refresh_stale: guids must be a list of guids (str), not {guids!r:.80}")
    for guid in guids:
        if not is_guid(guid):  # a typo would be counted as an object deleted meanwhile
            raise ConfigurationError(f"refresh_stale: each of guids must be a guid, not {guid!r:.80}: "
                                     f"{GUID_RULE}")
    return list(dict.fromkeys(guids))


def _look_ahead(ahead: float) -> float:
    if (not isinstance(ahead, (int, float)) or isinstance(ahead, bool) or not math.isfinite(ahead)
            or ahead < 0):
        raise ConfigurationError(f"look-ahead must be a finite number of seconds >= 0, not {ahead!r}")
    return float(ahead)


def _mirror_of(hybrid: type[DataObject]) -> type[DataObject]:
    if not (isinstance(hybrid, type) and issubclass(hybrid, DataObject)) or hybrid._meta.mirror is None:
        raise ConfigurationError(
            f"{hybrid!r} is not a mirrored hybrid (a DataObject subclass declaring __mirror)")
    return hybrid
