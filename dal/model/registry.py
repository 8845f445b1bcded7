"""The registry of hybrids and the reverse accessors their relations install on each other.

A relation may name its target before that class exists (a string): it waits in the registry
until a hybrid of that name registers, and is then linked, which installs the reverse accessor on
the target. A class name several hybrids share names the one of the module nearest the relation's
own (the longest common dotted prefix: the same module first), and a nearer one declared later
takes the relation over (see :meth:`Registry.register`). Registration is all or nothing: a class
refused for a clash leaves the registry and every hybrid it touched exactly as they were.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from itertools import takewhile
from typing import TYPE_CHECKING

from dal.exceptions import ConfigurationError, InvalidValueError
from dal.model import expressions
from dal.model.reserved import RESERVED, defined_by, public_names
from dal.model.reverse import ReverseList, reverse_accessors
from dal.structures import Relation

if TYPE_CHECKING:
    from dal.objects.dataobject import DataObject


@dataclass(frozen=True)
class Reverse:
    """A reverse accessor: ``relation`` of ``source`` points here, readable as ``relation.foreign_key``.

    A subclass of ``source`` is another hybrid (its objects are stored under its own name) that
    holds the relation too, inherited: its relation joins ``inherited``, so the accessor, the
    link counting of a delete, ``abandon`` and a one-to-one constraint cover its objects as well.
    """

    source: type[DataObject]
    relation: Relation
    #: the same relation held by subclass hybrids of ``source``, in registration order
    inherited: list[Relation] = field(default_factory=list, hash=False, compare=False)

    @property
    def relations(self) -> tuple[Relation, ...]:
        """Return every relation listed by this accessor: the declaring one first, then the inherited."""
        return (self.relation, *self.inherited)



class AmbiguousNameError(LookupError):
    """A class name several hybrids share was used to select one; the message names their logical names."""


class Registry:
    """Hybrids by stable logical name; resolves string forward references as targets appear."""

    def __init__(self) -> None:
        self._by_name: dict[str, type[DataObject]] = {}
        #: class name -> every hybrid of that class name, in registration order (a tuple, so the
        #: shallow copy a refused registration restores from stays untouched)
        self._by_class_name: dict[str, tuple[type[DataObject], ...]] = {}
        self._pending: list[Relation] = []
        #: relations linked by a class name, and how near their target's module is to their own
        self._by_string: dict[Relation, int] = {}
        self._lock = threading.RLock()
        #: counts registrations tried (refused ones too), so that what is derived from the registered
        #: hybrids (dal.model.trees) knows when to derive it again
        self.generation = 0

    def register(self, cls: type[DataObject]) -> None:
        """Add a hybrid; raise ConfigurationError if another class holds its logical name, or if a
        relation (its own, or a waiting one that targets it) cannot be linked. A refused class leaves
        the registry, and every hybrid it touched, exactly as they were: it is not listed, its
        relations do not wait for targets, and no reverse accessor of it stays behind."""
        meta = cls._meta
        with self._lock:
            self.generation += 1
            existing = self._by_name.get(meta.name)
            if existing is not None and _origin(existing) != _origin(cls):
                raise ConfigurationError(
                    f"hybrid name {meta.name!r} is taken by {_origin(existing)}; give "
                    f"{_origin(cls)} another with `class {cls.__name__}(DataObject, hybrid_name='...')`")
            before = (dict(self._by_name), dict(self._by_class_name), list(self._pending),
                      dict(self._by_string))
            undo: list[Callable[[], object]] = []
            try:
                self._by_name[meta.name] = cls
                # a class registered again under its logical name (a reloaded module) replaces itself
                others = tuple(other for other in self._by_class_name.get(cls.__name__, ())
                               if other._meta.name != meta.name)
                self._by_class_name[cls.__name__] = (*others, cls)
                self._take_over(cls, undo)
                for relation in meta.relations.values():
                    if relation.target is None:
                        self._pending.append(relation)
                    else:  # inherited from a parent whose target was already known: join its accessor
                        _link(relation, relation.target, undo, self._by_name.values())
                self._resolve_pending(undo)
            except BaseException:
                # without this, a relation left waiting would be linked (and refused) again by every
                # later class: one refused declaration would refuse every class declared after it
                for step in reversed(undo):
                    step()
                self._by_name, self._by_class_name, self._pending, self._by_string = before
                raise

    def get(self, name: str) -> type[DataObject]:
        """Return the hybrid with this logical name, else the one hybrid of this class name.

        Raise LookupError when no hybrid has the name, or when it is the class name of more
        than one (naming their logical names): picking one would read or write another hybrid's
        objects than the caller meant. A logical name is always exact.
        """
        with self._lock:
            cls = self._by_name.get(name)
            same = self._by_class_name.get(name, ())
            known = sorted(self._by_name)
        if cls is not None:
            return cls
        if len(same) > 1:
            raise AmbiguousNameError(ambiguous(name, same))
        if not same:
            raise LookupError(f"no hybrid named {name!r}; known: {', '.join(known)}")
        return same[0]

    def all(self) -> list[type[DataObject]]:
        """Return every registered hybrid, sorted by logical name."""
        with self._lock:
            return [self._by_name[name] for name in sorted(self._by_name)]

    def undeclared(self, relation: Relation, how: str = "") -> str:
        """Return why ``relation`` has no target yet, and what to do: its string names no hybrid, or names
        an abstract base (found among the bases of the registered hybrids), which no relation can target.

        Every place meeting such a relation says it with this (use, save, the query builder and grammar,
        ``dal erd``, ``dal check``/``load``); ``how`` tells how its caller imports a module (``dal erd``'s
        ``--hybrids``), said only when the name is no abstract base, which no import can make a target.
        """
        with self._lock:
            registered = list(self._by_name.values())
        bases = {base for cls in registered for base in cls.__mro__
                 if base.__name__ == relation.foreign_type and "_abstract_specs" in vars(base)}
        named = f"{relation.qualified} points at {relation.foreign_type!r}"
        if len(bases) == 1:
            return f"{named}, {_abstract(bases.pop(), registered)}"
        return (f"{relation.qualified} points at hybrid {relation.foreign_type!r}, which has not been "
                f"declared; import the module that declares it{how}; a relation cannot point at an "
                "abstract=True base: point it at a hybrid deriving from it")

    def unresolved(self) -> list[Relation]:
        """Return relations whose string target has not registered yet."""
        with self._lock:
            return list(self._pending)

    def _resolve_pending(self, undo: list[Callable[[], object]]) -> None:
        still: list[Relation] = []
        for relation in self._pending:
            assert relation.owner is not None
            wanted = relation.foreign_type
            target: type[DataObject] | None
            if wanted is None:
                target = relation.owner
            elif isinstance(wanted, str):
                # a class name several hybrids share: the one of the nearest module, the latest of those
                same = self._by_class_name.get(wanted, ())
                target = max(reversed(same), key=partial(_nearness, relation.owner)) if same else \
                    self._by_name.get(wanted)
                if same and target is not None:
                    self._by_string[relation] = _nearness(relation.owner, target)
            else:
                target = wanted
            if target is None:
                still.append(relation)
                continue
            _link(relation, target, undo, self._by_name.values())
        self._pending = still

    def _take_over(self, cls: type[DataObject], undo: list[Callable[[], object]]) -> None:
        """Link to ``cls`` each relation a string linked to a hybrid of its class name in a module further
        from the relation's own (or as near: the latest of those wins): the relation's module declares
        it later (``Disk`` written before its ``class Disk``), or a module nearer it does, while another
        module's ``Disk`` was registered already. Registration runs as modules import, before any
        object is read or written."""
        for relation, near in list(self._by_string.items()):
            if relation.foreign_type != cls.__name__ or relation.target is cls:
                continue
            nearer = _nearness(relation.owner, cls)
            if nearer < near:  # as near: the latest registered, as a relation resolved now would take
                continue
            _unlink(relation, cls, undo)
            _link(relation, cls, undo, self._by_name.values())
            self._by_string[relation] = nearer


def _nearness(owner: type | None, target: type) -> int:
    """Return how many leading dotted parts ``owner``'s module and ``target``'s share (one more when
    they are the same module)."""
    mine, theirs = (owner.__module__ if owner is not None else "").split("."), target.__module__.split(".")
    shared = sum(1 for _ in takewhile(lambda pair: pair[0] == pair[1], zip(mine, theirs, strict=False)))
    return shared + (mine == theirs)


def _unlink(relation: Relation, nearer: type[DataObject], undo: list[Callable[[], object]]) -> None:
    """Take ``relation``'s reverse accessor off its target (for :meth:`Registry._take_over`)."""
    target = relation.target
    assert target is not None
    reverse = target._meta.reverse
    entry = reverse.get(relation.foreign_key)
    if entry is None or entry.relation is not relation or entry.inherited:
        # another relation shares the accessor now (a subclass hybrid's copy of it): moving one would
        # split them, moving all would rewrite what they were declared with
        raise ConfigurationError(
            f"{relation.qualified} names its target {relation.foreign_type!r}, which both {_origin(target)} "
            f"and {_origin(nearer)} are; it was linked to the first, and other relations share its reverse "
            f"accessor since: pass the class itself (Relation({relation.name!r}, <the class>, ...)), or give "
            "the two hybrids different class names")
    undo.append(partial(_restore, reverse, relation.foreign_key, entry))
    del reverse[relation.foreign_key]
    names = reverse_accessors(relation)
    for name in names:
        undo.append(partial(_restore_attribute, target, name, vars(target).get(name, _ABSENT)))
        if name in vars(target):
            delattr(target, name)
    undo.append(partial(setattr, target, "_declared", target._declared))
    target._declared = target._declared - frozenset(names)


