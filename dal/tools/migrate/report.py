"""What a ``dal migrate`` run reports (:class:`Report`, :class:`Violation`) and how it shows progress."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from dal.model.meta import HybridMeta


class Meter(Protocol):
    def advance(self, amount: int = 1) -> None: ...


#: ``progress(total, label)`` returns a context manager yielding a Meter (``dal.cli.progress.Progress``)
ProgressFactory = Callable[[int, str], AbstractContextManager[Meter]]


@dataclass(frozen=True)
class Violation:
    """Objects sharing a value of a property that became unique: its keys stay unbuilt.

    Or (``kind="onetoone"``) objects pointing at one target through a one-to-one relation
    (``field``; ``value`` is the target's guid, ``target`` its class): none of them gets a key.
    Or (``kind="dangling"``) objects pointing, through a relation whose links are written back
    (:mod:`dal.tools.migrate.links`), at a target that is not stored: none of them gets a link.
    Or (``kind="mandatory"``) objects holding no value (lacking it, or None) of a mandatory property or
    relation ``field`` that has no default: the fill pass can give them none, so they read None and
    cannot be saved until given one.
    """

    hybrid: str
    cls_name: str
    field: str
    value: Any
    guids: tuple[str, ...]
    kind: str = "unique"
    target: str = ""

    def describe(self) -> str:
        shown = ", ".join(self.guids[:10]) + (f" and {len(self.guids) - 10} more" if len(self.guids) > 10
                                               else "")
        if self.kind == "dangling":
            return (f"{self.cls_name}.{self.field} of {len(self.guids)} object{'s' * (len(self.guids) != 1)} "
                    f"points at {self.target} {self.value}, which is not stored: {shown}")
        if self.kind == "mandatory":
            return (f"{self.cls_name}.{self.field} is mandatory and has no default, but {len(self.guids)} "
                    f"object{'s' * (len(self.guids) != 1)} hold{'s' * (len(self.guids) == 1)} none: {shown}")
        if self.kind == "onetoone":
            return (f"{self.cls_name}.{self.field} is one-to-one, but {len(self.guids)} objects point at "
                    f"{self.target} {self.value}: {shown}")
        return f"{self.cls_name}.{self.field} = {self.value!r} is held by {len(self.guids)} objects: {shown}"


@dataclass
class Report:
    """What a run did (or, dry, would do)."""

    dry_run: bool
    lines: list[str] = field(default_factory=list)
    steps: list[int] = field(default_factory=list)
    #: hybrid -> objects rewritten or given keys (dry: that would be)
    objects: Counter[str] = field(default_factory=Counter)
    violations: list[Violation] = field(default_factory=list)
    #: hybrids whose schema record alone was (dry: would be) written: no object of them needed a change
    recorded: list[str] = field(default_factory=list)
    #: durable commits made
    commits: int = 0
    up_to_date: bool = True

    @property
    def ok(self) -> bool:
        """Whether everything declared is (or would be) complete: no violation (a unique value or a
        one-to-one target held twice, a relation pointing at nothing, a mandatory field without a
        value) remains."""
        return not self.violations


def valueless_fields(meta: HybridMeta) -> dict[str, str]:
    """Return stored field -> its property or relation name, of the mandatory ones without a default:
    a document lacking one is filled with None, which no save accepts."""
    found = {name: name for name, prop in meta.properties.items()
             if prop.mandatory and meta.stored_defaults.get(name) is None}
    found.update((relation.guid_field, name) for name, relation in meta.relations.items()
                 if relation.mandatory)
    return found


def valueless_violations(meta: HybridMeta, holders: dict[str, list[str]]) -> list[Violation]:
    """Return the violations of the objects (``holders``: stored field -> guids) holding no value of a
    mandatory field without a default."""
    names = valueless_fields(meta)
    return [Violation(meta.name, meta.cls.__name__, names[stored], None, tuple(guids), kind="mandatory")
            for stored, guids in sorted(holders.items()) if guids]


def unbuilt_fields(violations: Iterable[Violation]) -> set[str]:
    """Return the fields whose keys ``violations`` keep from being built (so not marked ready, nor checked
    after the run): every kind but ``mandatory`` (an object holding no value of a field has no key of it
    to write; the others' keys are built and the field marked ready)."""
    return {violation.field for violation in violations if violation.kind != "mandatory"}
