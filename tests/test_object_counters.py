"""The object cache's counters: a hit is a document served from the cache, nothing else.

A cached document this process may not serve (older than a revision it has seen, or unsure and
checked against the durable store) is counted as a miss, with ``object_stale`` or
``object_unsure`` besides, on single and batch loads alike: ``object_hits + object_misses`` is
the number of cached loads, and ``object_hits`` the number the cache served.
"""

from __future__ import annotations

from collections.abc import Callable

from hybrids import Kind

from dal import DataList
from dal.cache.seen import Seen, Verdict
from dal.config import Context


def _counting(context: Context) -> Callable[[], dict[str, float]]:
    """Return what gives the object counters grown since this call (those that grew only)."""
    before = dict(context.stats.snapshot())

    def grown() -> dict[str, float]:
        after = context.stats.snapshot()
        return {event: after[event] - before.get(event, 0) for event in sorted(after)
                if event.startswith("object_") and after[event] != before.get(event, 0)}

    return grown


def _replayed(context: Context, count: int) -> tuple[list[Kind], Callable[[], None]]:
    """Save ``count`` kinds, cache the first, rename it; return them and what writes its older
    cached document back (a replay: authentic, but older than the revision this process saved)."""
    kinds = [Kind(data={"name": f"k{n}", "code": f"k{n}"}) for n in range(count)]
    for kind in kinds:
        kind.save()
    key = context.keys.cached_doc(Kind._meta.name, kinds[0].guid)
    assert Kind(kinds[0].guid).name == "k0"
    old = context.volatile.get(key)
    assert old is not None
    kinds[0].name = "renamed"
    kinds[0].save()

    def replay() -> None:
        assert context.volatile.set(key, old, 60)

    return kinds, replay


def test_a_stale_cached_document_counts_as_a_miss_never_a_hit(stores: Context) -> None:
    kinds, replay = _replayed(stores, 5)
    replay()
    grown = _counting(stores)
    assert Kind(kinds[0].guid).name == "renamed"
    assert grown() == {"object_misses": 1, "object_stale": 1, "object_fills": 1}
    grown = _counting(stores)
    assert Kind(kinds[0].guid).name == "renamed"  # the durable document, cached by that load
    assert grown() == {"object_hits": 1}


def test_a_batch_counts_its_stale_cached_documents_as_misses(stores: Context) -> None:
    kinds, replay = _replayed(stores, 5)
    replay()
    grown = _counting(stores)
    assert [kind.name for kind in DataList(Kind, guids=[kinds[0].guid])] == ["renamed"]
    assert grown() == {"object_misses": 1, "object_stale": 1}
    assert Kind(kinds[1].guid).name == "k1"  # now cached: one real hit in the batch below
    replay()
    grown = _counting(stores)
    names = {kind.guid: kind.name for kind in DataList(Kind, guids=[kind.guid for kind in kinds])}
    assert names[kinds[0].guid] == "renamed"
    assert grown() == {"object_hits": 1, "object_misses": 4, "object_stale": 1}


def test_an_unsure_cached_document_read_from_the_store_counts_as_a_miss(stores: Context) -> None:
    kinds, replay = _replayed(stores, 2)
    replay()

    def forget() -> None:
        stores.seen = Seen(capacity=4)
        stores.seen.note(Kind._meta.name, kinds[0].guid, 10**9)  # seen, then forgotten into its slot
        for n in range(4):
            stores.seen.note("other", f"g{n}", 1)
        assert stores.seen.verdict(Kind._meta.name, kinds[0].guid, 1) is Verdict.UNSURE

    forget()
    grown = _counting(stores)
    assert Kind(kinds[0].guid).name == "renamed"  # checked against the store, never the old entry
    assert grown() == {"object_misses": 1, "object_unsure": 1}
    forget()
    grown = _counting(stores)
    assert [kind.name for kind in DataList(Kind, guids=[kinds[0].guid])] == ["renamed"]
    assert grown() == {"object_misses": 1, "object_unsure": 1}


def test_hits_and_misses_add_up_to_the_cached_loads(stores: Context) -> None:
    kinds, _ = _replayed(stores, 3)
    grown = _counting(stores)
    for kind in kinds:
        Kind(kind.guid)  # kinds[0] was invalidated by its rename: a miss, then two more
    list(DataList(Kind, guids=[kind.guid for kind in kinds]))
    assert grown() == {"object_hits": 3, "object_misses": 3, "object_fills": 3}
