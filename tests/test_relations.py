"""Relations: lazy forward links, reverse accessors, many-to-many, link storage and integrity."""

from __future__ import annotations

import multiprocessing
import random
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import persistent_url_for, round_trips, volatile_url_for
from relation_hybrids import (
    BladeServer,
    Book,
    Cabinet,
    Device,
    Folder,
    Membership,
    Owner,
    Passport,
    Pet,
    Player,
    Shelf,
    Team,
)

from dal import DataList, DataObject, Dynamic, Property, Relation, configure, save_many
from dal.backends.base import DeletePrefix
from dal.config import Context
from dal.exceptions import (
    BackendError,
    InvalidValueError,
    LinkedObjectError,
    MissingMandatoryFieldsError,
    ObjectNotFoundError,
    OneToOneError,
)
from dal.tools.check.integrity import check

EVERY_PERSISTENT = [("memory", "memory"), ("sqlite", "memory"), ("etcd", "memcached")]


@pytest.fixture(params=EVERY_PERSISTENT, ids=["+".join(pair) for pair in EVERY_PERSISTENT])
def every_store(request: pytest.FixtureRequest, tmp_path: Path, namespace: str) -> Iterator[Context]:
    """dal on each persistent backend (with a fitting cache), for the integrity tests."""
    persistent, volatile = request.param
    context = configure(persistent_url_for(persistent, request, tmp_path),
                        volatile_url_for(volatile, request), namespace=namespace)
    yield context
    context.persistent.commit([], [DeletePrefix(context.keys.root)])


def shelf_with_books(count: int, label: str = "s") -> tuple[Shelf, list[Book]]:
    shelf = Shelf(data={"label": label})
    shelf.save()
    books = []
    for number in range(count):
        book = Book(data={"title": f"b{number}", "shelf": shelf})
        book.save()
        books.append(book)
    return shelf, books


# --- forward relations --------------------------------------------------------------------


