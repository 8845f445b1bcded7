"""Numbered migration steps: renames, transforms and removals that ``dal migrate`` runs exactly once each.

Declare steps in a hybrids module (the ones ``--hybrids`` imports)::

    from dal.tools.migrate.migrator import migration

    @migration(1, "rename Disk.size to size_bytes")
    def _(step):
        step.rename_property(Disk, "size", "size_bytes")

The function only *describes* the step (it runs again on every ``dal migrate``, including
``--dry-run``, and must not touch the store); ``dal migrate`` applies the described
operations to each stored document of the named hybrids, in step-number order, and records
the step as done at ``m/steps/<number>``. Operations work on the stored JSON document, so
they see fields the current model no longer declares.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dal.exceptions import ConfigurationError, DalError
from dal.model.registry import hybrids
from dal.model.trees import tree_kin
from dal.objects.transaction import Document
from dal.values import same

if TYPE_CHECKING:
    from dal.model.meta import HybridMeta
    from dal.objects.dataobject import DataObject

#: what a transform receives (a copy of the stored document) and returns (``None``: unchanged)
Transformer = Callable[[Document], "Document | None"]


class MigrationError(DalError):
    """A migration step is declared wrongly, or the stored data keeps it from completing."""


@dataclass(frozen=True)
class OldLink:
    """A link key a step leaves behind: ``<relation>`` of the object pointed at ``target_guid``."""

    target: str
    target_guid: str
    relation: str


class Operation:
    """One change a step makes to every stored document of one hybrid."""

    meta: HybridMeta

    def apply(self, doc: Document) -> list[OldLink]:
        """Change ``doc`` in place; return the link keys to remove with it."""
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError

    def inherited(self, meta: HybridMeta) -> bool:
        """Whether subclass hybrid ``meta`` inherits what the operation changes (so its documents, stored
        under its own name, hold it as those of the hybrid named do): a step must then name it too."""
        raise NotImplementedError

    def call(self, label: str) -> str:
        """Return the call declaring this operation on the hybrid named ``label`` (for error messages)."""
        raise NotImplementedError


@dataclass
class RenameProperty(Operation):
    """``doc[new] = doc.pop(old)``; a value already under ``new`` other than the default is kept."""

    meta: HybridMeta
    old: str
    new: str

    def apply(self, doc: Document) -> list[OldLink]:
        if self.old not in doc:
            return []
        value = doc.pop(self.old)
        prop = self.meta.properties[self.new]
        # a process running the new model may have saved the object before this step ran, storing
        # the default under the new name beside the old value: the old value is the real one
        if self.new not in doc or same(doc[self.new], prop.validator.to_json(prop.make_default())):
            doc[self.new] = value
        return []

    def describe(self) -> str:
        return f"rename property {self.meta.cls.__name__}.{self.old} to {self.new}"

    def call(self, label: str) -> str:
        return f"step.rename_property({label}, {self.old!r}, {self.new!r})"

    def inherited(self, meta: HybridMeta) -> bool:
        return self.new in meta.properties and self.old not in meta.field_set


@dataclass
class RenameRelation(Operation):
    """Move ``<old>_guid`` to ``<new>_guid`` and the object's link key from ``old`` to ``new``.

    The relation must keep its target hybrid. A link already set under the new name is kept.
    """

    meta: HybridMeta
    old: str
    new: str

    def apply(self, doc: Document) -> list[OldLink]:
        old_field, new_field = f"{self.old}_guid", f"{self.new}_guid"
        if old_field not in doc:
            return []
        target_guid = doc.pop(old_field)
        if doc.get(new_field) is None:
            doc[new_field] = target_guid
        target = self.meta.relations[self.new].target
        if target_guid is None or target is None:
            return []
        return [OldLink(target._meta.name, target_guid, self.old)]

    def describe(self) -> str:
        return f"rename relation {self.meta.cls.__name__}.{self.old} to {self.new}"

    def call(self, label: str) -> str:
        return f"step.rename_relation({label}, {self.old!r}, {self.new!r})"

    def inherited(self, meta: HybridMeta) -> bool:
        return self.new in meta.relations and self.old not in meta.relations


@dataclass
class Transform(Operation):
    """Replace each document with ``fn(copy of it)``; ``None`` leaves it unchanged."""

    meta: HybridMeta
    fn: Transformer
    label: str

    def apply(self, doc: Document) -> list[OldLink]:
        try:
            result = self.fn(copy.deepcopy(doc))
        except Exception as exc:  # the user's function: say which one failed, on what
            raise MigrationError(
                f"transform {self.label} of {self.meta.cls.__name__} raised {type(exc).__name__}: {exc}; "
                f"on the document {doc!r}") from exc
        if result is None:
            return []
        if not isinstance(result, dict) or not all(isinstance(key, str) for key in result):
            raise MigrationError(
                f"transform {self.label} of {self.meta.cls.__name__} returned {type(result).__name__}; "
                "it must return the new document (a dict with str keys) or None to leave it unchanged")
        if "guid" in result and not ("guid" in doc and same(doc["guid"], result["guid"])):
            raise MigrationError(
                f"transform {self.label} of {self.meta.cls.__name__} returned a document holding 'guid' "
                f"({result['guid']!r}): a step cannot change an object's guid (the key its document is "
                "stored under, not a field of it); return the document without 'guid'")
        doc.clear()
        doc.update(result)
        return []

    def describe(self) -> str:
        return f"transform {self.meta.cls.__name__} with {self.label}"

    def inherited(self, meta: HybridMeta) -> bool:
        return True  # a subclass hybrid's objects are objects of the hybrid named

    def call(self, label: str) -> str:
        return f"step.transform({label}, {self.label})"


@dataclass
class DropField(Operation):
    """Remove the stored field ``name``, which the model no longer declares."""

    meta: HybridMeta
    name: str

    def apply(self, doc: Document) -> list[OldLink]:
        doc.pop(self.name, None)
        return []

    def describe(self) -> str:
        return f"drop field {self.meta.cls.__name__}.{self.name}"

    def call(self, label: str) -> str:
        return f"step.drop_field({label}, {self.name!r})"

    def inherited(self, meta: HybridMeta) -> bool:
        # a subclass hybrid declaring the field (again) holds it as its own
        return self.name not in meta.field_set and self.name not in meta.relations


@dataclass
class Step:
    """What one migration step does; its function fills it through the methods below."""

    number: int
    description: str
    operations: list[Operation] = field(default_factory=list)

    def rename_property(self, hybrid: type[DataObject] | str, old: str, new: str) -> None:
        """Move the stored value of property ``old`` to the declared property ``new``."""
        meta = _meta_of(hybrid, self)
        self._check_rename(meta, old, new, "property", meta.properties, meta.field_set)
        self.operations.append(RenameProperty(meta, old, new))

    def rename_relation(self, hybrid: type[DataObject] | str, old: str, new: str) -> None:
        """Move relation ``old`` (its ``<old>_guid`` field and link keys) to the declared relation ``new``."""
        meta = _meta_of(hybrid, self)
        self._check_rename(meta, old, new, "relation", meta.relations, frozenset(meta.relations))
        self.operations.append(RenameRelation(meta, old, new))

    def transform(self, hybrid: type[DataObject] | str, fn: Transformer) -> None:
        """Rewrite every stored document of ``hybrid`` with ``fn``.

        ``fn`` gets a copy of the stored JSON document (without the guid) and returns the new
        one, or ``None`` to leave it as it is (a result holding ``guid`` is refused: a step cannot
        change an object's guid). It must be deterministic: a step interrupted and resumed calls
        it again on documents it left unchanged.
        """
        meta = _meta_of(hybrid, self)
        if not callable(fn):
            raise MigrationError(f"step {self.number}: transform needs a function, not {fn!r}")
        self.operations.append(Transform(meta, fn, getattr(fn, "__name__", repr(fn))))

    def drop_field(self, hybrid: type[DataObject] | str, name: str) -> None:
        """Remove the stored field ``name`` (a property, or ``<relation>_guid``) the model no longer
        declares from every stored document of ``hybrid``."""
        meta = _meta_of(hybrid, self)
        label = meta.cls.__name__
        if not isinstance(name, str) or not name:
            raise MigrationError(f"step {self.number}: drop_field needs the name of a stored field, not "
                                 f"{name!r}")
        if name in meta.field_set or name in meta.relations:
            raise MigrationError(f"step {self.number}: {label} still declares {name!r}; remove it from the "
                                 "model before dropping its stored field")
        self.operations.append(DropField(meta, name))

    def hybrids(self) -> list[HybridMeta]:
        """Return the hybrids this step touches, in the order it names them first."""
        seen: dict[str, HybridMeta] = {}
        for operation in self.operations:
            seen.setdefault(operation.meta.name, operation.meta)
        return list(seen.values())

    def operations_for(self, meta: HybridMeta) -> list[Operation]:
        return [op for op in self.operations if op.meta.name == meta.name]

    def check_subclasses(self, stores: Callable[[str], bool]) -> None:
        """Refuse the step if an operation changes what a registered subclass hybrid of the hybrid it
        names inherits (a transform: any subclass hybrid), that subclass hybrid stores objects
        (``stores(name)``: a store where it has none, a new one, needs nothing of it), and the step names
        it in no operation: its objects, stored under its own name, would keep the old form (and a
        renamed value read as the default). Each subclass hybrid the step names gets its own operations
        only."""
        named = {op.meta.name for op in self.operations}
        #: subclass hybrid -> hybrid named -> the calls the step makes for it, on the subclass hybrid
        missing: dict[str, dict[str, list[str]]] = {}
        for operation in self.operations:
            for meta in _subclass_hybrids(operation.meta):
                if meta.name not in named and operation.inherited(meta) and stores(meta.name):
                    label = meta.cls.__name__
                    calls = missing.setdefault(label, {}).setdefault(operation.meta.cls.__name__, [])
                    calls.append(operation.call(label))
        if not missing:
            return
        fixes = "; ".join(
            f"for {label}, also call " + ", or ".join(f"{' and '.join(calls)} (as for {base})"
                                                     for base, calls in bases.items())
            + f", or step.transform({label}, fn) to handle its objects yourself (fn returning None leaves "
            "them as they are)" for label, bases in missing.items())
        raise MigrationError(
            f"step {self.number} ({self.description}) names no operation for the subclass "
            f"hybrid{'s' * (len(missing) != 1)} {', '.join(missing)} of a hybrid it changes: "
            f"{'their' if len(missing) != 1 else 'its'} objects, stored under their own name, hold what "
            f"the step changes and would keep the old form; {fixes}")

    def _check_rename(self, meta: HybridMeta, old: str, new: str, kind: str, declared: Any,
                      taken: frozenset[str]) -> None:
        name = meta.cls.__name__
        if new not in declared:
            raise MigrationError(
                f"step {self.number}: {name} declares no {kind} {new!r}; declare the new {kind} in the "
                f"model first, then rename {old!r} to it")
        if old in taken:
            raise MigrationError(
                f"step {self.number}: {name} still declares {old!r}; remove it from the model before "
                f"renaming it to {new!r}")


@dataclass(frozen=True)
class Migration:
    """A numbered migration step: ``func(step)`` describes it."""

    number: int
    description: str
    func: Callable[[Step], None]

    def __post_init__(self) -> None:
        if not isinstance(self.number, int) or isinstance(self.number, bool) or self.number < 1:
            raise ConfigurationError(f"a migration step number is an int >= 1, not {self.number!r}")
        if not isinstance(self.description, str) or not self.description.strip():
            raise ConfigurationError(f"migration step {self.number} needs a description")

    def plan(self) -> Step:
        """Return the operations ``func`` describes."""
        step = Step(self.number, self.description)
        try:
            self.func(step)
        except MigrationError:
            raise  # a step declared wrongly: it says so itself
        except Exception as exc:  # the user's function: a typed error naming it, not a traceback
            raise MigrationError(
                f"step {self.number} ({self.description}): its function {self.origin} raised "
                f"{type(exc).__name__}: {exc}; fix the step and run dal migrate again") from exc
        return step

    @property
    def origin(self) -> str:
        return f"{getattr(self.func, '__module__', '?')}.{getattr(self.func, '__qualname__', '?')}"

    @property
    def place(self) -> tuple[str, str, int]:
        """Where the step's function is defined: the same for a module imported again, another for two
        functions of one name (``def _``) in one module."""
        code = getattr(self.func, "__code__", None)
        return self.origin, getattr(code, "co_filename", "?"), getattr(code, "co_firstlineno", 0)


_declared: dict[int, Migration] = {}


def migration(number: int, description: str) -> Callable[[Callable[[Step], None]], Callable[[Step], None]]:
    """Declare migration step ``number`` (an int >= 1, unique, never reused once deployed)."""
    Migration(number, description, lambda step: None)  # validates now, at the decorator line

    def register(func: Callable[[Step], None]) -> Callable[[Step], None]:
        declared = Migration(number, description, func)
        existing = _declared.get(number)
        if existing is not None and existing.place != declared.place:
            raise ConfigurationError(
                f"migration step {number} is declared twice, by {existing.origin} (line "
                f"{existing.place[2]}) and {declared.origin} (line {declared.place[2]}); give the new one "
                "the next free number")
        _declared[number] = declared
        return func

    return register


def declared_migrations() -> list[Migration]:
    """Return every step declared by the imported modules, by number."""
    return [_declared[number] for number in sorted(_declared)]


def _subclass_hybrids(meta: HybridMeta) -> list[HybridMeta]:
    """Return the registered subclass hybrids of ``meta``'s (direct or not), by name."""
    found = []
    for name in tree_kin(meta.cls):
        cls = hybrids.get(name)
        if issubclass(cls, meta.cls):
            found.append(cls._meta)
    return found


def _meta_of(hybrid: type[DataObject] | str, step: Step) -> HybridMeta:
    if isinstance(hybrid, str):
        try:
            return hybrids.get(hybrid)._meta
        except LookupError as exc:
            raise MigrationError(f"step {step.number}: {exc}; import the module declaring it") from None
    meta: HybridMeta | None = getattr(hybrid, "_meta", None)
    if meta is None:
        raise MigrationError(f"step {step.number}: {hybrid!r} is not a hybrid (a DataObject subclass)")
    return meta
