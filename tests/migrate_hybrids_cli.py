"""Version 3 of ``migrate_hybrids`` under the prefix ``mgcli``, with its steps declared the way users
declare them: the module ``dal migrate --hybrids migrate_hybrids_cli`` imports in a subprocess."""

from __future__ import annotations

from migrate_hybrids import bump, declare, rename

from dal.tools.migrate.migrator import migration

MODEL = declare(3, prefix="mgcli")
MigOwner = MODEL.owner
MigDisk = MODEL.disk

migration(1, "rename Disk.size and Disk.user")(rename(MODEL))
migration(2, "count generations")(bump(MODEL))
