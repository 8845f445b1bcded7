"""What ``dal check`` reports: the kinds of problem, a problem with its fix, and the report."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from dal.backends.base import Check, Op


class Kind(str, Enum):
    """What is wrong; the value is the name the report prints."""

    INVALID_DOCUMENT = "invalid_document"  # not JSON, or a field does not fit the model
    DUPLICATE_GUID = "duplicate_guid"  # one guid stored under two hybrids of one class tree
    UNKNOWN_FIELD = "unknown_field"  # a stored field the model does not declare
    ORPHAN_KEY = "orphan_key"  # a key of a hybrid, field or relation the model does not declare
    DANGLING_RELATION = "dangling_relation"  # <relation>_guid names a target that is not stored
    ONETOONE_VIOLATION = "onetoone_violation"  # several objects point at one target of a one-to-one
    MISSING_LINK = "missing_link"
    STALE_LINK = "stale_link"
    MISSING_INDEX = "missing_index"
    STALE_INDEX = "stale_index"
    MISSING_UNIQUE = "missing_unique"
    STALE_UNIQUE = "stale_unique"  # no document holds the value, or another one than the key names
    DUPLICATE_UNIQUE = "duplicate_unique"  # several documents hold one unique value
    MISSING_ONETOONE = "missing_onetoone"  # a one-to-one referrer without its key: another could point there
    STALE_ONETOONE = "stale_onetoone"  # a one-to-one key naming an object that does not point at its target
    UNBUILT_ONETOONE = "unbuilt_onetoone"  # one-to-one keys of older data that `dal migrate` has not built
    UNBUILT_INDEX = "unbuilt_index"  # index entries the schema record says are not built yet: `dal migrate`
    UNBUILT_UNIQUE = "unbuilt_unique"  # unique keys the schema record says are not built yet: `dal migrate`
    INVALID_SCHEMA = "invalid_schema"  # a schema record dal cannot read (nothing counts built): `dal migrate`


#: kinds a repair can fix (when the data did not change meanwhile); the others need a person, and so
#: does a problem of these without a fix (an orphan key only has one when nothing can be lost)
REPAIRABLE = frozenset({Kind.ORPHAN_KEY, Kind.MISSING_LINK, Kind.STALE_LINK, Kind.MISSING_INDEX,
                        Kind.STALE_INDEX, Kind.MISSING_UNIQUE, Kind.STALE_UNIQUE, Kind.MISSING_ONETOONE,
                        Kind.STALE_ONETOONE})
#: kinds `dal migrate` fixes: keys a model change asks for that were never built for older data (not
#: damage: the schema record says so, and queries scan meanwhile)
MIGRATE = frozenset({Kind.UNBUILT_INDEX, Kind.UNBUILT_UNIQUE, Kind.UNBUILT_ONETOONE})


@dataclass(frozen=True)
class Fix:
    """The conditional commit that repairs one problem, and the cached query results it may change."""

    checks: tuple[Check, ...]
    ops: tuple[Op, ...]
    #: version keys to drop after the commit: a key that was missing hid an object from queries
    #: answered through it (a stale key never showed a wrong one: candidates are re-verified)
    invalidate: tuple[str, ...] = ()


@dataclass(frozen=True)
class Problem:
    """One disagreement: its kind, the key it concerns, and a sentence saying what and how to fix."""

    kind: Kind
    key: str
    message: str
    hybrid: str = ""
    guid: str = ""
    fix: Fix | None = field(default=None, compare=False, repr=False)


@dataclass
class Report:
    """What :func:`check` found (and, with ``repair``, what it fixed)."""

    namespace: str
    #: documents per hybrid (undeclared hybrids included)
    documents: dict[str, int] = field(default_factory=dict)
    #: unique, index and link keys read
    keys: int = 0
    problems: list[Problem] = field(default_factory=list)
    repaired: bool = False
    fixed: list[Problem] = field(default_factory=list)
    #: repairable problems whose fix did not commit: the data changed meanwhile
    conflicted: list[Problem] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not self.problems

    @property
    def remaining(self) -> list[Problem]:
        """Problems still there: all of them, or after a repair those it did not fix."""
        fixed = {id(problem) for problem in self.fixed}
        return [problem for problem in self.problems if id(problem) not in fixed]

    def counts(self) -> dict[Kind, int]:
        """Return the number of problems per kind, in the order of :class:`Kind`."""
        found: dict[Kind, int] = {}
        for problem in self.problems:
            found[problem.kind] = found.get(problem.kind, 0) + 1
        return {kind: found[kind] for kind in Kind if kind in found}

    def of(self, kind: Kind) -> list[Problem]:
        return [problem for problem in self.problems if problem.kind == kind]
