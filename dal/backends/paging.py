"""The paged scan: every key under a prefix of a durable store, a bounded batch at a time.

Dumps, migrations, ``dal check``, link scans and query scans all read this way, so a prefix
of any size never has to fit in memory or in one answer of the store.
"""

from __future__ import annotations

from collections.abc import Iterator

from dal.backends.base import Entry, PersistentStore

#: keys per batch unless a caller asks for another size
SCAN_BATCH = 1000


def scan_batches(store: PersistentStore, prefix: str, size: int = SCAN_BATCH, *,
                 start_after: str | None = None) -> Iterator[list[tuple[str, Entry]]]:
    """Yield the keys under ``prefix`` (after ``start_after``) in key order, ``size`` at a time at most."""
    start = start_after
    while True:
        batch = store.scan(prefix, start_after=start, limit=size)
        if batch:
            yield batch
        if len(batch) < size:
            return
        start = batch[-1][0]


def scan_all(store: PersistentStore, prefix: str) -> list[tuple[str, Entry]]:
    """Return every key under ``prefix``, scanning in batches."""
    return [item for batch in scan_batches(store, prefix) for item in batch]
