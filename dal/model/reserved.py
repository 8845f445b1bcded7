"""The names a hybrid's specs may not take: those its objects and dal's own classes already use; and the
names its own classes define, which no relation's reverse accessor may replace."""

from __future__ import annotations

from dal.exceptions import InvalidValueError
from dal.structures import Dynamic, RelationGuid, Spec

#: what the metaclass sets on a hybrid besides its specs: not the hybrid's own definitions
_MADE_BY_DAL = frozenset({"_meta", "_declared", "_abstract_specs", "_abstract_mirror"})

#: attribute names a hybrid's specs may not take, because objects already use them; check_name refuses
#: every public member of dal's classes a hybrid derives from as well (``model``, ``where``...),
#: read from the class itself, so a member DataObject gains later is refused too
RESERVED = frozenset({
    "guid", "save", "delete", "refresh", "export", "serialize", "invalidate_dynamics",
    "updated_on_datastore",
})


def check_name(cls: type, spec: Spec) -> None:
    """Raise InvalidValueError when ``spec`` of hybrid ``cls`` takes a name dal uses itself."""
    if spec.name in RESERVED or spec.name in public_names(cls):  # the spec would replace the member
        raise InvalidValueError(
            f"{cls.__name__}: {spec.name!r} is reserved by DataObject; choose another name")
    if isinstance(spec, Dynamic) and f"_{spec.name}" in _internal_names(cls):
        # the loader would replace a method dal calls itself (or, left out, dal's method would be
        # taken for the loader): saves or loads would break far from here
        raise InvalidValueError(
            f"{cls.__name__}: Dynamic {spec.name!r} needs a loader named _{spec.name}, a name "
            "DataObject uses itself; choose another name for the dynamic")


def public_names(cls: type) -> frozenset[str]:
    """Return the public attribute names dal's own classes give ``cls`` (DataObject's ``get``,
    ``model``, ``to_model``, ``stale``...): read from the class, not listed, so they never drift (a
    list here could not import DataObject to check itself: the model lies below the objects)."""
    return frozenset(name for name in _internal_names(cls) if not name.startswith("_"))


def _internal_names(cls: type) -> frozenset[str]:
    """Return the attribute names dal's own classes give ``cls`` and its objects (annotated): DataObject
    and what it is made of, not hybrids (the sample model's included), whose loaders a subclass may
    override."""
    return frozenset(name for klass in cls.__mro__[1:]
                     if klass.__module__.startswith("dal.") and "_meta" not in vars(klass)
                     for name in (*vars(klass), *vars(klass).get("__annotations__", {})))


def defined_by(cls: type, *, installed: tuple[type, ...] = ()) -> dict[str, type]:
    """Return the names the hybrid ``cls`` and its bases below dal's own classes define themselves
    (methods, properties, class attributes), each with the class that defines it (the nearest).

    Not what dal puts there: specs, ``<relation>_guid``, its own markers, and values of the types
    ``installed`` (the reverse accessors relations install, which the registry checks itself).
    """
    defined: dict[str, type] = {}
    for klass in reversed(cls.__mro__):
        if klass is object or (klass.__module__.startswith("dal.") and "_meta" not in vars(klass)):
            continue  # dal's own classes: public_names and RESERVED name theirs
        for name, value in vars(klass).items():
            made = isinstance(value, (Spec, RelationGuid, *installed)) or name in _MADE_BY_DAL
            if made or (name.startswith("__") and name.endswith("__")):
                defined.pop(name, None)  # a nearer class's spec replaces a base's method of that name
            else:
                defined[name] = klass
    return defined
