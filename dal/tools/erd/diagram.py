"""The neutral description of a diagram: entities, their attributes, the links between them.

Everything is read from ``Cls._meta``; nothing parses source. Each output format
(:mod:`dal.tools.erd.formats`) only writes this description out, so they all show the same
model. It is deterministic: entities sorted by name, attributes in declaration order, links sorted,
the items of a set shown as a default sorted.
"""

from __future__ import annotations

import importlib
import itertools
import pkgutil
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any, Literal

from dal.exceptions import ConfigurationError, DalError
from dal.model.registry import ambiguous
from dal.model.registry import hybrids as registry

if TYPE_CHECKING:
    from dal.objects.dataobject import DataObject


@dataclass(frozen=True)
class Attribute:
    """One row of an entity: its guid, a property, a relation (its stored guid) or a dynamic."""

    kind: Literal["guid", "property", "relation", "dynamic"]
    name: str
    type: str
    mandatory: bool = False
    unique: bool = False
    indexed: bool = False
    default: str | None = None  # repr() of the default, sets sorted; None when there is none
    values: tuple[str, ...] = ()  # an enum's allowed values, as repr()
    timeout: float | None = None  # a dynamic's TTL in seconds
    locked: bool = False

    @property
    def keys(self) -> tuple[str, ...]:
        """Return the key marks: PK (the guid), FK (a relation), UK (unique)."""
        marks = {"guid": ("PK",), "relation": ("FK",)}.get(self.kind, ())
        return marks + (("UK",) if self.unique else ())

    def notes(self) -> list[str]:
        """Return what the key marks and the type do not say, in words."""
        if self.kind == "guid":
            return []
        if self.kind == "dynamic":
            ttl = "never cached" if not self.timeout else f"ttl {_number(self.timeout)}s"
            return ["dynamic", ttl] + (["locked"] if self.locked else [])
        notes = ["mandatory" if self.mandatory else "optional"]
        if self.indexed:
            notes.append("indexed")
        if self.values:
            notes.append("one of " + ", ".join(self.values))
        if self.default is not None:
            notes.append(f"default {self.default}")
        return notes


@dataclass(frozen=True)
class Entity:
    """A hybrid as drawn. ``external``: not selected, drawn only because a selected relation points at it."""

    id: str
    hybrid: str
    attributes: tuple[Attribute, ...] = ()
    junction: bool = False
    external: bool = False
    #: a mirrored hybrid's schedule in words (``"timeout 600s, refresh every 300s"``); None: not mirrored
    mirror: str | None = None


@dataclass(frozen=True)
class Link:
    """A relation ``source.name`` -> ``target`` + reverse accessor, or a many-to-many via a junction."""

    kind: Literal["many-to-one", "one-to-one", "many-to-many"]
    source: str
    target: str
    name: str  # the relation's name, or the junction's id for a many-to-many
    reverse: str | None = None
    mandatory: bool = False

    @property
    def label(self) -> str:
        if self.kind == "many-to-many":
            return f"many-to-many via {self.name}"
        return self.name if self.reverse is None else f"{self.name} / {self.reverse}"


@dataclass(frozen=True)
class Diagram:
    entities: tuple[Entity, ...]
    links: tuple[Link, ...]


# --- choosing hybrids ----------------------------------------------------------------------


def hybrids_in(modules: Iterable[str]) -> list[type[DataObject]]:
    """Return the registered hybrids declared in these modules or their submodules, or in their ``__all__``.

    The modules are imported, a package with all its submodules (as ``dal --hybrids`` imports
    them: its ``__init__`` need not import them). The registry is process-wide, so this is how a
    caller draws one model and not every hybrid some other import happened to register; a
    hybrid a module merely imports is not its own unless its ``__all__`` re-exports it (what
    else ``__all__`` exports, a dict of settings, a function, is no hybrid and is left out).
    """
    names = [name.strip() for name in modules if name.strip()]
    exported: set[int] = set()  # by identity: an exported value need not be hashable
    for name in names:
        module = _import(name)
        exported.update(id(getattr(module, item, None)) for item in getattr(module, "__all__", ()))
        for found in pkgutil.walk_packages(getattr(module, "__path__", []), prefix=f"{name}."):
            _import(found.name)
    return [cls for cls in registry.all()
            if id(cls) in exported or any(cls.__module__ == n or cls.__module__.startswith(f"{n}.")
                                          for n in names)]


