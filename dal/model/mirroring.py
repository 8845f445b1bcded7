"""How the metaclass reads a mirrored hybrid's ``__mirror``: checked, inherited, and its fields added.

A hybrid declaring ``__mirror = Mirror(...)`` (:class:`dal.structures.Mirror`) is mirrored from a
remote API; its subclasses inherit the mirror. Its objects store, besides its own fields, the
mirror's (``info``, ``cached_at``, ``error``, ``ignore_cache``), which the metaclass appends to
its specs here. What a refresh does is :mod:`dal.mirror`'s business, above the objects.
"""

from __future__ import annotations

from typing import Any

from dal.exceptions import ConfigurationError
from dal.structures import MIRROR_FIELDS, MIRROR_NAMES, Mirror, Spec


def mirror_of(cls: type, bases: tuple[type, ...], declared: object, own: dict[str, list[Any]],
               specs: list[Spec]) -> Mirror | None:
    """Return the hybrid's ``__mirror`` (declared, or inherited from a mirrored parent), after checking it.

    A newly mirrored hybrid gets the mirror fields appended to ``specs``. Refused: a ``__mirror``
    that is not a ``Mirror``, one without a ``_refresh`` loader, and fields or relations taking
    the names of the mirror's own (``info``, ``cached_at``, ``error``, ``ignore_cache``, ``stale``,
    ``refresh_info``).
    """
    parents = [parent.mirror for base in bases if (parent := getattr(base, "_meta", None)) is not None]
    inherited = next((mirror for mirror in parents if mirror is not None), None)
    if declared is not None and not isinstance(declared, Mirror):
        raise ConfigurationError(f"{cls.__name__}.__mirror must be a Mirror(timeout, ...), not {declared!r}")
    mirror = declared if declared is not None else inherited
    if mirror is None:
        return None
    if not callable(getattr(cls, "_refresh", None)):
        raise ConfigurationError(
            f"{cls.__name__} declares __mirror but has no loader; define `def _refresh(self): ...` returning "
            "this object's info from the remote (a JSON object)")
    for optional in ("_refresh_many", "parse_persistent_info"):
        if optional in vars(cls) and not callable(getattr(cls, optional)):
            raise ConfigurationError(f"{cls.__name__}.{optional} must be a classmethod")
    mine = [spec.name for kind in own.values() for spec in kind
            if getattr(spec, "name", None) in MIRROR_NAMES]
    if inherited is None:  # the parent's fields, if any, were its own, not the mirror's
        mine += [spec.name for spec in specs if spec.name in MIRROR_NAMES]
    if mine:
        raise ConfigurationError(
            f"{cls.__name__} is mirrored, and a mirrored object has {', '.join(sorted(MIRROR_NAMES))} of its "
            f"own; rename {', '.join(sorted(set(mine)))}")
    if inherited is None:
        specs.extend(mirror.fields())
    assert all(name in {spec.name for spec in specs} for name in MIRROR_FIELDS)
    return mirror
