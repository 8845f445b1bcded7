"""Schema records: what saves record, what the query planner may trust, and what it costs."""

from __future__ import annotations

import dataclasses
from collections import Counter
from typing import Any

import pytest
from migrate_hybrids import declare

from dal.backends.base import Delete, DeletePrefix, Entry, Put
from dal.config import Context
from dal.objects import schema
from dal.objects.schema import SchemaRecord, read_record, ready_indexes


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(schema, "time", fake)
    return fake


def count_gets(context: Context, monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Count durable gets by key from now on."""
    counts: Counter[str] = Counter()
    real = context.persistent.get

    def get(key: str) -> Entry | None:
        counts[key] += 1
        return real(key)

    monkeypatch.setattr(context.persistent, "get", get)
    return counts


def count_commits(context: Context, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    commits: list[Any] = []
    real = context.persistent.commit

    def commit(checks: Any, ops: Any) -> Any:
        commits.append(ops)
        return real(checks, ops)

    monkeypatch.setattr(context.persistent, "commit", commit)
    return commits


def test_the_first_save_into_an_empty_hybrid_records_every_key_ready(context: Context) -> None:
    model = declare(2)
    meta = model.disk._meta
    assert read_record(context, "mgdisk") is None
    assert ready_indexes(context, meta) == frozenset()
    model.disk(data={"name": "a", "serial": "s1"}).save()
    record = read_record(context, "mgdisk")
    assert record is not None
    assert record.indexed == {"name", "tier"} and record.unique == {"serial"}
    assert record.model == schema.describe(meta)
    assert record.fingerprint == schema.model_fingerprint(record.model)
    assert record.model["properties"]["tier"] == {"type": {"enum": ["gold", "silver"]}, "default": "silver",
                                                  "mandatory": True, "indexed": True, "unique": False}
    schema.forget(context)
    assert ready_indexes(context, meta) == {"name", "tier", "serial"}


def test_a_hybrid_without_indexed_or_unique_properties_gets_no_record(
        context: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    model = declare(2)
    commits = count_commits(context, monkeypatch)
    model.owner(data={"name": "x"}).save()
    assert len(commits) == 1  # nothing could be ready, so recording would only cost a commit
    assert read_record(context, "mgowner") is None


def test_documents_without_a_record_make_nothing_ready_until_migrate(
        context: Context, monkeypatch: pytest.MonkeyPatch, clock: Clock) -> None:
    old = declare(1)
    old.disk(data={"name": "a"}).save()
    # a store written before schema records existed
    context.persistent.commit([], [Delete(context.keys.schema("mgdisk"))])
    schema.forget(context)
    new = declare(2)
    commits = count_commits(context, monkeypatch)
    new.disk(data={"name": "b"}).save()
    assert read_record(context, "mgdisk") is None, "documents of unknown keys exist: only migrate may record"
    assert ready_indexes(context, new.disk._meta) == frozenset()
    assert len(commits) == 2  # the refused record, then the save
    clock.now += 10 * schema.READY_TTL
    new.disk(data={"name": "c"}).save()
    assert len(commits) == 3, "a refused record is not tried again: only the save commits"


def test_saves_never_mark_a_newly_declared_index_ready_and_drop_what_they_do_not_maintain(
        context: Context) -> None:
    old = declare(1)
    old.disk(data={"name": "a", "legacy": "x"}).save()
    record = read_record(context, "mgdisk")
    assert record is not None and record.indexed == {"name", "legacy"} and record.unique == {"legacy"}
    new = declare(2)  # legacy is no longer indexed or unique; tier is new, serial became unique
    new.disk(data={"name": "b"}).save()
    record = read_record(context, "mgdisk")
    assert record is not None and record.indexed == {"name"} and not record.unique
    assert record.model == schema.describe(old.disk._meta), "the documents were not brought up to date"
    assert ready_indexes(context, new.disk._meta) == {"name"}
    # the old model still running elsewhere must not trust what the new one dropped, once it re-reads
    schema.forget(context)
    assert ready_indexes(context, old.disk._meta) == {"name"}


def test_a_property_both_indexed_and_unique_is_ready_only_when_both_are() -> None:
    meta = declare(1).disk._meta  # legacy is indexed and unique
    record = SchemaRecord("mgdisk", {}, "", frozenset({"name", "legacy"}), frozenset())
    assert record.ready_for(meta) == {"name"}
    assert record.replace(unique={"legacy"}).ready_for(meta) == {"name", "legacy"}


def test_ready_indexes_reads_the_record_at_most_once_per_ttl(
        context: Context, monkeypatch: pytest.MonkeyPatch, clock: Clock) -> None:
    model = declare(2)
    meta = model.disk._meta
    model.disk(data={"name": "a"}).save()
    gets = count_gets(context, monkeypatch)
    record_key = context.keys.schema("mgdisk")
    clock.now += schema.READY_TTL
    for _ in range(50):
        assert ready_indexes(context, meta) == {"name", "tier", "serial"}
    assert gets[record_key] == 1
    # another process (dal migrate, an older model) changes the record: seen once the TTL passed
    stored = read_record(context, "mgdisk")
    assert stored is not None
    context.persistent.commit([], [Put(record_key, stored.replace(indexed={"name"}).encode())])
    clock.now += schema.READY_TTL / 2
    assert ready_indexes(context, meta) == {"name", "tier", "serial"}
    clock.now += schema.READY_TTL
    assert ready_indexes(context, meta) == {"name", "serial"}


def test_saves_pay_for_the_record_once_per_ttl(
        context: Context, monkeypatch: pytest.MonkeyPatch, clock: Clock) -> None:
    model = declare(2)
    gets = count_gets(context, monkeypatch)
    commits = count_commits(context, monkeypatch)
    for index in range(20):
        model.disk(data={"name": f"d{index}"}).save()
    record_key = context.keys.schema("mgdisk")
    assert gets[record_key] == 1
    assert len(commits) == 21  # one record, then one commit per save
    clock.now += schema.READY_TTL
    model.disk(data={"name": "later"}).save()
    assert gets[record_key] == 2 and len(commits) == 22, "a re-check reads, but writes only to fix"


def test_an_unreadable_record_trusts_nothing_and_is_left_for_migrate(context: Context) -> None:
    model = declare(2)
    key = context.keys.schema("mgdisk")
    context.persistent.commit([], [Put(key, b"not json")])
    model.disk(data={"name": "a"}).save()
    assert ready_indexes(context, model.disk._meta) == frozenset()
    entry = context.persistent.get(key)
    assert entry is not None and entry.value == b"not json"


def test_two_contexts_keep_separate_views(pair_urls: Any) -> None:
    first = pair_urls.configure()
    model = declare(2)
    model.disk(data={"name": "a"}).save()
    second = dataclasses.replace(pair_urls, namespace=pair_urls.namespace + "x").configure()
    try:
        assert ready_indexes(second, model.disk._meta) == frozenset()
        assert ready_indexes(first, model.disk._meta) == {"name", "tier", "serial"}
    finally:
        second.persistent.commit([], [DeletePrefix(second.keys.root)])
