"""Growing a store of ``BenchRecord``s for ``python -m bench.scale``, through dal's batched load path.

Records are written by :func:`dal.tools.transfer.load.load`, the function behind ``dal load``:
every chunk of records is validated and checked against the store (guids, unique values) like
a dump, then written in batches, each batch ONE commit holding its records' documents, unique
keys and index entries as :func:`dal.objects.transaction.plan_write` plans them. The first
chunk, into the empty namespace, records ``BenchRecord``'s schema (``ensure_recorded``), so
``name`` and ``group`` count as ready and queries use their keys (checked).

Record ``n`` is ``bench.hybrids.record_data(n)`` with its ``group`` set to ``n // RESULT``, so a
store of N records has N / RESULT groups of exactly RESULT records, at every size it grows
through. A uniform sample of the stored guids is kept by reservoir sampling, never the list
of every guid (which would be the process's largest memory at a million objects).
"""

from __future__ import annotations

import random
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from bench.hybrids import BenchRecord, group_name, record_data
from dal.config import Context
from dal.objects.schema import ready_indexes
from dal.tools.transfer.dump import Dump
from dal.tools.transfer.load import load

#: records per group, so objects an indexed query returns
RESULT = 100
#: guids kept as a uniform sample of the store, for the single loads
SAMPLE = 1000
#: records validated and loaded per call of ``load`` (each call holds its chunk in memory)
CHUNK = 20_000


@dataclass(frozen=True)
class Batching:
    """How ``load`` cuts a store's records into commits (its ``batch_size`` and ``max_ops``)."""

    batch_size: int
    max_ops: int


@dataclass
class Store:
    """A namespace being grown, what it holds, and how long writing it took."""

    name: str
    context: Context
    batching: Batching
    count: int = 0
    seconds: float = 0.0
    commits: int = 0
    sample: list[str] = field(default_factory=list)
    rng: random.Random = field(default_factory=lambda: random.Random(16))

    def grow_to(self, target: int) -> float:
        """Load records until ``target`` are stored; return the seconds this step took."""
        if target % RESULT or target < self.count:
            raise ValueError(f"cannot grow {self.count:,} records to {target:,}: sizes must grow, "
                             f"in multiples of {RESULT}")
        began = time.perf_counter()
        while self.count < target:
            self._load_chunk(min(CHUNK, target - self.count))
        step = time.perf_counter() - began
        self.seconds += step
        if ready_indexes(self.context, BenchRecord._meta) != {"name", "group"}:
            raise AssertionError(f"{self.name}: the load did not record BenchRecord's indexes as ready")
        return step

    def _load_chunk(self, size: int) -> None:
        meta = BenchRecord._meta
        records: list[tuple[str, Any]] = []
        for number in range(self.count, self.count + size):
            data = record_data(number)
            data["group"] = group_name(number // RESULT)
            guid = str(uuid.uuid4())
            records.append((guid, data))
            self._sampled(number, guid)
        result = load(self.context, Dump(self.context.namespace, {meta.name: records}),
                      batch_size=self.batching.batch_size, max_ops=self.batching.max_ops)
        if result.total != size:
            raise AssertionError(f"{self.name}: loaded {result.total} of {size} records")
        self.count += size
        self.commits += result.batches

    def _sampled(self, number: int, guid: str) -> None:
        """Reservoir sampling (algorithm R): keep ``guid`` with probability SAMPLE / (number + 1)."""
        if len(self.sample) < SAMPLE:
            self.sample.append(guid)
            return
        slot = self.rng.randrange(number + 1)
        if slot < SAMPLE:
            self.sample[slot] = guid

    def groups(self, wanted: int) -> list[str]:
        """Return ``wanted`` group names spread evenly over every group stored."""
        total = self.count // RESULT
        chosen = min(wanted, total)
        return [group_name(index * total // chosen) for index in range(chosen)]
