"""Refreshing mirrored objects: the lazy refresh of a first read, ``refresh_info()``, and ``frozen()``.

:func:`refresh` is the one way objects refresh, lazily or in bulk: it takes each object's lock
(:mod:`dal.mirror.flight`), reads the stored documents again (another process may just have
refreshed them), asks the remote about those still due (``_refresh_many`` for several when the
hybrid defines it, else ``_refresh`` each), stores the answers or the failures
(:mod:`dal.mirror.store`), and brings the instances up to date. A remote failure never escapes
it: it is stored in ``error``, counted, and returned.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from dal.backends.base import Entry, TooLargeError
from dal.config import Context, current
from dal.exceptions import BackendError, DalError, MirrorError, ObjectNotFoundError, RaceConditionError
from dal.mirror import flight
from dal.mirror.store import WRITTEN_BY_REFRESH, adopt, parsed_names, store_answer, store_failure
from dal.objects import origin
from dal.objects.dataobject import DataObject
from dal.objects.mirrored import clock
from dal.objects.transaction import decode

log = logging.getLogger("dal.mirror")

#: what became of one object in a refresh
REFRESHED = "refreshed"   # the answer changed: info and the parsed properties were written
UNCHANGED = "unchanged"   # the same answer: cached_at advanced
FAILED = "failed"         # the remote failed, or its answer could not be stored: error written
FRESH = "fresh"           # no longer stale when its lock was taken: another process refreshed it
ELSEWHERE = "elsewhere"   # another process held its lock and refreshed it meanwhile, or stored its
                          # answer after this one read the object: nothing written here
GONE = "gone"             # deleted meanwhile: nothing written (a refresh never brings an object back)
#: longest error text stored
ERROR_LENGTH = 2000

_frozen: contextvars.ContextVar[bool] = contextvars.ContextVar("dal_mirror_frozen", default=False)
#: told True as each remote call (``_refresh``, ``_refresh_many``) starts, False as it ends
_watch: contextvars.ContextVar[Callable[[bool], None] | None] = contextvars.ContextVar(
    "dal_mirror_watch", default=None)


@dataclass(frozen=True)
class Result:
    """What became of one object in a refresh, and the failure's text and exception."""

    outcome: str
    error: str | None = None
    cause: BaseException | None = None


@contextlib.contextmanager
def frozen() -> Iterator[None]:
    """Serve stored data without refreshing, within the block (in this thread or task).

    Reads of stale objects neither call the remote nor mark the instance as checked, so the
    first read after the block still refreshes; ``refresh_info()`` and ``refresh_stale()``
    raise MirrorError inside it.
    """
    token = _frozen.set(True)
    try:
        yield
    finally:
        _frozen.reset(token)


@contextlib.contextmanager
def watched(watch: Callable[[bool], None]) -> Iterator[None]:
    """Within the block (in this thread or task), call ``watch(True)`` as each remote call starts
    and ``watch(False)`` as it ends, however it ends: the bulk refresher's heartbeat, which tells
    a remote that hangs from a pass that is only long.
    """
    token = _watch.set(watch)
    try:
        yield
    finally:
        _watch.reset(token)


@contextlib.contextmanager
def _calling() -> Iterator[None]:
    watch = _watch.get()
    if watch is None:
        yield
        return
    watch(True)
    token = _watch.set(None)  # a refresh the loader's own reads make is part of this call
    try:
        yield
    finally:
        _watch.reset(token)
        watch(False)


def is_frozen() -> bool:
    """Tell whether refreshes are frozen here (inside :func:`frozen`)."""
    return _frozen.get()


def before_read(obj: DataObject) -> None:
    """The read hook: on an instance's first read, refresh it if stale, with the stale ones loaded with it.

    Never raises for a failed refresh: the failure is stored in ``error`` (and logged when even
    that could not be stored), and the instance serves what it holds. An object loaded under another
    ``configure()`` serves what it holds, as inside :func:`frozen` (the current store lacks its
    document, or holds another copy: a refresh would ask the remote and write there); so do the
    members of its list still of another when one was loaded again here (``refresh()``).
    """
    if _frozen.get() or origin.loaded_elsewhere(obj, current()) is not None:
        return
    cls = type(obj)
    # without one bulk call, each object refreshes on its own first read (and its list is not looked at)
    together: list[DataObject] = (origin.siblings(obj) if has_bulk(cls) else []) or [obj]
    batch = [other for other in together if type(other) is cls and other._raw is not None
             and "_mirror_checked" not in other.__dict__]
    if not any(other is obj for other in batch):
        batch.append(obj)
    for other in batch:
        other.__dict__["_mirror_checked"] = True  # first: the loaders read attributes themselves
    stale = [other for other in batch if other.stale]
    if not stale:
        return
    try:
        refresh(stale)
    except DalError as exc:  # the durable or volatile store failed, not the remote
        current().stats.add(f"mirror.{cls._meta.name}.failures", len(stale))
        log.warning("could not refresh %d %s objects: %s", len(stale), cls.__name__, exc)


