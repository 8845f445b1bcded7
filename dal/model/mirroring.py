"""How the metaclass reads a mirrored hybrid's ``__mirror``: checked, inherited, and its fields added.

A hybrid declaring ``__mirror = Mirror(...)`` (:class:`dal.structures.Mirror`) is mirrored from a
remote API; its subclasses inherit the mirror, and so do the hybrids deriving from an
``abstract=True`` base that declares it (as if each declared it). Its objects store, besides its
own fields, the mirror's (``info``, ``cached_at``, ``error``, ``ignore_cache``), which the
metaclass appends to its specs here. What a refresh does is :mod:`dal.mirror`'s business, above
the objects.
"""

from __future__ import annotations

import inspect
from typing import Any

from dal.exceptions import ConfigurationError
from dal.structures import MIRROR_FIELDS, MIRROR_NAMES, Mirror, Spec

#: the loaders a mirrored hybrid may define besides ``_refresh``, called on the class
CLASS_LOADERS = ("_refresh_many", "parse_persistent_info")


def mirror_of(cls: type, bases: tuple[type, ...], declared: object, own: dict[str, list[Any]],
               specs: list[Spec], abstract: bool = False) -> Mirror | None:
    """Return the hybrid's ``__mirror`` (declared, or inherited from a mirrored parent or abstract base),
    after checking it.

    A newly mirrored class gets the mirror fields appended to ``specs`` (an abstract base too: the
    hybrids deriving from it inherit them with its other specs). Refused: a ``__mirror`` that is
    not a ``Mirror``, a hybrid without a ``_refresh`` loader (an abstract base may leave it to
    them), ``_refresh_many`` or ``parse_persistent_info`` that is not a classmethod (or
    staticmethod), and fields or relations taking the names of the mirror's own (``info``,
    ``cached_at``, ``error``, ``ignore_cache``, ``stale``, ``refresh_info``).
    """
    inherited = next((mirror for base in bases if (mirror := _passed_on(base)) is not None), None)
    if declared is not None and not isinstance(declared, Mirror):
        raise ConfigurationError(f"{cls.__name__}.__mirror must be a Mirror(timeout, ...), not {declared!r}")
    mirror = declared if declared is not None else inherited
    if mirror is None:
        return None
    if not abstract and not callable(getattr(cls, "_refresh", None)):
        raise ConfigurationError(
            f"{cls.__name__} declares __mirror but has no loader; define `def _refresh(self): ...` returning "
            "this object's info from the remote (a JSON object)")
    _check_class_loaders(cls)
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


def _passed_on(base: type) -> Mirror | None:
    """Return the mirror ``base`` passes on: an abstract base's own record (read first: through
    inheritance it would also show a hybrid parent's ``_meta``), else a hybrid's ``_meta``'s."""
    if "_abstract_specs" in vars(base):
        return vars(base).get("_abstract_mirror")
    parent = getattr(base, "_meta", None)
    return None if parent is None else parent.mirror


def _check_class_loaders(cls: type) -> None:
    """Refuse ``_refresh_many`` or ``parse_persistent_info`` (own or inherited) written as a plain method:
    dal calls them on the class, where a plain method lacks its argument and every refresh would fail."""
    for name in CLASS_LOADERS:
        try:
            found = inspect.getattr_static(cls, name)
        except AttributeError:
            continue
        if isinstance(found, (classmethod, staticmethod)):
            continue
        owner = next((klass for klass in cls.__mro__ if name in vars(klass)), cls)
        shown = name if owner is cls else f"{name} (from {owner.__name__})"
        raise ConfigurationError(
            f"{cls.__name__}.{shown} must be a classmethod, not {found!r:.80}: dal calls it on the class "
            f"(`{cls.__name__}.{name}(...)`); write `@classmethod` above `def {name}(cls, ...)`")