def test_forward_relation_loads_lazily_once(context: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    shelf, (book,) = shelf_with_books(1)
    loaded = Book(book.guid)
    calls = round_trips(context, monkeypatch)
    assert loaded.shelf_guid == shelf.guid
    assert sum(calls.values()) == 0, "reading the guid must not load anything"
    assert loaded.shelf == shelf and loaded.shelf.label == "s"
    first = sum(calls.values())
    assert first > 0
    assert loaded.shelf is loaded.shelf
    assert sum(calls.values()) == first, "the related object is cached on the instance"


def test_assigning_the_wrong_hybrid_is_refused(context: Context) -> None:
    book = Book(data={"title": "t"})
    with pytest.raises(InvalidValueError, match=re.escape("Book.shelf holds a Shelf")):
        book.shelf = Owner(data={"name": "x"})  # type: ignore[assignment]
    with pytest.raises(InvalidValueError):
        book.shelf_guid = 42


def test_mandatory_relation_is_checked_at_save(context: Context) -> None:
    with pytest.raises(MissingMandatoryFieldsError, match="shelf"):
        Book(data={"title": "t"}).save()


def test_string_forward_reference_and_self_relation(context: Context) -> None:
    owner = Owner(data={"name": "ann"})
    owner.save()
    pet = Pet(data={"name": "rex", "owner": owner})
    pet.save()
    assert Pet(pet.guid).owner == owner
    assert owner.pets_guids == [pet.guid]
    root = Folder(data={"name": "root"})
    root.save()
    child = Folder(data={"name": "child", "parent": root})
    child.save()
    assert Folder(child.guid).parent == root
    assert [f.name for f in root.subfolders] == ["child"]
    root.parent = root  # an object may point at itself
    root.save()
    assert Folder(root.guid).parent_guid == root.guid


def test_a_link_to_another_hybrid_is_checked_even_with_the_objects_own_guid(every_store: Context) -> None:
    """Only a link to the object itself may skip the existence check, not one to another hybrid."""
    book = Book(data={"title": "t"})
    book.shelf_guid = book.guid  # no Shelf has this guid: it is the Book's own
    with pytest.raises(ObjectNotFoundError, match="save the Shelf first"):
        book.save()
    with pytest.raises(ObjectNotFoundError):
        Book(book.guid)
    assert link_keys(every_store) == set()


# --- reverse accessors --------------------------------------------------------------------


def test_reverse_list_is_evaluated_anew_on_each_access(context: Context) -> None:
    shelf, books = shelf_with_books(3)
    listed = shelf.books
    assert isinstance(listed, DataList)
    assert sorted(book.guid for book in listed) == sorted(book.guid for book in books)
    assert sorted(shelf.books_guids) == sorted(book.guid for book in books)
    extra = Book(data={"title": "extra", "shelf": shelf})
    extra.save()
    assert extra.guid in shelf.books_guids and len(shelf.books) == 4
    other = Shelf(data={"label": "other"})
    other.save()
    extra.shelf = other
    extra.save()
    assert extra.guid not in shelf.books_guids and other.books_guids == [extra.guid]


def test_a_reverse_list_member_that_moved_away_keeps_its_own_relation(context: Context) -> None:
    first, second = Folder(data={"name": "first"}), Folder(data={"name": "second"})
    first.save()
    second.save()
    child = Folder(data={"name": "child", "parent": first})
    child.save()
    kids = first.subfolders
    assert [kid.parent for kid in kids] == [first]
    moved = Folder(child.guid)
    moved.parent = second
    moved.save()
    # the list keeps the guids it found; the child's document, loaded anew, points elsewhere now
    for again in (list(kids), list(kids[0:1])):
        assert again[0].parent_guid == second.guid
        assert again[0].parent == second and again[0].parent.name == "second"


def test_reverse_accessors_are_read_only(context: Context) -> None:
    shelf, _ = shelf_with_books(1)
    with pytest.raises(AttributeError, match="read-only"):
        shelf.books = []
    with pytest.raises(AttributeError, match="read-only"):
        shelf.books_guids = []


def test_one_to_one_reverse_gives_one_object_or_none(context: Context) -> None:
    owner = Owner(data={"name": "bo"})
    owner.save()
    assert owner.passport is None and owner.passport_guid is None
    first = Passport(data={"number": "P1", "holder": owner})
    first.save()
    assert owner.passport == first and owner.passport_guid == first.guid
    # a second referrer is refused by its save (issue 11 point 7); several referrers stored before the
    # one-to-one keys existed make the read raise InvalidRelationError (tests/test_onetoone.py)
    with pytest.raises(OneToOneError, match="one-to-one"):
        Passport(data={"number": "P2", "holder": owner}).save()
    assert owner.passport == first


def test_many_to_many_through_a_junction_with_its_own_property(context: Context) -> None:
    red, blue = Team(data={"name": "red"}), Team(data={"name": "blue"})
    ann, bob = Player(data={"name": "ann"}), Player(data={"name": "bob"})
    for obj in (red, blue, ann, bob):
        obj.save()
    for team, player, captain in ((red, ann, True), (red, bob, False), (blue, ann, False)):
        Membership(data={"team": team, "player": player, "captain": captain}).save()
    assert sorted(m.player.name for m in red.memberships) == ["ann", "bob"]
    assert [m.player.name for m in red.memberships if m.captain] == ["ann"]
    assert sorted(m.team.name for m in ann.memberships) == ["blue", "red"]
    assert [m.team.name for m in bob.memberships] == ["red"]


# --- subclass hybrids ----------------------------------------------------------------------


def sited(cls: type[Device], name: str, site: Cabinet, **data: Any) -> Device:
    made = cls(data={"name": name, "site": site, **data})
    made.save()
    return made


def test_a_reverse_accessor_lists_the_subclass_hybrids_holding_the_relation(context: Context) -> None:
    """Device declares the relation, BladeServer (another hybrid) inherits it: both are listed."""
    site = Cabinet(data={"name": "site"})
    site.save()
    device = sited(Device, "d", site, cabinet=site)
    blade = sited(BladeServer, "b", site, cabinet=site)
    assert sorted(site.devices_guids) == sorted([device.guid, blade.guid])
    listed = {obj.guid: obj for obj in site.devices}
    assert type(listed[device.guid]) is Device and type(listed[blade.guid]) is BladeServer
    assert listed[blade.guid].cores == 1 and listed[blade.guid].cabinet == site
    assert len(site.devices) == 2 and blade in site.devices and device in site.devices
    assert {type(obj) for obj in site.devices[0:2]} == {Device, BladeServer}
    assert sorted(site.occupants_guids) == sorted([device.guid, blade.guid])
    plan = str(site.devices.explain())
    assert "BladeServer, a subclass hybrid holding the relation too -> 1" in plan, plan
    assert "2 objects" in plan, plan
    blade.cabinet = None
    blade.save()
    assert site.devices_guids == [device.guid]


def test_delete_and_abandon_handle_subclass_referrers(every_store: Context,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    home = Cabinet(data={"name": "home"})
    home.save()
    cabinets = [Cabinet(data={"name": f"c{n}"}) for n in range(2)]
    for cabinet in cabinets:
        cabinet.save()
    made = [sited(cls, f"{cls.__name__}{n}", home, cabinet=cabinet)
            for n, cabinet in enumerate(cabinets) for cls in (Device, BladeServer)]
    with pytest.raises(LinkedObjectError, match=re.escape("1 BladeServer.cabinet, 1 Device.cabinet")):
        cabinets[0].delete()
    calls = round_trips(every_store, monkeypatch)
    cabinets[0].delete(abandon=["devices"])
    assert calls["persistent.commit"] == 1
    cabinets[1].delete(abandon=["_all"])
    monkeypatch.undo()
    assert [type(obj)(obj.guid).cabinet_guid for obj in made] == [None] * 4
    for abandon in (["occupants"], ["_all"]):
        with pytest.raises(LinkedObjectError, match=re.escape("BladeServer.site (mandatory")):
            home.delete(abandon=abandon)
    assert check(every_store).clean


def test_one_to_one_holds_across_the_subclass_hybrids_of_its_relation(context: Context) -> None:
    keeper = Owner(data={"name": "keeper"})
    keeper.save()
    site = Cabinet(data={"name": "site"})
    site.save()
    blade = sited(BladeServer, "b", site, keeper=keeper)
    assert keeper.device == blade and type(keeper.device) is BladeServer
    with pytest.raises(OneToOneError, match=re.escape("Device.keeper is one-to-one")):
        sited(Device, "d", site, keeper=keeper)
    with pytest.raises(OneToOneError, match=re.escape("BladeServer.keeper is one-to-one")):
        sited(BladeServer, "b2", site, keeper=keeper)
    keeper.delete(abandon=["device"])
    assert BladeServer(blade.guid).keeper_guid is None
    other = Owner(data={"name": "other"})
    other.save()
    device = sited(Device, "d", site, keeper=other)  # the released key no longer matters
    moved = BladeServer(blade.guid)
    moved.keeper = other
    with pytest.raises(OneToOneError):
        moved.save()
    device.delete()
    moved.save()
    assert other.device == moved
    assert check(context).clean


# --- storage ------------------------------------------------------------------------------


def link_keys(context: Context) -> set[str]:
    prefix = f"{context.keys.root}l/"
    return {key[len(prefix):] for key, _ in context.persistent.scan(prefix)}


def test_one_link_key_per_relation_moved_in_the_same_commit(
        context: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    first, second = Shelf(data={"label": "1"}), Shelf(data={"label": "2"})
    first.save()
    second.save()
    book = Book(data={"title": "t", "shelf": first})
    calls = round_trips(context, monkeypatch)
    book.save()
    assert calls["persistent.commit"] == 1
    assert link_keys(context) == {f"shelf/{first.guid}/book/shelf/{book.guid}"}
    book.shelf = second
    book.save()
    assert calls["persistent.commit"] == 2
    assert link_keys(context) == {f"shelf/{second.guid}/book/shelf/{book.guid}"}
    book.delete()
    assert link_keys(context) == set()


# --- integrity ----------------------------------------------------------------------------


def test_linking_a_missing_or_deleted_target_writes_nothing(every_store: Context) -> None:
    ghost = Shelf(data={"label": "never saved"})
    with pytest.raises(ObjectNotFoundError, match="save the Shelf first"):
        Book(data={"title": "t", "shelf": ghost}).save()
    gone = Shelf(data={"label": "gone"})
    gone.save()
    held = Shelf(gone.guid)  # another instance of it
    gone.delete()
    with pytest.raises(ObjectNotFoundError, match="which is not stored"):  # deleted by another: at the save
        Book(data={"title": "t", "shelf": held}).save()
    # the deleted instance itself: refused when assigned (its save is refused, "save it first" cannot work)
    with pytest.raises(InvalidValueError, match=r"Book.shelf: Shelf .* was deleted by its delete\(\)"):
        Book(data={"title": "t", "shelf": gone})
    later = Shelf(data={"label": "later"})
    later.save()
    book = Book(data={"title": "t", "shelf": later})
    later.delete()  # after the assignment: the save's refusal must not say to save it
    with pytest.raises(ObjectNotFoundError, match=r"which is not stored; link an existing one$"):
        book.save()
    journal = every_store.keys.journal()  # records of the commits that did happen come and go
    assert [key for key, _ in every_store.persistent.scan(every_store.keys.root)
            if not key.startswith(journal)] == []


def test_delete_is_refused_while_linked_and_abandon_unlinks_in_one_commit(
        every_store: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    owner = Owner(data={"name": "lender"})
    owner.save()
    _, books = shelf_with_books(3)
    for book in books:
        book.borrower = owner
        book.save()
    pet = Pet(data={"name": "rex", "owner": owner})
    pet.save()
    with pytest.raises(LinkedObjectError, match=re.escape("3 Book.borrower, 1 Pet.owner point at it; delete "
                                                          "or relink them, or pass abandon=['borrowed', "
                                                          "'pets'] to unlink those optional relations")):
        owner.delete()
    # the remedy names the whole list: abandon= replaces the one given, it does not add to it
    with pytest.raises(LinkedObjectError, match=re.escape(" 1 Pet.owner points at it; delete or relink it, "
                                                          "or pass abandon=['borrowed', 'pets'] to unlink "
                                                          "that optional relation")):
        owner.delete(abandon=["borrowed"])
    assert Owner(owner.guid).name == "lender"
    calls = round_trips(every_store, monkeypatch)
    owner.delete(abandon=["borrowed", "pets"])
    assert calls["persistent.commit"] == 1
    with pytest.raises(ObjectNotFoundError):
        Owner(owner.guid)
    assert all(Book(book.guid).borrower_guid is None for book in books)
    assert Pet(pet.guid).owner_guid is None
    assert all(f"/{owner.guid}/" not in key for key in link_keys(every_store))


@pytest.mark.etcd
def test_an_abandon_over_etcds_transaction_limit_says_to_unlink_some_referrers_first(
        request: pytest.FixtureRequest, tmp_path: Path, namespace: str) -> None:
    """A delete(abandon=...) unlinks every referrer in its one transaction: past etcd's --max-txn-ops the
    refusal says to unlink some of them first, not only to save fewer objects."""
    context = configure(persistent_url_for("etcd", request, tmp_path), "memory://", namespace=namespace)
    try:
        owner = Owner(data={"name": "many"})
        owner.save()
        save_many([Pet(data={"name": f"p{number}", "owner": owner}) for number in range(70)])
        with pytest.raises(BackendError, match=re.escape("unlink some of them first (set their relation to "
                                                         "None and save them) and delete again with fewer")):
            owner.delete(abandon=["pets"])
        assert len(owner.pets) == 70  # nothing of it was written
    finally:
        context.persistent.commit([], [DeletePrefix(context.keys.root)])


def test_relation_and_property_flags_are_bools() -> None:
    """mandatory='no' is truthy: a flag that is not True or False is refused, naming it, in either form."""
    refused = "Relation 'shelf': {} must be True or False, not 'no'"
    with pytest.raises(InvalidValueError, match=re.escape(refused.format("mandatory"))):
        Relation("shelf", Shelf, "books", mandatory="no")
    with pytest.raises(InvalidValueError, match=re.escape(refused.format("onetoone"))):
        Relation("shelf", Shelf, "books", onetoone="no")
    for flag in ("mandatory", "unique", "indexed"):
        with pytest.raises(InvalidValueError, match=re.escape(f"Property 'code': {flag} must be True or")):
            Property("code", str, **{flag: 1})
    with pytest.raises(InvalidValueError, match=re.escape("Dynamic 'level': locked must be True or False")):
        Dynamic("level", int, 60, locked="yes")
    with pytest.raises(InvalidValueError, match="onetoone must be True or False"):
        class FlagBook(DataObject):  # the annotated form builds the same spec, checked the same way
            shelf: Shelf | None = Relation(foreign_key="flag_books", onetoone="no")
    assert Relation("shelf", Shelf, "books", mandatory=False, onetoone=True).onetoone is True


def test_a_mandatory_relation_cannot_be_abandoned(every_store: Context) -> None:
    shelf, books = shelf_with_books(2)
    # the refusal names no remedy that would fail: abandon= cannot unlink a mandatory relation
    with pytest.raises(LinkedObjectError) as refused:
        shelf.delete()
    assert str(refused.value).endswith("2 Book.shelf point at it; delete or relink them (Book.shelf is "
                                       "mandatory: abandon= cannot unlink it)"), refused.value
    for abandon in (["books"], ["_all"]):
        with pytest.raises(LinkedObjectError, match=re.escape("Book.shelf (mandatory")):
            shelf.delete(abandon=abandon)
    assert Shelf(shelf.guid).label == "s" and len(shelf.books) == 2
    with pytest.raises(InvalidValueError, match="no reverse relation"):
        shelf.delete(abandon=["nonsense"])
    for book in books:
        book.delete()
    shelf.delete()
    shelf.delete()  # twice is harmless


def test_child_saved_between_the_delete_scan_and_commit_blocks_the_delete(
        every_store: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    """The child commits after the parent's delete scanned for links: the delete must notice."""
    owner = Owner(data={"name": "o"})
    owner.save()
    real_scan = every_store.persistent.scan
    children: list[Pet] = []

    def scan(prefix: str, **kwargs: Any) -> Any:
        found = real_scan(prefix, **kwargs)
        if prefix.startswith(every_store.keys.links("owner", owner.guid)) and not children:
            pet = Pet(data={"name": "late", "owner": owner})
            pet.save()  # commits while the delete holds a scan that does not include it
            children.append(pet)
        return found

    monkeypatch.setattr(every_store.persistent, "scan", scan)
    with pytest.raises(LinkedObjectError, match=re.escape("1 Pet.owner")):
        owner.delete()
    monkeypatch.undo()
    assert Pet(children[0].guid).owner == Owner(owner.guid)


def test_delete_committed_between_the_child_plan_and_commit_refuses_the_child(
        every_store: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    owner = Owner(data={"name": "o"})
    owner.save()
    pet = Pet(data={"name": "rex", "owner": owner})
    real_commit = every_store.persistent.commit

    def commit(checks: Any, ops: Any) -> Any:
        monkeypatch.setattr(every_store.persistent, "commit", real_commit)
        Owner(owner.guid).delete()  # the parent goes after the child's save planned its link
        return real_commit(checks, ops)

    monkeypatch.setattr(every_store.persistent, "commit", commit)
    with pytest.raises(ObjectNotFoundError, match="not stored"):
        pet.save()
    assert link_keys(every_store) == set()
    with pytest.raises(ObjectNotFoundError):
        Pet(pet.guid)


# --- no N+1 -------------------------------------------------------------------------------


@pytest.mark.parametrize("count", [3, 40])
def test_reverse_list_costs_constant_round_trips(
        context: Context, monkeypatch: pytest.MonkeyPatch, count: int) -> None:
    shelf, books = shelf_with_books(count)
    owner = Owner(data={"name": "reader"})
    owner.save()
    for book in books[::2]:
        book.borrower = owner
        book.save()
    reloaded = Shelf(shelf.guid)
    calls = round_trips(context, monkeypatch)
    titles = [book.title for book in reloaded.books]
    assert sorted(titles) == sorted(f"b{n}" for n in range(count))
    first = sum(calls.values())
    serialized = reloaded.books.serialize(depth=1)
    assert all(row["shelf"]["guid"] == shelf.guid for row in serialized)
    assert sum(1 for row in serialized if row["borrower"] is not None) == len(books[::2])
    second = sum(calls.values()) - first
    # uncached: the result and its version multi-get, one token set, one link scan, the result set,
    # then a cache multi-get and a durable multi-get for the books
    assert first <= 6 and calls["persistent.scan_keys"] == 1, calls
    # cached now: one multi-get for the result; the books and then the borrowers, two multi-gets each
    assert second <= 5 and calls["persistent.scan_keys"] == 1, calls


def test_objects_loaded_together_share_one_instance_of_a_related_object(context: Context) -> None:
    shelf, _ = shelf_with_books(2)
    first, second = list(Shelf(shelf.guid).books)
    assert first.shelf is second.shelf  # one batch load: one instance, as docs/relations.md says
    first.shelf.label = "edited, not saved"
    assert second.shelf.label == "edited, not saved"  # an unsaved edit through one shows through both
    assert Book(second.guid).shelf.label == "s"  # an object loaded on its own loads its own


# --- refresh ------------------------------------------------------------------------------


def test_refresh_forgets_loaded_relations_and_loads_nothing_new(context: Context) -> None:
    shelf, (book,) = shelf_with_books(1)
    mine = Book(book.guid)
    held = mine.shelf
    assert held.label == "s"
    changed = Shelf(shelf.guid)
    changed.label = "renamed"
    changed.save()
    other = Book(book.guid)
    other.title = "new title"
    other.save()
    mine.refresh()
    assert mine.title == "new title"
    assert mine._objects == {}  # forgotten, not reloaded: nothing new loaded either
    assert mine.shelf.label == "renamed" and mine.shelf is not held  # loaded afresh when read
    moved = Shelf(data={"label": "moved"})
    moved.save()
    other.shelf = moved
    other.save()
    mine.refresh()
    assert mine.shelf == moved


def test_refresh_keeps_unsaved_changes_of_a_related_object_the_caller_holds(context: Context) -> None:
    shelf, (book,) = shelf_with_books(1)
    mine = Book(book.guid)
    held = mine.shelf
    held.label = "edited, not saved yet"
    mine.refresh()
    assert held.label == "edited, not saved yet"  # api.md: refresh forgets related objects
    held.save()
    assert Shelf(shelf.guid).label == "edited, not saved yet"


# --- stress -------------------------------------------------------------------------------


def _churn(persistent: str, volatile: str, namespace: str, owners: list[str], rounds: int, seed: int,
           start: Any) -> int:
    """Randomly link pets to owners and delete owners; return how many operations ran."""
    configure(persistent, volatile, namespace=namespace)
    start.wait()  # every worker starts together, so they really contend
    rng = random.Random(seed)
    done = 0
    for _ in range(rounds):
        guid = rng.choice(owners)
        try:
            if rng.random() < 0.7:
                Pet(data={"name": "p", "owner": Owner(guid)}).save()
            else:
                Owner(guid).delete(abandon=["pets"] if rng.random() < 0.5 else None)
            done += 1
        except (ObjectNotFoundError, LinkedObjectError):
            done += 1
    return done


@pytest.mark.slow
@pytest.mark.etcd
@pytest.mark.memcached
def test_processes_linking_and_deleting_leave_no_dangling_link(
        etcd_server: Any, memcached_server: Any) -> None:
    namespace = f"t{uuid.uuid4().hex[:12]}"
    context = configure(etcd_server.url, memcached_server.url, namespace=namespace)
    owners = [Owner(data={"name": f"o{i}"}) for i in range(4)]
    for owner in owners:
        owner.save()
    workers, rounds = 6, 30
    spawn = multiprocessing.get_context("spawn")
    with spawn.Manager() as manager, spawn.Pool(workers) as pool:
        start = manager.Barrier(workers)
        done = pool.starmap(_churn, [(etcd_server.url, memcached_server.url, namespace,
                                      [o.guid for o in owners], rounds, seed, start)
                                     for seed in range(workers)], chunksize=1)
    assert sum(done) == workers * rounds
    prefix = context.keys.root
    stored = {key for key, _ in context.persistent.scan(prefix)}
    links = [key for key in stored if key.startswith(f"{prefix}l/")]
    pets = [key for key in stored if key.startswith(context.keys.docs("pet"))]
    assert pets, "no pet was ever saved; the test proved nothing"
    for link in links:
        _, target, target_guid, source, _, source_guid = link[len(prefix):].split("/")
        assert context.keys.doc(target, target_guid) in stored, f"dangling link {link}"
        assert context.keys.doc(source, source_guid) in stored, f"orphan link {link}"
    for key in pets:
        owner_guid = Pet(key.rsplit("/", 1)[1]).owner_guid
        if owner_guid is not None:
            assert context.keys.doc("owner", owner_guid) in stored, f"{key} points at a deleted owner"
    context.persistent.commit([], [DeletePrefix(prefix)])