def refresh_now(obj: DataObject) -> None:
    """``obj.refresh_info()``: refresh it now, stale or not; raise MirrorError when that fails."""
    name = f"{type(obj).__name__} {obj.guid}"
    if _frozen.get():
        raise MirrorError(f"refresh_info() of {name} inside dal.mirror.frozen(): refreshes are frozen here")
    if obj._raw is None:
        raise MirrorError(f"{name} is not stored yet: save it before refreshing it from its remote")
    origin.check_write(name, obj, current())  # the remote's answer would be stored in the current store
    obj.__dict__["_mirror_checked"] = True
    result = refresh([obj], force=True)[obj.guid]
    if result.outcome == GONE:
        raise ObjectNotFoundError(f"{name} is no longer stored")
    if result.outcome == FAILED:
        raise MirrorError(f"refreshing {name} from its remote failed: {result.error}") from result.cause


def has_bulk(cls: type[DataObject]) -> bool:
    """Tell whether a mirrored hybrid defines ``_refresh_many``."""
    return callable(getattr(cls, "_refresh_many", None))


def refresh(objects: list[DataObject], *, force: bool = False, bulk: bool | None = None,
            ahead: float = 0.0, again: bool = False) -> dict[str, Result]:
    """Refresh objects of one mirrored hybrid, once across processes; return what became of each, by guid.

    Without ``force``, an object that is no longer due in the store is only brought up to date:
    due means stale ``ahead`` seconds from now (the bulk refresher looks ahead to its next pass).
    ``bulk``: ask through ``_refresh_many`` (default: when the hybrid has one and several are due).
    An object whose refresh another caller was making and that is still due once that one is
    done (its refresh failed) is reported FAILED with the error it stored; with ``again`` (the
    bulk refresher), it is refreshed here once more first.
    """
    context = current()
    cls = type(objects[0])
    mirror = cls._meta.mirror
    assert mirror is not None
    for obj in objects:  # before any remote call: each answer is stored in the current store
        origin.check_write(f"{cls.__name__} {obj.guid}", obj, context)
    owned: list[tuple[DataObject, flight.Lock]] = []
    held: list[DataObject] = []
    name = cls._meta.name
    for obj in objects:
        lock = flight.acquire(context, flight.lock_key(context, name, obj.guid), mirror.lock_timeout)
        if lock is None:
            held.append(obj)
        else:
            owned.append((obj, lock))
    try:
        results = _refresh_owned(context, [obj for obj, _ in owned], force, bulk, ahead)
    finally:
        for _, lock in owned:
            flight.release(context, lock)
    if held:
        context.stats.add(f"mirror.{name}.waits", len(held))
        results.update(_after_waiting(context, held, force, bulk, ahead, again))
    return results


def _after_waiting(context: Context, held: list[DataObject], force: bool, bulk: bool | None,
                   ahead: float, again: bool) -> dict[str, Result]:
    """Wait for the refreshes other callers hold; adopt what they stored, refresh the rest here."""
    cls = type(held[0])
    name = cls._meta.name
    mirror = cls._meta.mirror
    assert mirror is not None
    results: dict[str, Result] = {}
    deadline = time.monotonic() + mirror.lock_timeout
    late: list[tuple[DataObject, flight.Lock | None]] = []
    try:  # a lock taken over in the loop is released too when a read of a later object fails
        for obj in held:
            key = flight.lock_key(context, name, obj.guid)
            lock = flight.wait(context, key, mirror.lock_timeout, deadline)
            if force or lock is not None:
                # its holder died or took too long, or a refresh is demanded: ask ourselves
                late.append((obj, lock))
                continue
            entry = context.load_document(name, obj.guid)
            if entry is None:
                results[obj.guid] = Result(GONE)
                continue
            document = cls._meta.with_defaults(decode(entry.value))
            due = mirror.stale(document["cached_at"], document["ignore_cache"], clock.now() + ahead)
            if due and again:
                # the holder's refresh failed (or stored nothing): the bulk refresher tries once more
                # itself rather than count it as refreshed; a caller still holding it is left to it
                lock = flight.acquire(context, key, mirror.lock_timeout)
                if lock is not None:
                    late.append((obj, lock))
                    continue
            adopt(obj, entry, parsed_names(cls, document["info"]))
            error = document["error"]
            # still due with an error: the holder's refresh failed, and so did this caller's wait
            results[obj.guid] = Result(FAILED, error) if due and error else Result(ELSEWHERE)
        if late:
            results.update(_refresh_owned(context, [obj for obj, _ in late], force, bulk, ahead))
    finally:
        for _, lock in late:
            if lock is not None:
                flight.release(context, lock)
    return results


