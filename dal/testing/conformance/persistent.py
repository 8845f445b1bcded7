"""The conformance suite of persistent stores (see :mod:`dal.testing.conformance`)."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable

import pytest

from dal.backends import close_all
from dal.backends.base import (
    Check,
    Delete,
    DeletePrefix,
    Entry,
    Exists,
    Op,
    PersistentStore,
    PrefixEmpty,
    PrefixUnchanged,
    Put,
    Revision,
)
from dal.exceptions import InvalidValueError
from dal.testing.conformance.leadership import LeadershipContract
from dal.testing.conformance.values import MEGABYTE, ODD_VALUES


def _reopen(store: PersistentStore) -> PersistentStore:
    """Open a new client of the data ``store`` reaches, through its own class (the protocol's
    ``from_url``), not dal's registry: a third-party backend's scheme need not be registered."""
    return type(store).from_url(store.url)


def _put(store: PersistentStore, items: dict[str, bytes]) -> int:
    """Write ``items`` in one commit and return its revision."""
    result = store.commit([], [Put(key, value) for key, value in items.items()])
    assert result.ok, result
    assert result.revision > 0
    return result.revision


class PersistentStoreContract(LeadershipContract):
    """Conformance tests for :class:`dal.backends.base.PersistentStore` implementations, leases included."""

    # --- identity -----------------------------------------------------------------------

    def test_satisfies_protocol(self, store: PersistentStore) -> None:
        assert isinstance(store, PersistentStore)
        assert store.url.scheme == store.scheme
        assert isinstance(store.ambiguous_commits, bool)
        assert store.timeout > 0

    def test_identity_names_the_data_not_the_client(self, store: PersistentStore) -> None:
        name = store.identity()
        assert isinstance(name, str) and name
        assert store.identity() == name
        if store.shared:  # a new client of the same data (after a restart, say) names it alike
            close_all()
            reopened = _reopen(store)
            try:
                assert reopened.identity() == name
            finally:
                reopened.close()
        assert isinstance(store.shared, bool)

    # --- reads and writes ---------------------------------------------------------------

    def test_absent_get_is_none(self, store: PersistentStore, prefix: str) -> None:
        assert store.get(f"{prefix}missing") is None

    @pytest.mark.parametrize("value", ODD_VALUES, ids=["empty", "non-utf8", "all-bytes", "json"])
    def test_round_trip_of_arbitrary_bytes(self, store: PersistentStore, prefix: str, value: bytes) -> None:
        revision = _put(store, {f"{prefix}k": value})
        entry = store.get(f"{prefix}k")
        assert entry == Entry(value, revision)
        assert type(entry.value) is bytes

    def test_round_trip_of_one_megabyte(self, store: PersistentStore, prefix: str) -> None:
        value = bytes(i % 251 for i in range(MEGABYTE))
        revision = _put(store, {f"{prefix}big": value})
        assert store.get(f"{prefix}big") == Entry(value, revision)

    def test_overwrite_replaces_value_and_revision(self, store: PersistentStore, prefix: str) -> None:
        first = _put(store, {f"{prefix}k": b"one"})
        second = _put(store, {f"{prefix}k": b"two"})
        assert store.get(f"{prefix}k") == Entry(b"two", second)
        assert second > first

    def test_unicode_keys(self, store: PersistentStore, prefix: str) -> None:
        keys = [f"{prefix}ключ", f"{prefix}日本/語", f"{prefix}emoji 😀", f"{prefix}é ü\tß"]
        revision = _put(store, {key: key.encode() for key in keys})
        for key in keys:
            assert store.get(key) == Entry(key.encode(), revision)
        assert [key for key, _ in store.scan(prefix)] == sorted(keys)

    def test_a_lone_surrogate_in_a_key_is_an_invalid_value(self, store: PersistentStore, prefix: str) -> None:
        # UTF-8, which keys are stored in, cannot encode one: every call naming one refuses it alike
        # (SQLite raised UnicodeEncodeError, memory:// took it), and a commit naming one writes nothing
        key, fine = f"{prefix}\ud800", f"{prefix}fine"
        calls: list[Callable[[], object]] = [
            lambda: store.get(key), lambda: store.get_many([fine, key]), lambda: store.scan(key),
            lambda: store.scan(prefix, start_after=key), lambda: store.scan_keys([prefix, key]),
            *(lambda op=op: store.commit([], [Put(fine, b"v"), op])
              for op in (Put(key, b"v"), Delete(key), DeletePrefix(key))),
            *(lambda check=check: store.commit([check], [Put(fine, b"v")])
              for check in (Revision(key, 0), Exists(key), PrefixEmpty(key), PrefixUnchanged(key, 0)))]
        for call in calls:
            with pytest.raises(InvalidValueError, match="surrogate"):
                call()
        assert store.scan(prefix) == []

    def test_commit_with_100_puts(self, store: PersistentStore, prefix: str) -> None:
        items = {f"{prefix}{i:03d}": str(i).encode() for i in range(100)}
        revision = _put(store, items)
        assert store.get_many(list(items)) == {key: Entry(value, revision) for key, value in items.items()}

    # --- revisions ----------------------------------------------------------------------

    def test_revisions_strictly_increase(self, store: PersistentStore, prefix: str) -> None:
        revisions = [_put(store, {f"{prefix}k{i % 3}": b"x"}) for i in range(10)]
        assert all(revision > 0 for revision in revisions)
        assert all(later > earlier for earlier, later in itertools.pairwise(revisions))

    def test_every_key_of_a_commit_carries_its_revision(self, store: PersistentStore, prefix: str) -> None:
        _put(store, {f"{prefix}a": b"old", f"{prefix}untouched": b"u"})
        untouched = store.get(f"{prefix}untouched")
        revision = _put(store, {f"{prefix}a": b"1", f"{prefix}b": b"2", f"{prefix}c/d": b"3"})
        for key in ("a", "b", "c/d"):
            entry = store.get(f"{prefix}{key}")
            assert entry is not None and entry.revision == revision
        assert store.get(f"{prefix}untouched") == untouched

    # --- checks -------------------------------------------------------------------------

    def test_revision_zero_holds_on_absent_key(self, store: PersistentStore, prefix: str) -> None:
        result = store.commit([Revision(f"{prefix}k", 0)], [Put(f"{prefix}k", b"v")])
        assert result.ok and result.failed == ()
        assert store.get(f"{prefix}k") == Entry(b"v", result.revision)

    def test_revision_zero_fails_on_present_key(self, store: PersistentStore, prefix: str) -> None:
        revision = _put(store, {f"{prefix}k": b"v"})
        result = store.commit([Revision(f"{prefix}k", 0)], [Put(f"{prefix}k", b"other")])
        assert not result.ok
        assert result.failed == (0,)
        assert dict(result.current) == {f"{prefix}k": Entry(b"v", revision)}
        assert store.get(f"{prefix}k") == Entry(b"v", revision)

    def test_matching_revision_holds(self, store: PersistentStore, prefix: str) -> None:
        revision = _put(store, {f"{prefix}k": b"v"})
        result = store.commit([Revision(f"{prefix}k", revision)], [Put(f"{prefix}k", b"w")])
        assert result.ok
        assert store.get(f"{prefix}k") == Entry(b"w", result.revision)

    def test_failing_checks_report_indexes_and_current(self, store: PersistentStore, prefix: str) -> None:
        first = _put(store, {f"{prefix}a": b"A", f"{prefix}b": b"B", f"{prefix}dir/x": b"X"})
        stale = _put(store, {f"{prefix}b": b"B2"})
        checks: list[Check] = [
            Revision(f"{prefix}a", first),  # holds
            Revision(f"{prefix}b", first),  # fails: b moved on to `stale`
            Exists(f"{prefix}absent"),  # fails: absent, so absent from `current`
            PrefixEmpty(f"{prefix}dir/"),  # fails: dir/x is there
            Revision(f"{prefix}gone", 7),  # fails: absent, so absent from `current`
            Revision(f"{prefix}nothing", 0),  # holds
            Exists(f"{prefix}a"),  # holds
        ]
        result = store.commit(checks, [Put(f"{prefix}a", b"new")])
        assert not result.ok
        assert result.failed == (1, 2, 3, 4)  # every failing check, in ascending order
        assert dict(result.current) == {f"{prefix}b": Entry(b"B2", stale)}
        assert store.get(f"{prefix}a") == Entry(b"A", first)

    def test_exists(self, store: PersistentStore, prefix: str) -> None:
        revision = _put(store, {f"{prefix}here": b"h"})
        assert store.commit([Exists(f"{prefix}here")], [Put(f"{prefix}out", b"1")]).ok
        failed = store.commit([Exists(f"{prefix}missing")], [Put(f"{prefix}out", b"2")])
        assert not failed.ok and failed.failed == (0,) and dict(failed.current) == {}
        out = store.get(f"{prefix}out")
        assert out is not None and out.value == b"1"
        assert store.get(f"{prefix}here") == Entry(b"h", revision)

    def test_prefix_empty_is_an_exact_string_prefix(self, store: PersistentStore, prefix: str) -> None:
        _put(store, {f"{prefix}a/bc/1": b"", f"{prefix}a/b": b""})
        # Neither a sibling sharing the spelling ('a/bc/') nor the bare name ('a/b') is under 'a/b/'.
        assert store.commit([PrefixEmpty(f"{prefix}a/b/")], []).ok
        # Without the delimiter the prefix is a plain string prefix, so both keys are under it.
        assert store.commit([PrefixEmpty(f"{prefix}a/b")], []).failed == (0,)
        assert store.commit([PrefixEmpty(f"{prefix}a/bc/")], []).failed == (0,)
        _put(store, {f"{prefix}a/b/": b""})  # a key equal to the prefix is under it
        result = store.commit([PrefixEmpty(f"{prefix}a/b/")], [Put(f"{prefix}marker", b"")])
        assert not result.ok and result.failed == (0,) and dict(result.current) == {}
        assert store.get(f"{prefix}marker") is None
        assert store.commit([PrefixEmpty(f"{prefix}zzz/")], []).ok

    def test_prefix_unchanged_fails_once_a_key_is_written_under_it_after_the_revision(
            self, store: PersistentStore, prefix: str) -> None:
        assert store.commit([PrefixUnchanged(f"{prefix}links/", 0)], []).ok  # empty: holds
        first = _put(store, {f"{prefix}links/a": b"", f"{prefix}linksx/z": b""})
        assert store.commit([PrefixUnchanged(f"{prefix}links/", first)], []).ok
        assert store.commit([PrefixUnchanged(f"{prefix}links/", first - 1)], []).failed == (0,)
        _put(store, {f"{prefix}linksx/y": b""})  # a sibling sharing the spelling is not under it
        assert store.commit([PrefixUnchanged(f"{prefix}links/", first)], []).ok
        _put(store, {f"{prefix}links/b": b""})  # added after `first`
        result = store.commit([Exists(f"{prefix}links/a"), PrefixUnchanged(f"{prefix}links/", first)],
                              [Put(f"{prefix}marker", b"")])
        assert not result.ok and result.failed == (1,) and dict(result.current) == {}
        assert store.get(f"{prefix}marker") is None
        rewritten = _put(store, {f"{prefix}links/a": b"again"})  # rewriting counts as a change too
        assert store.commit([PrefixUnchanged(f"{prefix}links/", rewritten - 1)], []).failed == (0,)
        deleted = store.commit([], [Delete(f"{prefix}links/a"), Delete(f"{prefix}links/b")])
        assert deleted.ok
        assert store.commit([PrefixUnchanged(f"{prefix}links/", 0)], []).ok  # empty again

    # --- atomicity ----------------------------------------------------------------------

    def test_failing_commit_writes_nothing(self, store: PersistentStore, prefix: str) -> None:
        kept = _put(store, {f"{prefix}keep/{i:02d}": b"k" for i in range(20)})
        _put(store, {f"{prefix}drop/{i:02d}": b"d" for i in range(20)})
        before = store.scan(prefix)
        ops: list[Op] = [
            *(Put(f"{prefix}new/{i:02d}", b"n") for i in range(40)),
            *(Put(f"{prefix}keep/{i:02d}", b"changed") for i in range(20)),
            *(Delete(f"{prefix}drop/{i:02d}") for i in range(10)),
            DeletePrefix(f"{prefix}drop/"),
        ]
        checks: list[Check] = [Revision(f"{prefix}keep/00", kept), Exists(f"{prefix}nope")]
        result = store.commit(checks, ops)
        assert not result.ok and result.failed == (1,)
        assert store.scan(prefix) == before

    def test_ops_apply_in_order(self, store: PersistentStore, prefix: str) -> None:
        _put(store, {f"{prefix}c": b"0"})
        result = store.commit([], [Put(f"{prefix}a", b"1"), Delete(f"{prefix}a"),
                                   Put(f"{prefix}b", b"1"), DeletePrefix(f"{prefix}b"),
                                   Put(f"{prefix}b", b"2"), Delete(f"{prefix}c"), Put(f"{prefix}c", b"1"),
                                   Put(f"{prefix}c", b"3"), Put(f"{prefix}d", b"1"), Delete(f"{prefix}d")])
        assert result.ok
        assert store.get(f"{prefix}a") is None
        assert store.get(f"{prefix}b") == Entry(b"2", result.revision)
        assert store.get(f"{prefix}c") == Entry(b"3", result.revision)
        assert [key for key, _ in store.scan(prefix)] == [f"{prefix}b", f"{prefix}c"]

    # --- deletes ------------------------------------------------------------------------

    def test_delete(self, store: PersistentStore, prefix: str) -> None:
        _put(store, {f"{prefix}a": b"1", f"{prefix}b": b"2"})
        assert store.commit([], [Delete(f"{prefix}a")]).ok
        assert store.get(f"{prefix}a") is None
        assert store.get(f"{prefix}b") is not None

    def test_delete_of_absent_key_is_fine(self, store: PersistentStore, prefix: str) -> None:
        result = store.commit([], [Delete(f"{prefix}never")])
        assert result.ok
        assert store.get(f"{prefix}never") is None

    def test_delete_prefix_removes_exactly_its_prefix(self, store: PersistentStore, prefix: str) -> None:
        survivors = {f"{prefix}a/b": b"", f"{prefix}a/bc/1": b"", f"{prefix}a/a": b"", f"{prefix}a/c": b""}
        _put(store, {f"{prefix}a/b/": b"", f"{prefix}a/b/1": b"", f"{prefix}a/b/2/3": b"", **survivors})
        assert store.commit([], [DeletePrefix(f"{prefix}a/b/")]).ok
        assert sorted(key for key, _ in store.scan(prefix)) == sorted(survivors)

    # --- multi-key reads ----------------------------------------------------------------

    def test_get_many_returns_only_present_keys(self, store: PersistentStore, prefix: str) -> None:
        revision = _put(store, {f"{prefix}a": b"1", f"{prefix}c": b"3"})
        found = store.get_many([f"{prefix}a", f"{prefix}b", f"{prefix}c", f"{prefix}a"])
        assert found == {f"{prefix}a": Entry(b"1", revision), f"{prefix}c": Entry(b"3", revision)}
        assert store.get_many([]) == {}

    def test_get_many_of_many_keys(self, store: PersistentStore, prefix: str) -> None:
        present: dict[str, Entry] = {}
        for batch in range(2):
            items = {f"{prefix}{batch}/{i:03d}": bytes([i]) for i in range(100)}
            revision = _put(store, items)
            present.update({key: Entry(value, revision) for key, value in items.items()})
        asked = [*present, *(f"{prefix}absent/{i:03d}" for i in range(400))]
        assert store.get_many(asked) == present

    def test_scan_in_key_order(self, store: PersistentStore, prefix: str) -> None:
        # Code-point order: U+FF5A sorts before U+1F600, unlike in UTF-16.
        names = ["b", "a", "a/", "a/b", "ab", "B", "0", "é", "\uff5a", "😀", "z"]
        under = f"{prefix}s/"
        revision = _put(store, {f"{under}{name}": name.encode() for name in names})
        _put(store, {f"{prefix}s": b"outside", f"{prefix}s0": b"outside", f"{prefix}r/z": b"outside"})
        scanned = store.scan(under)
        assert [key for key, _ in scanned] == sorted(f"{under}{name}" for name in names)
        assert all(entry == Entry(key[len(under):].encode(), revision) for key, entry in scanned)
        expected = [f"{under}{name}" for name in ("a", "a/", "a/b", "ab")]
        assert [key for key, _ in store.scan(f"{under}a")] == expected
        assert store.scan(f"{prefix}nothing") == []

    def test_scan_start_after_and_limit(self, store: PersistentStore, prefix: str) -> None:
        keys = [f"{prefix}{i}" for i in "abcdef"]
        _put(store, dict.fromkeys(keys, b""))
        assert [key for key, _ in store.scan(prefix, limit=2)] == keys[:2]
        assert [key for key, _ in store.scan(prefix, start_after=keys[1])] == keys[2:]
        assert [key for key, _ in store.scan(prefix, start_after=keys[1], limit=3)] == keys[2:5]
        # start_after need not be a stored key
        assert [key for key, _ in store.scan(prefix, start_after=f"{prefix}c0")] == keys[3:]
        assert store.scan(prefix, start_after=keys[-1]) == []
        assert [key for key, _ in store.scan(prefix, limit=100)] == keys

    def test_scan_keys_of_several_prefixes(self, store: PersistentStore, prefix: str) -> None:
        _put(store, {f"{prefix}a/1": b"", f"{prefix}a/2": b"x", f"{prefix}a2/1": b"", f"{prefix}b/1": b""})
        found = store.scan_keys([f"{prefix}a/", f"{prefix}b/", f"{prefix}c/", f"{prefix}a/"])
        assert found == {f"{prefix}a/": [f"{prefix}a/1", f"{prefix}a/2"], f"{prefix}b/": [f"{prefix}b/1"],
                         f"{prefix}c/": []}
        assert store.scan_keys([]) == {}

    def test_scan_keys_of_many_prefixes_and_many_keys(self, store: PersistentStore, prefix: str) -> None:
        # more prefixes than one etcd transaction takes
        for start in range(0, 300, 100):
            _put(store, {f"{prefix}p{n:03d}/k": b"" for n in range(start, start + 100)})
        for start in range(0, 2500, 100):
            _put(store, {f"{prefix}big/{n:05d}": b"" for n in range(start, start + 100)})
        found = store.scan_keys([f"{prefix}p{n:03d}/" for n in range(300)] + [f"{prefix}big/"])
        assert all(found[f"{prefix}p{n:03d}/"] == [f"{prefix}p{n:03d}/k"] for n in range(300))
        assert found[f"{prefix}big/"] == [f"{prefix}big/{n:05d}" for n in range(2500)]

    def test_paging_sees_each_key_once(self, store: PersistentStore, prefix: str) -> None:
        keys = [f"{prefix}p/{i:04d}" for i in range(250)]
        for start in range(0, 250, 100):
            _put(store, dict.fromkeys(keys[start:start + 100], b"v"))
        seen: list[str] = []
        sizes: list[int] = []
        start_after: str | None = None
        for _ in range(10):  # bounded: a scan that does not advance must fail, not loop
            batch = store.scan(f"{prefix}p/", start_after=start_after, limit=100)
            if not batch:
                break
            sizes.append(len(batch))
            seen.extend(key for key, _ in batch)
            start_after = batch[-1][0]
        assert seen == keys
        assert sizes == [100, 100, 50]

    # --- concurrency and durability -----------------------------------------------------

    def test_concurrent_increments_lose_no_update(self, store: PersistentStore, prefix: str) -> None:
        key, threads, increments = f"{prefix}counter", 8, 25
        deadline = time.monotonic() + 120  # a backend whose checks never hold must fail, not hang
        errors: list[BaseException] = []

        def work() -> None:
            try:
                for _ in range(increments):
                    while time.monotonic() < deadline:
                        entry = store.get(key)
                        count, revision = (0, 0) if entry is None else (int(entry.value), entry.revision)
                        if store.commit([Revision(key, revision)], [Put(key, str(count + 1).encode())]).ok:
                            break
            except BaseException as exc:  # surfaced below: a thread's failure must fail the test
                errors.append(exc)

        workers = [threading.Thread(target=work) for _ in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        assert not errors, errors
        assert time.monotonic() < deadline, "increments did not finish in time"
        entry = store.get(key)
        assert entry is not None and int(entry.value) == threads * increments

    def test_data_survives_close_and_reopen(self, store: PersistentStore, prefix: str) -> None:
        # a store of this process only need not outlive its client, unless it says it does
        if not getattr(store, "outlives_its_client", store.shared):
            pytest.skip("a store other processes cannot see need not outlive its client")
        revision = _put(store, {f"{prefix}durable": b"still here"})
        # As an application restart would: every cached client of the registry is dropped (so
        # fixtures must reopen their stores rather than keep this one) and a new client opened.
        close_all()
        reopened = _reopen(store)
        try:
            assert reopened is not store
            assert reopened.get(f"{prefix}durable") == Entry(b"still here", revision)
            assert reopened.commit([], [Put(f"{prefix}after", b"")]).revision > revision
        finally:
            reopened.close()
