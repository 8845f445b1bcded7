"""A step naming a property the model does not declare: ``dal migrate`` must refuse it (exit 2)."""

from __future__ import annotations

from migrate_hybrids import declare

from dal.tools.migrate.migrations import Step
from dal.tools.migrate.migrator import migration

MODEL = declare(3, prefix="mgbad")


@migration(1, "rename to a property nobody declared")
def _(step: Step) -> None:
    step.rename_property(MODEL.disk, "size", "nosuch")