def _refresh_owned(context: Context, objects: list[DataObject], force: bool,
                   bulk: bool | None, ahead: float) -> dict[str, Result]:
    """Refresh objects whose locks this caller holds (or that no lock guards)."""
    if not objects:
        return {}
    cls = type(objects[0])
    meta = cls._meta
    mirror = meta.mirror
    assert mirror is not None
    keys = {context.keys.doc(meta.name, obj.guid): obj for obj in objects}
    entries = context.persistent.get_many(list(keys))  # exact: another process may just have refreshed
    results: dict[str, Result] = {}
    due: list[tuple[DataObject, Entry]] = []
    due_by = clock.now() + ahead
    for key, obj in keys.items():
        entry = entries.get(key)
        if entry is None:
            results[obj.guid] = Result(GONE)
            continue
        document = meta.with_defaults(decode(entry.value))
        if not force and not mirror.stale(document["cached_at"], document["ignore_cache"], due_by):
            adopt(obj, entry, parsed_names(cls, document["info"]))
            results[obj.guid] = Result(FRESH)
            continue
        due.append((obj, entry))
    if not due:
        return results
    fetched_at = float(clock.now())  # cached_at is a float, whatever a fake clock returns
    in_bulk = bulk if bulk is not None else len(due) > 1 and has_bulk(cls)
    answers = _ask_remote(context, [obj for obj, _ in due], in_bulk)
    loader = "_refresh_many" if in_bulk else "_refresh"
    for obj, entry in due:
        results[obj.guid] = _store(context, obj, entry, answers[obj.guid], fetched_at, loader)
    return results


def _store(context: Context, obj: DataObject, entry: Entry, answer: Any, fetched_at: float,
           loader: str) -> Result:
    """Store one answer (or the failure it is), which ``loader`` returned, and bring ``obj`` up to date;
    return what became of it."""
    label = f"mirror.{obj._meta.name}."
    if not isinstance(answer, BaseException):
        try:
            stored = store_answer(context, obj, answer, fetched_at, entry, loader)
        except TooLargeError as exc:  # the store refused this answer's size (etcd): it always will
            answer = exc
        except BackendError:
            # the store failed, not the answer: the caller counts it once (a read) or raises it
            raise
        except Exception as exc:  # the answer cannot be stored: its shape, a refused value, a parser error
            answer = exc
        else:
            if stored.entry is None:
                return Result(GONE)
            adopt(obj, stored.entry, stored.fields)
            if stored.superseded:
                return Result(ELSEWHERE)
            outcome = REFRESHED if stored.changed else UNCHANGED
            context.stats.add(label + outcome)
            return Result(outcome)
    text = describe(answer)
    context.stats.add(label + "failures")
    context.stats.add("mirror_failures")
    log.info("refreshing %s %s failed: %s", type(obj).__name__, obj.guid, text)
    try:
        failure = store_failure(context, obj, text, entry)
    except RaceConditionError:  # the document still keeps changing: its failure goes unrecorded
        return Result(FAILED, text, answer)
    if failure.entry is None:
        return Result(GONE)
    adopt(obj, failure.entry, failure.fields if failure.superseded else WRITTEN_BY_REFRESH)
    # another refresh stored its answer since this one read the object: this failure tells nothing newer
    return Result(ELSEWHERE) if failure.superseded else Result(FAILED, text, answer)


def _ask_remote(context: Context, objects: list[DataObject], bulk: bool) -> dict[str, Any]:
    """Return each object's answer from the remote, by guid: its info, or the exception it raised."""
    cls = type(objects[0])
    label = f"mirror.{cls._meta.name}."
    stats = context.stats
    started = time.perf_counter()
    answers: dict[str, Any] = {}
    try:
        if bulk:
            stats.add(label + "remote_calls")
            try:
                with _calling():
                    found = cls._refresh_many(objects)  # type: ignore[attr-defined]
            except Exception as exc:
                return {obj.guid: exc for obj in objects}
            if not isinstance(found, Mapping):
                wrong = MirrorError(f"{cls.__name__}._refresh_many returned {type(found).__name__}, "
                                    "not a dict {guid: info}")
                return {obj.guid: wrong for obj in objects}
            for obj in objects:
                answers[obj.guid] = found[obj.guid] if obj.guid in found else MirrorError(
                    f"{cls.__name__}._refresh_many returned no info for {obj.guid}")
            return answers
        for obj in objects:
            stats.add(label + "remote_calls")
            try:
                with _calling():
                    answers[obj.guid] = obj._refresh()  # type: ignore[attr-defined]
            except Exception as exc:
                answers[obj.guid] = exc
        return answers
    finally:
        stats.add(label + "remote_seconds", time.perf_counter() - started)


def describe(error: BaseException) -> str:
    """Return the text ``error`` stores for a failure: the exception's type and message.

    Never raises, and always returns storable text: a loader's message can hold a lone surrogate
    (bytes decoded with ``surrogateescape``), which no store can encode, and an exception's
    ``__str__`` can itself raise; either would otherwise escape into the attribute read.
    """
    name = type(error).__name__
    try:
        message = str(error)
    except Exception:  # its __str__ is broken: its repr, else its type alone
        try:
            message = repr(error)
        except Exception:
            message = ""
    text = f"{name}: {message}" if message else name
    # a lone surrogate becomes its \udcff escape: the text stays readable and UTF-8 can hold it
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text if len(text) <= ERROR_LENGTH else text[:ERROR_LENGTH - 3] + "..."

