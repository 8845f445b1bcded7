"""Reverse lists read warm: a cached guid list and cached documents, never a stale member.

A reverse list (``shelf.books``) is a query whose guids are cached in the volatile store
(``dal.query.results``) and whose members load in batches (``DataObject._load_many``), each
given its owner without a round trip. These tests read a list warm (result and documents
cached), change its members elsewhere (another context, another process), and read it again.
"""

from __future__ import annotations

import multiprocessing
import uuid
from typing import Any

import pytest
from conftest import PairURLs
from relation_hybrids import BladeServer, Book, Cabinet, Device, Shelf

from dal import DataList, configure
from dal.backends.base import DeletePrefix
from dal.config import Context


def _warm(shelf: Shelf) -> list[str]:
    """Read the shelf's books twice; return their titles, checking the second read was a cache hit."""
    assert sorted(book.title for book in shelf.books)  # the first read computes and caches the guids
    listed = shelf.books
    titles = sorted(book.title for book in listed)
    assert listed.explain().cache == "hit"
    return titles


def _stock(label: str, count: int) -> tuple[Shelf, list[Book]]:
    shelf = Shelf(data={"label": label})
    shelf.save()
    books = [Book(data={"title": f"b{number}", "shelf": shelf}) for number in range(count)]
    for book in books:
        book.save()
    return shelf, books


def _change_elsewhere(persistent: str, volatile: str, namespace: str, shelf: str, other: str,
                      moved: str, deleted: str, renamed: str) -> str:
    """In another process: move a book to the other shelf, delete one, rename one, add one."""
    configure(persistent, volatile, namespace=namespace)
    book = Book(moved)
    book.shelf = Shelf(other)
    book.save()
    Book(deleted).delete()
    book = Book(renamed)
    book.title = "renamed"
    book.save()
    added = Book(data={"title": "added", "shelf": Shelf(shelf)})
    added.save()
    return added.guid


@pytest.mark.etcd
@pytest.mark.memcached
def test_a_warm_reverse_list_sees_what_another_process_changed(etcd_server: Any,
                                                                 memcached_server: Any) -> None:
    namespace = f"t{uuid.uuid4().hex[:12]}"
    context = configure(etcd_server.url, memcached_server.url, namespace=namespace)
    shelf, books = _stock("s", 4)
    other = Shelf(data={"label": "other"})
    other.save()
    assert _warm(shelf) == ["b0", "b1", "b2", "b3"]
    assert other.books_guids == []
    spawn = multiprocessing.get_context("spawn")
    with spawn.Pool(1) as pool:
        added = pool.apply(_change_elsewhere, (etcd_server.url, memcached_server.url, namespace, shelf.guid,
                                               other.guid, books[1].guid, books[2].guid, books[0].guid))
    # neither the cached guids nor a cached document may be served: every change shows
    assert sorted(book.title for book in shelf.books) == ["added", "b3", "renamed"]
    assert sorted(shelf.books_guids) == sorted([books[0].guid, books[3].guid, added])
    assert [book.title for book in other.books] == ["b1"]
    assert all(book.shelf is shelf for book in shelf.books)
    context.persistent.commit([], [DeletePrefix(context.keys.root)])


def test_a_warm_reverse_list_sees_what_another_context_changed(pair_urls: PairURLs) -> None:
    pair_urls.configure()
    shelf, books = _stock("s", 3)
    other = Shelf(data={"label": "other"})
    other.save()
    assert _warm(shelf) == ["b0", "b1", "b2"]
    pair_urls.configure()  # another context: nothing of the first one's state is used
    moved = Book(books[0].guid)
    moved.shelf = Shelf(other.guid)
    moved.save()
    Book(books[1].guid).delete()
    pair_urls.configure()
    assert sorted(book.title for book in Shelf(shelf.guid).books) == ["b2"]
    assert Shelf(shelf.guid).books_guids == [books[2].guid]
    assert [book.title for book in Shelf(other.guid).books] == ["b0"]


def test_a_warm_reverse_list_follows_its_subclass_hybrid_members(context: Context) -> None:
    """BladeServer inherits Device's relation: moving or deleting one invalidates the list too."""
    site, elsewhere = Cabinet(data={"name": "site"}), Cabinet(data={"name": "elsewhere"})
    site.save()
    elsewhere.save()
    made = [cls(data={"name": f"{cls.__name__}{n}", "site": site, "cabinet": site})
            for n in range(2) for cls in (Device, BladeServer)]
    for obj in made:
        obj.save()
    for _ in range(2):
        assert sorted(obj.name for obj in site.devices) == sorted(obj.name for obj in made)
    listed = site.devices
    assert len(listed) == len(made)
    assert "also listed (result cache: hit)" in str(listed.explain())
    blade, other_blade = (obj for obj in made if type(obj) is BladeServer)
    blade.cabinet = elsewhere
    blade.save()
    other_blade.delete()
    remaining = {obj.guid: obj for obj in site.devices}
    assert sorted(remaining) == sorted(obj.guid for obj in made if type(obj) is Device)
    assert [obj.guid for obj in elsewhere.devices] == [blade.guid]
    assert type(next(iter(elsewhere.devices))) is BladeServer  # a cache hit now
    elsewhere.delete(abandon=["devices"])  # unlinks the blade in the delete's commit
    assert elsewhere.devices_guids == [] and list(elsewhere.devices) == []
    assert BladeServer(blade.guid).cabinet is None


def test_each_member_is_given_its_owner_unless_it_moved_away(context: Context) -> None:
    """Members get the list's owner object itself; one that moved after the guids were read does not."""
    site, elsewhere = Cabinet(data={"name": "site"}), Cabinet(data={"name": "elsewhere"})
    site.save()
    elsewhere.save()
    device = Device(data={"name": "d", "site": site, "cabinet": site})
    blade = BladeServer(data={"name": "b", "site": site, "cabinet": site})
    device.save()
    blade.save()
    listed = site.devices
    assert len(listed) == 2  # the guids are read now, the members later
    moved = BladeServer(blade.guid)
    moved.cabinet = elsewhere
    moved.save()
    members = {obj.guid: obj for obj in listed}
    assert members[device.guid].cabinet is site
    assert members[blade.guid].cabinet_guid == elsewhere.guid
    assert members[blade.guid].cabinet is not site and members[blade.guid].cabinet.name == "elsewhere"
    # the list is of ``cabinet``: a member's other relation to the same owner is loaded, not given
    assert members[device.guid].site == site


def _state(obj: Any) -> dict[str, Any]:
    """An object's loaded state, without what only a batch load adds (its siblings)."""
    return {name: value for name, value in vars(obj).items() if name != "_siblings"}


def test_a_batch_builds_each_member_as_a_load_does(context: Context) -> None:
    """Members of a reverse list and of a query (documents already read) equal ``Cls(guid)``."""
    shelf, books = _stock("s", 3)
    books[1].title = "b1x"
    books[1].save()  # a second revision
    expected = {book.guid: _state(Book(book.guid)) for book in books}
    query = DataList(Book, {"type": "AND", "items": [("title", "IN", ["b0", "b1x", "b2"])]})
    for listed in (list(shelf.books), list(query)):
        # _objects aside: a reverse list's members are given their shelf, a load's are not yet
        assert {obj.guid: {**_state(obj), "_objects": {}} for obj in listed} == expected
