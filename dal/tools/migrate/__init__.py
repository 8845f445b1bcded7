"""``dal migrate``: numbered migration steps, defaults, index and unique keys, schema records."""

from dal.tools.migrate.migrator import Migrator, migrate, migration

__all__ = ["Migrator", "migrate", "migration"]