def _import(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except DalError:
        raise
    except Exception as exc:  # anything a module raises on import: a typo in its name, a bug in it
        raise DalError(f"cannot import hybrids module {name!r}: {type(exc).__name__}: {exc}; check its "
                       "name") from exc


def select(hybrids: Iterable[type[DataObject]], only: Iterable[str]) -> list[type[DataObject]]:
    """Return the hybrids named in ``only`` (class or logical names).

    A logical name is exact; a class name must be that of one hybrid only. Raise DalError naming
    the unknown names, or the logical names a shared class name could mean.
    """
    candidates = list(hybrids)
    by_class: dict[str, list[type[DataObject]]] = {}
    for cls in candidates:
        by_class.setdefault(cls.__name__, []).append(cls)
    # a logical name wins over a class name, as in the registry
    by_name = by_class | {cls._meta.name: [cls] for cls in candidates}
    wanted = [name.strip() for name in only if name.strip()]
    if not wanted:
        raise DalError("no hybrid selected; name at least one (class or logical name), e.g. --only Disk,Pool")
    unknown = [name for name in wanted if name not in by_name]
    if unknown:
        raise DalError(f"no hybrid named {', '.join(unknown)} among those drawn; known: "
                       f"{', '.join(sorted(_known(by_class))) or 'none'}")
    shared = [ambiguous(name, by_name[name]) for name in wanted if len(by_name[name]) > 1]
    if shared:
        raise DalError("; ".join(shared))
    chosen = {by_name[name][0] for name in wanted}
    return [cls for cls in candidates if cls in chosen]


def _known(by_class: dict[str, list[type[DataObject]]]) -> list[str]:
    """Return the name to give for each hybrid: its class name, or its logical name if that is shared."""
    return [name if len(found) == 1 else cls._meta.name for name, found in by_class.items() for cls in found]


# --- the neutral description ---------------------------------------------------------------


def diagram(hybrids: Iterable[type[DataObject]] | None = None) -> Diagram:
    """Describe ``hybrids`` (default: every registered hybrid) as entities and links."""
    chosen = sorted(set(registry.all() if hybrids is None else hybrids), key=lambda cls: cls._meta.name)
    if not chosen:
        raise DalError("no hybrids to draw; import the modules that declare them (dal erd --hybrids MODULE)")
    for cls in chosen:
        for relation in cls._meta.relations.values():
            if relation.target is None:  # not declared yet, or an abstract base: the registry says which
                raise ConfigurationError(registry.undeclared(relation, " (dal erd --hybrids MODULE,...)"))
    targets = {r.target for cls in chosen for r in cls._meta.relations.values()}
    drawn = chosen + sorted((t for t in targets if t is not None and t not in chosen),
                            key=lambda cls: cls._meta.name)
    ids = _ids(drawn)
    entities = [_entity(cls, ids, external=cls not in chosen) for cls in drawn]
    links = [link for cls in chosen for link in _links(cls, ids)]
    for entity, cls in zip(entities, drawn, strict=True):
        if entity.junction:
            links.extend(_many_to_many(cls, ids))
    return Diagram(tuple(sorted(entities, key=lambda e: e.id)),
                   tuple(sorted(links, key=lambda link: (link.kind == "many-to-many", link.source,
                                                         link.name, link.target))))


def is_junction(cls: type[DataObject]) -> bool:
    """Return whether ``cls`` joins other hybrids many-to-many.

    A junction has two or more mandatory many-to-one relations to other hybrids: it cannot
    exist without both ends. Optional and self relations do not count, so a Disk that
    belongs to a node and maybe to a pool and maybe to a parent disk is no junction.
    """
    return len(_joined(cls)) >= 2


def _joined(cls: type[DataObject]) -> list[type[DataObject]]:
    """Return the targets of the relations that make ``cls`` a junction, if it has two or more."""
    return [r.target for r in cls._meta.relations.values()
            if r.target is not None and r.mandatory and not r.onetoone and r.target is not cls]


def _ids(drawn: Sequence[type[DataObject]]) -> dict[type[DataObject], str]:
    """Name each entity by its class; classes sharing a name are told apart by their logical names.

    Made-up names can still clash (logical names ``a-b`` and ``a_b`` both give ``Disk_a_b``,
    and so does a class really named ``Disk_a_b``), and Graphviz and Mermaid would draw the
    two as one box: a clashing id gets a suffix ``_2``, ``_3``... that no other entity wants.
    A class's own name wins over a made-up one, then logical names decide, so the ids do not
    depend on the order the hybrids were given in.
    """
    count = Counter(cls.__name__ for cls in drawn)
    wanted = {cls: cls.__name__ if count[cls.__name__] == 1
              else f"{cls.__name__}_{re.sub(r'[^A-Za-z0-9_]', '_', cls._meta.name)}" for cls in drawn}
    reserved, taken = set(wanted.values()), set[str]()
    ids: dict[type[DataObject], str] = {}
    for cls in sorted(drawn, key=lambda cls: (wanted[cls] != cls.__name__, cls._meta.name,
                                               cls.__module__, cls.__qualname__)):
        name, suffix = wanted[cls], 1
        while name in taken or (suffix > 1 and name in reserved):
            suffix += 1
            name = f"{wanted[cls]}_{suffix}"
        ids[cls] = name
        taken.add(name)
    return ids


def _entity(cls: type[DataObject], ids: dict[type[DataObject], str], *, external: bool) -> Entity:
    meta = cls._meta
    if external:
        return Entity(ids[cls], meta.name, external=True)
    rows = [Attribute("guid", "guid", "str", mandatory=True)]
    for prop in meta.properties.values():
        enum = isinstance(prop.property_type, (list, tuple))
        rows.append(Attribute(
            "property", prop.name, _type_label(prop.property_type), mandatory=prop.mandatory,
            unique=prop.unique, indexed=prop.indexed,
            default=None if prop.default is None else _stable_repr(prop.default),
            values=tuple(repr(value) for value in prop.property_type) if enum else ()))
    for relation in meta.relations.values():
        assert relation.target is not None
        rows.append(Attribute("relation", relation.name, ids[relation.target], mandatory=relation.mandatory))
    for dynamic in meta.dynamics.values():
        rows.append(Attribute("dynamic", dynamic.name, _type_label(dynamic.return_type),
                              timeout=dynamic.timeout, locked=dynamic.locked))
    return Entity(ids[cls], meta.name, tuple(rows), junction=is_junction(cls), mirror=mirror_note(cls))


def _stable_repr(value: Any) -> str:
    """Return ``repr(value)`` with the items of every set and frozenset sorted (nested ones too): their
    order follows the hash of str and bytes, which differs per process (``PYTHONHASHSEED``)."""
    if type(value) in (set, frozenset) and value:
        items = "{" + ", ".join(sorted(_stable_repr(item) for item in value)) + "}"
        return items if type(value) is set else f"frozenset({items})"
    if type(value) is list:
        return "[" + ", ".join(_stable_repr(item) for item in value) + "]"
    if type(value) is tuple:
        return "(" + ", ".join(_stable_repr(item) for item in value) + ("," if len(value) == 1 else "") + ")"
    if type(value) is dict:
        pairs = (f"{_stable_repr(key)}: {_stable_repr(item)}" for key, item in value.items())
        return "{" + ", ".join(pairs) + "}"
    return repr(value)


def mirror_note(cls: type[DataObject]) -> str | None:
    """Return how a mirrored hybrid follows its remote, in words; ``None`` when it is not mirrored."""
    mirror = cls._meta.mirror
    if mirror is None:
        return None
    note = f"timeout {_number(mirror.timeout)}s"
    if mirror.refresh_every is not None:
        note += f", refresh every {_number(mirror.refresh_every)}s"
    return note


def _links(cls: type[DataObject], ids: dict[type[DataObject], str]) -> list[Link]:
    links = []
    for relation in cls._meta.relations.values():
        target = relation.target
        assert target is not None
        reverse = target._meta.reverse.get(relation.foreign_key)
        # an inherited relation leaves the reverse accessor with the class that declared it
        accessor = relation.foreign_key if reverse is not None and reverse.source is cls else None
        links.append(Link("one-to-one" if relation.onetoone else "many-to-one", ids[cls], ids[target],
                          relation.name, accessor, relation.mandatory))
    return links


def _many_to_many(junction: type[DataObject], ids: dict[type[DataObject], str]) -> list[Link]:
    ends = sorted(ids[target] for target in _joined(junction))
    # two relations to the same hybrid (person and reviewer) join it to itself once, and to each
    # other end once: a pair is one link however many relations lead to it
    pairs = sorted(set(itertools.combinations(ends, 2)))
    return [Link("many-to-many", a, b, ids[junction]) for a, b in pairs]


def _type_label(declared: Any) -> str:
    if isinstance(declared, (list, tuple)):
        return "enum"
    if isinstance(declared, type) and getattr(declared, "__origin__", None) is None:
        return declared.__name__
    return re.sub(r"\b(typing|datetime|decimal|uuid|pathlib)\.", "", repr(declared))


def _number(seconds: float) -> str:
    return str(int(seconds)) if float(seconds).is_integer() else str(seconds)
