"""An object is written only under a configure() of the store and namespace it was loaded from.

Under another one its document is absent: a save used to call it "deleted by another writer", and a
delete returned as if done while the object stayed stored.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from mirror_hybrids import MirroredVM, answer, instance_path
from query_hybrids import Item, Kind
from relation_hybrids import BladeServer, Cabinet, Owner, Passport

import dal
import dal.mirror
import dal.mirror.refresh as mirror_refresh
from dal import DataList
from dal.exceptions import ConfigurationError
from dal.testing.remote import Remote
from dal.tools.transfer.load import copy


def test_a_stored_object_is_not_written_under_another_namespace(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/x.db"
    dal.configure(url, "memory://", namespace="first")
    kept, other, batch = Item(name="kept"), Item(name="other"), Item(name="batch")
    dal.save_many([kept, other, batch])
    dal.configure(url, "memory://", namespace="second")
    kept.name = "changed"
    with pytest.raises(ConfigurationError, match="loaded from another store or namespace"):
        kept.save()
    with pytest.raises(ConfigurationError, match="loaded from another store or namespace"):
        other.delete()
    with pytest.raises(ConfigurationError, match="loaded from another store or namespace"):
        dal.save_many([batch])
    new = Item(name="new")  # never stored: it may be saved anywhere
    new.save()
    assert [item.name for item in DataList(Item)] == ["new"]
    dal.configure(url, "memory://", namespace="first")  # its own again, in a new configure()
    kept.save()
    assert sorted(item.name for item in DataList(Item)) == ["batch", "changed", "other"]
    loaded = Item(other.guid)
    loaded.delete()
    assert sorted(item.name for item in DataList(Item)) == ["batch", "changed"]


def test_an_object_loaded_from_another_store_file_is_not_written_here(tmp_path: Path) -> None:
    dal.configure(f"sqlite:///{tmp_path}/a.db", "memory://", namespace="same")
    item = Item(name="a")
    item.save()
    loaded = Item(item.guid)
    dal.configure(f"sqlite:///{tmp_path}/b.db", "memory://", namespace="same")
    loaded.name = "b"
    with pytest.raises(ConfigurationError, match="configure\\(\\) its store and namespace again"):
        loaded.save()
    assert DataList(Item).count() == 0


def test_reverse_lists_and_links_of_an_object_of_another_namespace_are_refused(tmp_path: Path) -> None:
    """Its reverse accessors would list nothing under the other namespace (where nothing points at it),
    and an object linked to it would point at nothing stored there: both refused, saying what to do."""
    url = f"sqlite:///{tmp_path}/x.db"
    dal.configure(url, "memory://", namespace="first")
    kind = Kind(code="k")
    kind.save()
    Item(name="i", kind=kind).save()
    assert kind.items_guids and len(kind.items) == 1
    made_there = kind.items  # made under the first namespace, not run yet
    dal.configure(url, "memory://", namespace="second")
    with pytest.raises(ConfigurationError, match=r"what points at it \(Item\) would find nothing"):
        len(made_there)
    with pytest.raises(ConfigurationError, match="would find nothing"):
        DataList(Item, {"type": "AND", "items": [("kind", "EQUALS", kind)]})
    for read in (lambda: kind.items_guids, lambda: kind.items):
        with pytest.raises(ConfigurationError, match=r"'items' would find nothing.*Load it again"):
            read()
    linked = Item(name="j", kind=kind)
    with pytest.raises(ConfigurationError, match=r"Item\.kind points at .*loaded from another store or "
                                                 r"namespace.*link an object loaded under the current"):
        linked.save()
    assert DataList(Item).count() == 0, "nothing written"
    dal.configure(url, "memory://", namespace="first")
    assert len(kind.items) == 1
    linked.save()
    assert sorted(item.name for item in kind.items) == ["i", "j"]


def test_one_to_one_reverse_reads_of_an_object_of_another_namespace_are_refused(tmp_path: Path) -> None:
    """A one-to-one reverse accessor (``owner.passport``; ``owner.device``, a relation two hybrids hold)
    would read ``None`` under the other namespace, where nothing points at the object: each is refused
    by the check of the query listing its holders, before any key is read."""
    url = f"sqlite:///{tmp_path}/x.db"
    dal.configure(url, "memory://", namespace="first")
    owner, site = Owner(name="o"), Cabinet(name="c")
    dal.save_many([owner, site])
    passport, blade = Passport(number="p1", holder=owner), BladeServer(name="b", site=site, keeper=owner)
    dal.save_many([passport, blade])
    assert owner.passport == passport and owner.device == blade
    dal.configure(url, "memory://", namespace="second")
    reads = {"passport": lambda: owner.passport, "passport_guid": lambda: owner.passport_guid,
             "device": lambda: owner.device, "device_guid": lambda: owner.device_guid}
    for name, read in reads.items():
        accessor = name.removesuffix("_guid")
        with pytest.raises(ConfigurationError, match=rf"'{accessor}' would find nothing.*Load it again"):
            read()
    dal.configure(url, "memory://", namespace="first")
    assert owner.passport_guid == passport.guid and owner.device_guid == blade.guid


def _first_then_a_copy(url: str) -> tuple[Kind, Item, Owner, Passport]:
    """Under namespace ``first``: a kind with an item, an owner with a passport (each loaded afresh, none
    of its relations read); then ``second`` made a copy of ``first`` (``dal copy`` keeps guids), whose
    kind and owner were renamed since. ``second`` is the current configuration on return."""
    first = dal.configure(url, "memory://", namespace="first")
    kind, owner = Kind(code="prod"), Owner(name="prod")
    dal.save_many([kind, owner])
    item, passport = Item(name="i", kind=kind), Passport(number="p1", holder=owner)
    dal.save_many([item, passport])
    listed = next(iter(DataList(Item)))  # loaded in a list: its relations load for the list's objects at once
    loaded = Kind(kind.guid), listed, Owner(owner.guid), Passport(passport.guid)
    second = dal.configure(url, "memory://", namespace="second")
    copy(first, second)
    copied_kind, copied_owner = Kind(kind.guid), Owner(owner.guid)
    copied_kind.code, copied_owner.name = "staging", "staging"
    dal.save_many([copied_kind, copied_owner])
    return loaded


def test_relation_reads_of_an_object_of_another_namespace_are_refused(tmp_path: Path) -> None:
    """A forward relation (``item.kind``; one-to-one, ``passport.holder``) of an object loaded under
    another namespace would be loaded from the current one: its copy's values (another object, whose
    save would write there), or ObjectNotFoundError though it is stored; ``serialize(depth=1)`` nested
    None. Each is refused; what the object holds in hand (properties, guids, a related object already
    read) still reads as loaded."""
    url = f"sqlite:///{tmp_path}/x.db"
    kind, item, owner, passport = _first_then_a_copy(url)
    listed = next(iter(DataList(Item)))  # loaded in a list under second: its relations are second's
    assert listed.kind is not None and listed.kind.code == "staging"
    reads = {"item.kind": lambda: item.kind, "passport.holder": lambda: passport.holder,
             "serialize(depth=1)": lambda: item.serialize(depth=1)}
    for read in reads.values():
        with pytest.raises(ConfigurationError, match=r"loaded from another store or namespace .*would be "
                                                     r"read from the current one.*configure\(\) its store"):
            read()
    assert (item.name, item.kind_guid, passport.holder_guid) == ("i", kind.guid, owner.guid), "in hand"
    assert item.serialize()["kind_guid"] == kind.guid
    dal.configure(url, "memory://", namespace="first")
    assert item.kind is not None and item.kind.code == "prod" and passport.holder == owner
    dal.configure(url, "memory://", namespace="second")
    assert item.kind is not None and item.kind.code == "prod", "read before the switch: the object in hand"
    deeper = Item(item.guid)
    assert deeper.kind is not None and deeper.kind.code == "staging", "loaded under second: second's"


def test_an_object_of_another_namespace_is_never_linked_even_where_its_guid_is_stored(tmp_path: Path) -> None:
    """Saved under a namespace that holds a copy of it (same guid), an object linked to one loaded under
    another namespace was stored, linked to the copy: refused before anything is written, for a
    relation and a one-to-one one, by save() and save_many(), assigned before or after the switch."""
    url = f"sqlite:///{tmp_path}/x.db"
    kind, _, owner, _ = _first_then_a_copy(url)
    dal.configure(url, "memory://", namespace="first")
    built_there = Item(name="built in first", kind=Kind(kind.guid))
    dal.configure(url, "memory://", namespace="second")
    before = sorted(item.name for item in DataList(Item))
    saves = {"save()": lambda obj: obj.save(), "save_many()": lambda obj: dal.save_many([obj])}
    refused = r"points at .*loaded from another store or namespace.*link an object loaded under the current"
    for obj in (Item(name="j", kind=kind), Passport(number="p2", holder=owner), built_there):
        relation = "kind" if isinstance(obj, Item) else "holder"
        for save in saves.values():
            with pytest.raises(ConfigurationError, match=rf"\.{relation} {refused}"):
                save(obj)
    assert sorted(item.name for item in DataList(Item)) == before and DataList(Passport).count() == 1
    relinked = Item(name="j", kind=Kind(kind.guid))  # the copy, loaded here: linked here
    relinked.save()
    assert relinked.kind is not None and relinked.kind.code == "staging"


def test_a_list_loads_no_relation_for_its_members_of_another_namespace(tmp_path: Path) -> None:
    """A member of a list loaded under another namespace, loaded again here (``refresh()``), stays in its
    list: the relation read it makes for the list loaded the current namespace's copy into every member,
    one still of the other namespace too (whose own read is refused). Only the members loaded where the
    reading one was are filled."""
    url = f"sqlite:///{tmp_path}/x.db"
    first = dal.configure(url, "memory://", namespace="first")
    kinds = [Kind(code="prod1"), Kind(code="prod2")]
    dal.save_many(kinds)
    dal.save_many([Item(name="a", kind=kinds[0]), Item(name="b", kind=kinds[1])])
    items = sorted(DataList(Item), key=lambda item: item.name)  # one list, loaded under first
    second = dal.configure(url, "memory://", namespace="second")
    copy(first, second)
    renamed = list(DataList(Kind))
    for kind in renamed:
        kind.code = f"staging-{kind.code}"
    dal.save_many(renamed)
    items[0].refresh()  # loaded again here, as the refusal says
    assert items[0].kind is not None and items[0].kind.code == "staging-prod1"
    assert "kind" not in items[1]._objects, "nothing of second's filled into first's member"
    for read in (lambda: items[1].kind, lambda: items[1].serialize(depth=1)):
        with pytest.raises(ConfigurationError, match="loaded from another store or namespace"):
            read()
    dal.configure(url, "memory://", namespace="first")
    assert items[1].kind is not None and items[1].kind.code == "prod2", "its own store's, read there"


def test_a_mirrored_object_of_another_namespace_is_never_refreshed_here(tmp_path: Path,
                                                                        remote: Remote) -> None:
    """Read under a namespace holding a copy of it, a stale mirrored object loaded under another one asked
    the remote, stored its answer in the current namespace's document and became that one's object (its
    properties the copy's), the members of its list with it. It serves what it holds, as inside frozen():
    no remote call, nothing written; refresh_info() and a refresh are refused before asking. A member of
    its list loaded again here refreshes alone; the other refreshes under its own namespace."""
    url = f"sqlite:///{tmp_path}/x.db"
    first = dal.configure(url, "memory://", namespace="first")
    hosts = ["origin-a", "origin-b"]
    for host in hosts:
        remote.answers[instance_path(host)] = answer(host, "running")
    with dal.mirror.frozen():
        dal.save_many([MirroredVM(hostname=host, note="first") for host in hosts])
    with dal.mirror.frozen():  # one list under first, never refreshed
        held = sorted(DataList(MirroredVM), key=lambda vm: vm.hostname)
    second = dal.configure(url, "memory://", namespace="second")
    copy(first, second)
    with dal.mirror.frozen():
        copies = list(DataList(MirroredVM))
        for vm in copies:
            vm.note = "second"
        dal.save_many(copies)
    assert (held[1].note, held[1].status) == ("first", None), "what it holds"
    assert remote.count() == 0 and dal.mirror.stale_count(MirroredVM) == 2, "nothing asked, nothing written"
    refused = r"loaded from another store or namespace.*load it again under the current configuration"
    for refresh in (held[1].refresh_info, lambda: mirror_refresh.refresh([held[1]], force=True)):
        with pytest.raises(ConfigurationError, match=refused):
            refresh()
    assert remote.count() == 0 and held[1]._loaded_from != second.keys.cache_root
    held[0].refresh()  # loaded again here: it refreshes here, alone
    assert (held[0].note, held[0].status) == ("second", "running")
    assert remote.calls() == {instance_path(hosts[0]): 1} and dal.mirror.stale_count(MirroredVM) == 1
    assert held[1].note == "first"
    dal.configure(url, "memory://", namespace="first")
    assert (held[1].note, held[1].status) == ("first", "running"), "refreshed under its own namespace"
    assert remote.calls() == {instance_path(host): 1 for host in hosts}