def ambiguous(name: str, matches: Iterable[type[DataObject]]) -> str:
    """Return why the class name ``name``, shared by the hybrids ``matches``, selects none of them."""
    logical = sorted(cls._meta.name for cls in matches)
    return (f"{name!r} is the class name of {len(logical)} hybrids ({', '.join(logical)}); "
            f"name the one you mean by its logical name ({' or '.join(logical)})")


def _abstract(base: type, registered: Iterable[type[DataObject]]) -> str:
    """Return why a relation cannot point at the abstract base ``base``, naming hybrids deriving from it."""
    deriving = ", ".join(sorted(cls.__name__ for cls in registered if issubclass(cls, base)))
    deriving = f" ({deriving})" if deriving else ""
    return (f"which is an abstract base (abstract=True), not a hybrid: it stores no objects for a relation "
            f"to point at; point the relation at a hybrid deriving from it{deriving}")


def _origin(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _link(relation: Relation, target: type[DataObject], undo: list[Callable[[], object]],
          registered: Iterable[type[DataObject]]) -> None:
    """Point ``relation`` at ``target`` and give ``target`` its reverse accessor; append to ``undo``
    how to take back each change made, so that a refused registration leaves nothing behind."""
    assert relation.owner is not None
    if not isinstance(target, type) or "_meta" not in vars(target):  # a registered hybrid has its own
        if isinstance(target, type) and "_abstract_specs" in vars(target):
            raise InvalidValueError(f"{relation.qualified}: foreign_type {target.__name__}, "
                                    f"{_abstract(target, registered)}")
        raise InvalidValueError(
            f"{relation.qualified}: foreign_type {target!r} is not a hybrid (a DataObject subclass)")
    undo.append(partial(setattr, relation, "target", relation.target))
    relation.resolve(target)
    _check_redeclared(relation, registered)
    reverse = target._meta.reverse
    clash = reverse.get(relation.foreign_key)
    inherited: list[Relation] = []
    if clash is not None and clash.relation is not relation:
        if relation in clash.inherited:
            return
        # a subclass hybrid's copy of its parent's relation has the parent's name; another relation
        # naming the accessor (of the same class, or a new one of a subclass) would share it unseen
        same = relation.name == clash.relation.name
        if same and issubclass(relation.owner, clash.source):
            # inherited by a subclass hybrid: the reverse accessor stays with the most basic declaring
            # class and lists this hybrid's objects too
            clash.inherited.append(relation)
            undo.append(partial(clash.inherited.remove, relation))
            return
        if not (same and issubclass(clash.source, relation.owner)):
            raise ConfigurationError(
                f"{relation.qualified} and {clash.relation.qualified} both name the reverse accessor "
                f"{target.__name__}.{relation.foreign_key}; give one another foreign_key")
        inherited = [clash.relation, *clash.inherited]  # a parent resolved after its subclass
    accessors = reverse_accessors(relation)
    # the names other relations' reverse accessors installed (``<fk>_guids``, ``<fk>_guid``) too: one
    # of them taken over would serve this relation's objects in its place, without a word
    installed = {name for key, other in reverse.items() if key != relation.foreign_key
                 for name in reverse_accessors(other.relation)}
    # and what the target's own classes define (a method, a property, a class attribute): replaced unseen
    own = defined_by(target, installed=(ReverseList,))
    taken = sorted(set(accessors) & (set(target._meta.fields()) | set(target._meta.relations)
                                     | set(target._meta.dynamics) | RESERVED | public_names(target)
                                     | installed | set(own)))
    if taken:
        mine = [f"{own[name].__name__}.{name}" for name in taken if name in own]
        raise ConfigurationError(
            f"{relation.qualified} names the reverse accessor {relation.foreign_key!r}, but "
            f"{target.__name__} already has {', '.join(taken)}; give the relation another foreign_key"
            + (f" (or rename {', '.join(mine)}, which the accessor would replace)" if mine else ""))
    undo.append(partial(_restore, reverse, relation.foreign_key, clash))
    reverse[relation.foreign_key] = Reverse(relation.owner, relation, inherited)
    for name, accessor in accessors.items():
        undo.append(partial(_restore_attribute, target, name, vars(target).get(name, _ABSENT)))
        setattr(target, name, accessor)
    undo.append(partial(setattr, target, "_declared", target._declared))
    target._declared = target._declared | frozenset(accessors)


_ABSENT = object()


def _inherited_relation(relation: Relation) -> Relation | None:
    """Return the relation of ``relation``'s name that its owner inherits (from the nearest hybrid base
    holding one), which ``relation`` copies or redeclares; None if it is the owner's own."""
    assert relation.owner is not None
    for base in relation.owner.__mro__[1:]:
        meta = vars(base).get("_meta")
        if meta is not None and relation.name in meta.relations:
            return meta.relations[relation.name]  # type: ignore[no-any-return]
    return None


def _check_redeclared(relation: Relation, registered: Iterable[type[DataObject]]) -> None:
    """Refuse a subclass hybrid's relation that redeclares its parent's (same name and foreign_key, so
    the parent's reverse accessor lists its objects too) with another kind or target: a one-to-one
    relation would no longer allow one object across them, a many-to-one one would refuse a second.

    Checked whichever of the two links last (a parent may wait for a string target after its subclass).
    """
    assert relation.owner is not None
    inherited = _inherited_relation(relation)
    pairs = [] if inherited is None else [(relation, inherited)]
    pairs += [(child, relation) for cls in registered
              if cls is not relation.owner and issubclass(cls, relation.owner)
              and (child := cls._meta.relations.get(relation.name)) is not None
              and _inherited_relation(child) is relation]
    kind = {True: "one-to-one", False: "many-to-one"}
    for child, base in pairs:
        if child.foreign_key != base.foreign_key or child.target is None or base.target is None:
            continue  # another foreign_key: a relation of the subclass's own, with its own accessor
        if child.onetoone != base.onetoone:
            differs = f"as {kind[child.onetoone]}"
            keep = f"keep it {kind[base.onetoone]} (onetoone={base.onetoone})"
        elif child.target is not base.target:
            differs, keep = f"pointing at {child.target.__name__}", f"point it at {base.target.__name__}"
        else:
            continue  # the same relation (a copy, or a redeclaration changing only `mandatory` or `doc`)
        raise ConfigurationError(
            f"{child.qualified} redeclares {base.qualified} ({kind[base.onetoone]}, pointing at "
            f"{base.target.__name__}) {differs}; a subclass hybrid's relation with its parent's name and "
            f"foreign_key is the parent's relation, whose reverse accessor {base.target.__name__}."
            f"{base.foreign_key} lists the objects of both, so only its `mandatory` (or `doc`) may "
            f"differ: {keep}, or give {child.qualified} another foreign_key to make it a relation of its own")


def _restore(mapping: dict[str, Reverse], key: str, value: Reverse | None) -> None:
    if value is None:
        mapping.pop(key, None)
    else:
        mapping[key] = value


def _restore_attribute(owner: type, name: str, value: object) -> None:
    if value is _ABSENT:
        delattr(owner, name)
    else:
        setattr(owner, name, value)


#: the process-wide registry the CLI, ERD and migrations read
hybrids = Registry()
# the query builder, a layer below, names a relation without a target as everything else does
expressions.undeclared = hybrids.undeclared


def reverse_of(relation: Relation) -> Reverse | None:
    """Return the reverse accessor listing ``relation``'s objects (``None``: its target is undeclared)."""
    target = relation.target
    if target is None:
        return None
    reverse = target._meta.reverse.get(relation.foreign_key)
    if reverse is None or not any(member is relation for member in reverse.relations):
        return None
    return reverse


def family(relation: Relation) -> tuple[Relation, ...]:
    """Return the relations a constraint spans with ``relation``: the declaring one, then every inherited.

    A one-to-one relation declared by a class and inherited by its subclass hybrids allows one
    object pointing at a target across all of them, as their shared reverse accessor shows it.
    """
    reverse = reverse_of(relation)
    return (relation,) if reverse is None else reverse.relations

