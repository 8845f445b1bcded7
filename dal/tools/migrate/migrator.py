"""``dal migrate``: bring the stored data of every hybrid up to its declared model.

In order:

1. Numbered migration steps (``dal.tools.migrate.migrations``) not yet recorded as done run, lowest first.
   Each rewrites documents one at a time; every commit also moves the step's cursor
   (``m/cursor/<number>/<hybrid>``), checked against its revision, so a step interrupted
   and resumed skips what it already did (exactly once per object) and two concurrent
   ``dal migrate`` runs cannot both apply it. The step is recorded at ``m/steps/<number>``.
2. Per hybrid, unless its schema record (``dal.objects.schema``) says it is up to date:
   a read-only survey (missing fields, values breaking a new unique constraint), removal of
   stale entries under the index and unique keys being built, then one compare-and-set
   commit per object that needs it: missing fields get their default, missing index and
   unique keys, and the one-to-one keys of relations (``r/<hybrid>/<relation>/<target>``), are
   written; objects sharing a value that became unique, or pointing at one target of a
   one-to-one relation, are reported and get none of those keys. Keys of properties no longer
   indexed or unique, of relations no longer one-to-one, and links of relations the model
   dropped (when the model changed since the record, or there is none: every stored link this
   hybrid holds through a relation it no longer declares, its source stored or not), are
   deleted. Links of relations the record's model does not list (declared again after being dropped)
   are written back for every object pointing at a stored target (``dal.tools.migrate.links``); an
   object pointing at a target not stored is reported. Finally the record lists what is complete.

Every object write is checked against the document's revision and retried after a re-read
when a live writer got there first, so migrating beside running processes is safe as long
as they run the new model. Work already done is detected, never redone, so a killed run
can simply be started again.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING

from dal.exceptions import ConfigurationError, InvalidValueError
from dal.model.meta import HybridMeta
from dal.model.registry import hybrids as registry
from dal.objects import schema
from dal.tools.migrate.migrations import Migration, MigrationError, Step, declared_migrations, migration
from dal.tools.migrate.report import Meter, ProgressFactory, Report, Violation
from dal.tools.migrate.run import EXIT_AFTER_ENV as EXIT_AFTER_ENV
from dal.tools.migrate.steps import StepRunner
from dal.tools.migrate.verify import KeyVerifier

if TYPE_CHECKING:
    from dal.config import Context
    from dal.objects.dataobject import DataObject

__all__ = ["Migration", "MigrationError", "Report", "Step", "Violation", "migrate", "migration"]


class _Quiet:
    def advance(self, amount: int = 1) -> None:
        pass


def _no_progress(total: int, label: str) -> AbstractContextManager[Meter]:
    return nullcontext(_Quiet())


def migrate(context: Context, hybrids: Iterable[type[DataObject]] | None = None, *,
            migrations: Iterable[Migration] | None = None, dry_run: bool = False,
            emit: Callable[[str], None] | None = None, progress: ProgressFactory | None = None) -> Report:
    """Bring the stored data of ``hybrids`` (default: every registered one) up to their declared models.

    ``migrations`` defaults to every step declared with ``@migration``. With ``dry_run`` nothing
    is written and the report says what would be. ``emit`` receives the report's lines as they
    are made. Raise InvalidValueError when ``hybrids`` holds anything but hybrid classes (a name or
    a module: import it and pass None) or ``migrations`` anything but Migration objects, MigrationError
    when a step cannot complete.
    """
    metas = [cls._meta for cls in registry.all()] if hybrids is None else _metas_of(hybrids)
    steps = declared_migrations() if migrations is None else _migrations_of(migrations)
    numbers = [m.number for m in steps]
    if len(set(numbers)) != len(numbers):
        raise ConfigurationError(f"migration step numbers must be unique: {numbers}")
    return Migrator(context, metas, steps, dry_run=dry_run, emit=emit,
                    progress=progress or _no_progress).run()


def _metas_of(hybrids: Iterable[type[DataObject]]) -> list[HybridMeta]:
    """Return the metas of the hybrid classes given; raise InvalidValueError for anything else."""
    usage = ("pass hybrid classes (DataObject subclasses, e.g. [Disk, Pool]), or None for every "
             "registered one (import the modules declaring them first)")
    if isinstance(hybrids, (str, bytes)) or not isinstance(hybrids, Iterable):
        raise InvalidValueError(f"migrate() got hybrids={hybrids!r}: {usage}")
    metas = []
    for cls in hybrids:
        meta = getattr(cls, "_meta", None) if isinstance(cls, type) else None
        if not isinstance(meta, HybridMeta):
            raise InvalidValueError(f"migrate() got {cls!r} ({type(cls).__name__}) among its hybrids: "
                                    f"{usage}")
        metas.append(meta)
    return metas


def _migrations_of(migrations: Iterable[Migration]) -> list[Migration]:
    """Return the steps given, by number; raise InvalidValueError for anything but Migration objects."""
    usage = ("pass Migration objects (Migration(number, description, func)), or None for every step "
             "declared with @migration (import the modules declaring them first)")
    if isinstance(migrations, (str, bytes, Mapping)) or not isinstance(migrations, Iterable):
        raise InvalidValueError(f"migrate() got migrations={migrations!r}: {usage}")
    steps = list(migrations)
    for step in steps:
        if not isinstance(step, Migration):
            hint = " (a function @migration declared is run with migrations=None)" if callable(step) else ""
            raise InvalidValueError(f"migrate() got {step!r} ({type(step).__name__}) among its migrations"
                                    f"{hint}: {usage}")
    return sorted(steps, key=lambda m: m.number)


class Migrator(StepRunner, KeyVerifier):
    """One run of ``dal migrate``."""

    def run(self) -> Report:
        if self.dry_run:
            self.say("dry run: nothing will be written")
        done = self._done_steps()
        pending = [(m, m.plan()) for m in self.migrations if m.number not in done]
        stores = functools.cache(lambda name: bool(self.context.persistent.scan(self.context.keys.docs(name),
                                                                                 limit=1)))
        for _, step in pending:  # before anything is written
            step.check_subclasses(stores)
        if pending:
            self.report.up_to_date = False
        held: dict[str, bool] = {}  # (dry runs) keys the simulated rewrites wrote (True) or deleted
        for index, (declared, step) in enumerate(pending):
            if self.dry_run:
                self.say(f"step {declared.number} ({declared.description}): would "
                         f"{'; '.join(op.describe() for op in step.operations) or 'do nothing'}")
                self._simulate_step(step, [earlier for _, earlier in pending[:index]], held)
            else:
                self._run_step(declared, step)
        for meta in self.metas:
            # a dry run sees each document as the pending steps would leave it
            simulated = [(step.number, step.operations_for(meta)) for _, step in pending] if self.dry_run \
                else []
            self._migrate_hybrid(meta, [(number, ops) for number, ops in simulated if ops])
        if self.dry_run:
            self._simulate_elsewhere([step for _, step in pending])
        else:
            self._verify_marked()
        schema.forget(self.context)
        self._summary()
        return self.report

    def _simulate_elsewhere(self, pending: list[Step]) -> None:
        """(Dry runs) Count the objects pending steps change in hybrids left out of ``metas``: the run
        rewrites them too."""
        named = {meta.name for meta in self.metas}
        others = {meta.name: meta for step in pending for meta in step.hybrids() if meta.name not in named}
        for name in sorted(others):
            self._dry_steps_only(others[name], [(step.number, ops) for step in pending
                                                if (ops := step.operations_for(others[name]))])

    def _summary(self) -> None:
        report = self.report
        if report.up_to_date:
            self.say("up to date: nothing to do")
            return
        verb = "would change" if self.dry_run else "changed"
        total = sum(report.objects.values())
        parts = [f"{len(report.steps)} step{'s' * (len(report.steps) != 1)} run"] if not self.dry_run else []
        parts.append(f"{total} object{'s' * (total != 1)} {verb}")
        if report.recorded:
            count = len(report.recorded)
            written = "would be written" if self.dry_run else "written"
            parts.append(f"{count} schema record{'s' * (count != 1)} {written} (no object of those hybrids "
                         "needed a change)")
        for kind, label, left in (("unique", "unique violation", "unbuilt"),
                                  ("onetoone", "one-to-one violation", "unbuilt"),
                                  ("dangling", "dangling relation", "unlinked"),
                                  ("mandatory", "mandatory field", "without a value")):
            count = sum(1 for violation in report.violations if violation.kind == kind)
            if count:
                parts.append(f"{count} {label}{'s' * (count != 1)} left {left} (see above)")
        if report.violations:
            parts[-1] += "; fix the data and run dal migrate again"
        self.say(("dry run: " if self.dry_run else "migrated: ") + ", ".join(parts))
