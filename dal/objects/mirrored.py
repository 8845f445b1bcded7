"""What objects need of the mirror (:mod:`dal.mirror`): the clock, staleness, and the hooks it installs.

A read of a stale mirrored object must refresh it from the remote, which is the mirror's work, a
layer above the objects (it lists objects with the query engine, and writes them). The objects
reach it only through this narrow interface: the mirror hands over its two entry points when it
is imported (:func:`provide`), as the query engine hands its list maker to the reverse accessors
(``dal.model.reverse``). ``import dal`` imports the mirror, so no object is read before they are
known.

What a refresh parses from the remote's answer (:func:`parsed`) lives here too: ``from_model``
compares a body's parsed properties with what its own ``info`` gives (:func:`shown_as_parsed`).

The clock lives here too, so that the staleness of an object (``obj.stale``) and every time the
mirror reads come from one place tests can replace: ``dal.mirror.clock`` is this object.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from dal.exceptions import ConfigurationError, InvalidValueError, MirrorError
from dal.structures import MIRROR_FIELDS
from dal.values import same


class Clock:
    """Where mirrored objects read the time: ``now()`` gives seconds since the epoch."""

    def now(self) -> float:
        return time.time()


#: the one clock of the mirror; tests replace its ``now``:
#: ``monkeypatch.setattr(dal.mirror.clock, "now", fake)``
clock = Clock()

#: called on the first read of a stored mirrored object by an instance (``DataObject._before_read``)
Hook = Callable[[Any], None]
_before_read: Hook | None = None
_refresh_now: Hook | None = None


def provide(before_read: Hook, refresh_now: Hook) -> None:
    """Install the mirror's entry points (:mod:`dal.mirror` calls this when it is imported)."""
    global _before_read, _refresh_now
    _before_read, _refresh_now = before_read, refresh_now


def before_read(obj: Any) -> None:
    """Let a stale mirrored object (and the stale ones loaded with it) refresh before it is read."""
    if _before_read is None:
        raise ConfigurationError("mirrored hybrids refresh through dal.mirror: import dal")
    _before_read(obj)


def refresh_now(obj: Any) -> None:
    """Refresh a mirrored object from its remote now, whether stale or not; raise MirrorError on failure."""
    if _refresh_now is None:
        raise ConfigurationError("mirrored hybrids refresh through dal.mirror: import dal")
    _refresh_now(obj)


# here, not in dal.mirror (a layer up), so that from_model can compare a body with what it parses to
def parsed(cls: Any, info: dict[str, Any]) -> dict[str, Any]:
    """Return ``cls.parse_persistent_info(info)`` validated like assignments, in stored (JSON) form.

    Raises MirrorError for a name that is not one of the hybrid's own properties (a relation, a
    mirror field, a typo), InvalidValueError for a value its property refuses, None for a
    mandatory one included: an assignment may leave it unset until a save, but a refresh writes
    it, and storing it would make the next unrelated save fail with MissingMandatoryFieldsError.
    """
    parse = getattr(cls, "parse_persistent_info", None)
    if parse is None:
        return {}
    found = parse(info)
    if not isinstance(found, Mapping):
        raise MirrorError(f"{cls.__name__}.parse_persistent_info returned {type(found).__name__}, not a dict "
                          "{property: value}")
    properties = cls._meta.properties
    result: dict[str, Any] = {}
    for name, value in found.items():
        prop = properties.get(name)
        if prop is None or name in MIRROR_FIELDS:
            known = ", ".join(sorted(set(properties) - set(MIRROR_FIELDS)))
            raise MirrorError(f"{cls.__name__}.parse_persistent_info returned {name!r}, which is not a "
                              f"property it may set; its properties: {known}")
        if value is None and prop.mandatory:
            raise InvalidValueError(f"{cls.__name__}.parse_persistent_info returned None for {name!r}, "
                                    "a mandatory property")
        result[name] = prop.validator.to_json(prop.validator(value))
    return result


def shown_as_parsed(cls: Any, values: Mapping[str, Any]) -> frozenset[str]:
    """Return the parsed properties of a body (``values``: a model's, by stored name) that hold what
    parsing the body's own ``info`` gives: the values the GET showed, which the client did not change.

    A refresh since the GET may have written others, with the ``info`` they come from; ``from_model``
    takes neither, so the two stay in step. Compared in stored (JSON) form. Empty when the body holds
    no ``info`` (never refreshed, or not sent), or one the parser cannot read (it raises): nothing
    to compare, and every value is taken as given; so is one its property refuses (assigning says why).
    """
    info = values.get("info")
    if not isinstance(info, dict):
        return frozenset()
    try:
        shown = parsed(cls, info)
    except Exception:  # whatever the hybrid's parser raises on an answer it was not given by a refresh
        return frozenset()
    properties = cls._meta.properties
    unchanged = set()
    for name, stored in shown.items():
        if name not in values:
            continue
        check = properties[name].validator
        try:
            given = check.to_json(check(values[name]))
        except Exception:  # refused: taken, and the assignment raises its own error
            continue
        if same(given, stored):
            unchanged.add(name)
    return frozenset(unchanged)
