"""A field's value as stored and as this version of the model reads it: whether two spellings are one value.

A document stored by an earlier version or another client may spell a value otherwise than this version
writes it: a set in another order, ints in a list since widened to floats, a datetime ending ``+00:00``
rather than ``Z``. Read with the declared type and written again, both spell it alike, so a save, a
merge, a ``from_model()`` round trip, a mirror's refresh and a dynamic's owner tell what changed as
read (:func:`unchanged`, :func:`edited_fields`). A read that drops part of a value (a newer model's
nested field) is no proof of equality: such a value is compared as spelt. Only typed fields pay a read.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from dal.exceptions import InvalidValueError
from dal.model.meta import HybridMeta
from dal.model.validation import dropped_paths
from dal.validators import Validator
from dal.values import safe_repr, same

Document = dict[str, Any]


def unchanged(check: Validator | None, value: Any, stored: Any, *, theirs: bool = False) -> bool:
    """Tell whether ``value`` (a field's JSON form) is the field's stored value ``stored``, as stored or, for
    a typed field (``check``), as this version reads and writes it: a set an earlier version stored in
    another order, ints in a list since widened to floats, a datetime ending ``+00:00`` (the value
    everyone loads) are no change, though a save writes them in this version's spelling.

    ``value`` is this object's own, written by this version, unless ``theirs``: another writer's, which
    may be spelt otherwise too, so it is read as well. Equal as read counts only when neither read drops
    part of its value (a newer model's nested field): then the spellings are compared as they are."""
    if same(value, stored):
        return True
    if check is None:
        return False
    try:
        old = check.to_json(check.from_json(stored))
        new = check.to_json(check.from_json(value)) if theirs else value
    except (TypeError, ValueError):  # no longer reads: a load refuses it, any value differs
        return False
    return same(new, old) and not dropped_paths(stored, old) and not (theirs and dropped_paths(value, new))


def edited_fields(meta: HybridMeta, original: Document, ours: Document,
                  changed: Collection[str]) -> list[str]:
    """Return the fields of ``changed`` (those found differing from the stored document ``original`` as
    spelt) that this object changed: differing from it as read too (:func:`unchanged`; a field
    ``original`` lacks reads as its default). Only the typed fields pay a read."""
    before, typed = meta.with_defaults(original), meta.typed
    return [name for name in changed
            if name not in ours or not unchanged(typed.get(name), ours[name], before.get(name))]


def read_stored(label: str, name: str, check: Validator, value: Any, *, taken: bool = False) -> Any:
    """Return ``value``, the stored JSON form of the typed field ``name``, read with its type ``check``;
    when it no longer fits that type, InvalidValueError saying so as a load does (never pydantic's own
    error). ``taken``: a merge took it from another writer's document and nothing was written; otherwise
    the document holding it was just committed."""
    try:
        return check.from_json(value)
    except (TypeError, ValueError) as exc:  # pydantic's ValidationError is a ValueError
        if taken:
            raise InvalidValueError(
                f"{label}: another writer stored {name} as {safe_repr(value)} while this object was being "
                "saved, which no longer fits its declared type (another version of the model wrote it?); "
                "nothing was written: migrate the stored data or widen the type") from exc
        raise InvalidValueError(
            f"{label} was saved, but the stored value of {name} no longer fits its declared type: "
            f"{safe_repr(value)}; migrate the stored data or widen the type, then load the object "
            "again") from exc
