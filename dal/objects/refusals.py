"""What a save checks before it plans anything: the values changed since the object was loaded.

Assigning validates a value, but a list, a dict or a typed value (``list[float]``, a model) is the
object's own and can be changed in place afterwards, bypassing that. So a save refuses, naming
the field and writing nothing, a changed value JSON cannot store as it is, a typed value its type
no longer admits, and a mirrored object's ``info`` changed in place. And it does not take for a
change what only looks like one: a typed value whose declared type reads less than is stored (a
field of a nested model that a newer version of the model declares) keeps its stored form.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from dal.exceptions import InvalidValueError, ReadOnlyFieldError
from dal.objects.transaction import Document
from dal.structures import MirrorField
from dal.validators import Validator, json_advice, json_problem
from dal.values import FROZEN, safe_repr

if TYPE_CHECKING:
    from dal.model.meta import HybridMeta

#: the values a field may hold that can be changed in place, bypassing validation
_CONTAINERS = (list, dict)


def check_changed(label: str, meta: HybridMeta, data: Mapping[str, Any], new: Document,
                  changed: Collection[str]) -> None:
    """Refuse a changed list or dict that JSON cannot store as it is (NaN, a non-str key, a tuple, at
    any depth), and a changed typed value its type no longer admits."""
    if meta.converters:  # only changed typed fields that can change in place pay
        check_typed(label, data, [(name, check) for name, check in meta.converters
                                  if name in changed and changeable(data[name])])
    check_containers(label, new, changed)


def changeable(value: object) -> bool:
    """Return whether a typed value can be changed in place, bypassing its validation."""
    return not isinstance(value, FROZEN)


def check_containers(label: str, new: Document, changed: Iterable[str]) -> None:
    """Refuse a changed list or dict that JSON cannot store as it is (NaN, a non-str key, a tuple)."""
    for name in changed:
        value = new[name]
        if type(value) in _CONTAINERS:  # anything else was validated when assigned, or converted
            problem = json_problem(value, name)
            if problem:
                raise InvalidValueError(f"{unstorable(label, problem)}; {json_advice(value, problem)}")


def check_typed(label: str, data: Mapping[str, Any], converters: Iterable[tuple[str, Validator]]) -> None:
    """Validate typed values again, as assigning them does (their round trip included)."""
    for name, validator in converters:
        try:
            validator(data[name])
        except InvalidValueError as exc:
            raise InvalidValueError(
                f"{label}: {exc}; changed in place, it was not validated: assign a value of its declared "
                "type instead") from None


def check_mirror_fields(label: str, meta: HybridMeta, changed: Iterable[str]) -> None:
    """Refuse a mirrored object's ``info`` changed in place: only refreshes write the remote's answer."""
    touched = sorted(name for name in changed if isinstance(meta.properties.get(name), MirrorField))
    if touched:
        raise ReadOnlyFieldError(
            f"{label}: {', '.join(touched)} changed in place, but only refreshes from the remote write "
            "it; load the object again (or call refresh_info()) and change its own properties instead")


def check_datastore_wins(value: object, where: str) -> None:
    """Refuse a ``datastore_wins`` other than False, True or None: any other value (``"False"``, 0)
    would be taken for one of them, and a merge would keep the wrong side."""
    if value is not None and type(value) is not bool:
        raise InvalidValueError(
            f"{where}: datastore_wins is False (ours win), True (theirs win) or None (raise "
            f"ConcurrencyError), not {safe_repr(value)}")


def unstorable(label: str, problem: object) -> InvalidValueError:
    return InvalidValueError(
        f"{label} holds a value JSON cannot store ({problem}); a list or dict changed in place bypasses "
        "validation: assign JSON values only")
