"""One guid under two hybrids of one class tree (a hybrid and its subclass hybrids): ``dal load`` and
``dal copy`` refuse it before anything is written, naming both hybrids, the guid and the remedy;
``from_model()`` refuses a guid another hybrid stores; a create's commit checks the other hybrids, so a save,
``save_many`` or load racing another writer for one guid is refused with nothing written."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from relation_hybrids import BladeServer, Cabinet, Device, Owner
from test_transfer import G1, dump_text, in_namespace, is_empty, numbered_guid

from dal import DataObject, Property, Relation
from dal.backends.base import Delete, Put
from dal.config import Context
from dal.exceptions import InvalidValueError, OneToOneError, UniqueConstraintError
from dal.objects.bulk import save_many
from dal.tools.check.integrity import check
from dal.tools.transfer import load as load_module
from dal.tools.transfer.dump import Dump, parse_dump, read_dump, select_hybrids
from dal.tools.transfer.load import copy, load


def _devices(cabinet: Cabinet, *records: tuple[str, str]) -> Dump:
    """Return a dump of ``(hybrid, name)`` records of guid G1 in ``cabinet`` (a Device or a BladeServer)."""
    hybrids: dict[str, list[dict[str, Any]]] = {}
    for hybrid, name in records:
        hybrids.setdefault(hybrid, []).append({"guid": G1, "data": {"name": name, "site_guid": cabinet.guid}})
    return parse_dump({"format": "dal-dump", "version": 1, "namespace": "x", "hybrids": hybrids})


def test_a_guid_two_hybrids_of_one_class_tree_share_is_refused_before_writing(local: Context) -> None:
    """One guid names one object across a hybrid and its subclass hybrids (a reverse list spanning them tells
    them apart by guid alone: Cabinet.occupants showed the BladeServer twice and the Device never). A dump
    holding a Device and a BladeServer of one guid, or one of them while the other is stored (with --replace
    too), is refused naming both hybrids and the guid, before anything is written."""
    cabinet = Cabinet(data={"name": "c"})
    cabinet.save()
    with pytest.raises(InvalidValueError) as refused:
        load(local, _devices(cabinet, ("device", "d"), ("bladeserver", "b")))
    message = str(refused.value)
    assert f"{G1}: BladeServer and Device, both in the dump" in message and "nothing was written" in message
    assert "give all but one of each a new guid in the file" in message
    assert Cabinet(cabinet.guid).occupants_guids == []
    load(local, _devices(cabinet, ("device", "d")))
    for replace in (False, True):
        with pytest.raises(InvalidValueError) as refused:
            load(local, _devices(cabinet, ("bladeserver", "b")), replace=replace)
        message = str(refused.value)
        assert f"{G1}: BladeServer in the dump, Device stored" in message
        assert "delete each stored one" in message
    assert [(type(obj).__name__, obj.name) for obj in Cabinet(cabinet.guid).occupants] == [("Device", "d")]
    assert check(local).clean


def test_a_pair_half_of_which_only_leaves_out_is_refused_as_the_files(local: Context) -> None:
    """--only does not let half of such a pair in: the part of the dump it leaves out is read too, and the
    refusal says the file holds the pair (not that a stored object must go)."""
    cabinet = Cabinet(data={"name": "c"})
    cabinet.save()
    whole = _devices(cabinet, ("device", "d"), ("bladeserver", "b"))
    with pytest.raises(InvalidValueError) as refused:
        load(local, whole.select(select_hybrids(["Device"])))
    message = str(refused.value)
    assert f"{G1}: Device in the dump, BladeServer in the part --only leaves out" in message
    assert "give all but one of each a new guid in the file" in message
    assert "delete each stored" not in message
    assert Cabinet(cabinet.guid).occupants_guids == []


def test_a_stale_key_of_another_hybrid_naming_the_loaded_guid_is_not_called_its_own(local: Context) -> None:
    """A stale one-to-one key of Device naming a BladeServer's guid (no Device of it is stored): the refusal
    of a --replace load of that BladeServer names the key's hybrid, not the loaded object "itself"."""
    cabinet = Cabinet(data={"name": "c"})
    cabinet.save()
    owner = Owner(data={"name": "o1"})
    owner.save()
    blade = BladeServer(data={"name": "b", "site": cabinet, "keeper": owner})
    blade.save()
    text = dump_text(local)
    stale = local.keys.onetoone("device", "keeper", owner.guid)
    assert local.persistent.commit([], [Put(stale, blade.guid.encode())]).ok
    with pytest.raises(OneToOneError) as refused:
        load(local, read_dump(io.StringIO(text)), replace=True)
    message = str(refused.value)
    assert f"a stale one-to-one key gives to Device {blade.guid}, " in message and "itself" not in message


def share_a_guid(context: Context) -> Device:
    """Store a Device, then, as another client (or a save racing it) could, a BladeServer of its guid."""
    cabinet = Cabinet(data={"name": "c"})
    cabinet.save()
    device = Device(data={"name": "d", "site": cabinet})
    device.save()
    blade = {"name": "b", "cores": 1, "site_guid": cabinet.guid, "cabinet_guid": None, "keeper_guid": None}
    keys = context.keys
    assert context.persistent.commit([], [
        Put(keys.doc("bladeserver", device.guid), json.dumps(blade).encode()),
        Put(keys.link("cabinet", cabinet.guid, "bladeserver", "site", device.guid), b"")]).ok
    return device


def test_from_model_refuses_a_guid_another_hybrid_of_its_class_tree_stores(local: Context) -> None:
    """from_model() given a guid no object of its hybrid has makes a new object of it: not one that another
    hybrid of its class tree stores (a save would store both, which `dal load` refuses)."""
    device = share_a_guid(local)
    model = BladeServer.model().model_validate({"guid": device.guid, "name": "b2", "site_guid": G1})
    assert BladeServer.from_model(model).name == "b2"  # the stored BladeServer, its values assigned
    model = Device.model().model_validate({"guid": numbered_guid(0xD1), "name": "d2", "site_guid": G1})
    assert Device.from_model(model).guid == numbered_guid(0xD1)  # a new one: no hybrid stores that guid
    local.persistent.commit([], [Delete(local.keys.doc("bladeserver", device.guid))])
    with pytest.raises(InvalidValueError, match=f"the model's guid {device.guid} is stored as a Device, "
                       "another hybrid of BladeServer's class tree"):
        BladeServer.from_model(BladeServer.model().model_validate(
            {"guid": device.guid, "name": "b", "site_guid": G1}))


def test_a_copy_refuses_a_source_storing_one_guid_under_two_hybrids(local: Context) -> None:
    """A namespace storing a Device and a BladeServer of one guid (written by another client): a copy of it
    refuses them before writing, saying to fix the source."""
    device = share_a_guid(local)
    destination = in_namespace(local, "copied")
    with pytest.raises(InvalidValueError) as refused:
        copy(local, destination)
    message = str(refused.value)
    assert f"{device.guid}: BladeServer and Device, both in the source" in message
    assert "in the source, store all but one of each again as a new object" in message
    assert is_empty(destination)


def _from_model(hybrid: type[Device], guid: str, cabinet: Cabinet) -> Device:
    """Return a new ``hybrid`` object of ``guid`` made by from_model(), not saved."""
    model = hybrid.model().model_validate({"guid": guid, "name": "n", "site_guid": cabinet.guid})
    return hybrid.from_model(model)


def _stored(context: Context, guid: str) -> list[str]:
    """The hybrids of the Device tree storing ``guid``."""
    found = context.persistent.get_many([context.keys.doc(name, guid) for name in ("device", "bladeserver")])
    return sorted(key.split("/")[-2] for key in found)


def test_a_create_racing_another_hybrid_of_its_tree_for_one_guid_is_refused(local: Context) -> None:
    """from_model() checks the other hybrids when it makes the object; a Device of that guid saved between
    then and the BladeServer's save (another writer) makes the save's commit fail its check of the Device's
    key: UniqueConstraintError naming both, nothing written, the reverse list showing the Device once.
    The same through save_many, both objects in one call."""
    cabinet = Cabinet(data={"name": "c"})
    cabinet.save()
    blade = _from_model(BladeServer, G1, cabinet)
    _from_model(Device, G1, cabinet).save()  # another writer, after from_model() looked
    with pytest.raises(UniqueConstraintError, match=f"BladeServer {G1} cannot be created: its guid is stored "
                       "as a Device, another hybrid of BladeServer's class tree.*nothing was written"):
        blade.save()
    assert _stored(local, G1) == ["device"]
    assert Cabinet(cabinet.guid).occupants_guids == [G1]
    other = numbered_guid(0xD2)
    pair = [_from_model(Device, other, cabinet), _from_model(BladeServer, other, cabinet)]
    with pytest.raises(UniqueConstraintError, match=f"save_many: BladeServer {other} refused.*cannot be "
                       "created"):
        save_many(pair)
    assert _stored(local, other) == ["device"]  # the Device's commit went first, the BladeServer's refused
    assert check(local).clean


def test_a_load_racing_another_hybrid_of_its_tree_for_one_guid_is_refused(
        local: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    """A Device of the guid stored by another writer after the load's checks and before its commit: the
    batch's commit fails, UniqueConstraintError says so, and the BladeServer is not written."""
    cabinet = Cabinet(data={"name": "c"})
    cabinet.save()
    checked = load_module.preflight

    def racing(*args: Any) -> Any:
        done = checked(*args)
        _from_model(Device, G1, cabinet).save()
        return done

    monkeypatch.setattr(load_module, "preflight", racing)
    with pytest.raises(UniqueConstraintError, match=f"BladeServer {G1} cannot be loaded: another writer "
                       "stored its guid as a Device while loading"):
        load(local, _devices(cabinet, ("bladeserver", "b")))
    assert _stored(local, G1) == ["device"]
    assert check(local).clean


class Peer(DataObject, hybrid_name="kinpeer"):
    """A hybrid of a class tree whose objects may link to each other: a cycle of new objects."""

    __properties: list[Property[Any]] = [Property("n", int, mandatory=False)]
    __relations = [Relation("to_sub", "SubPeer", "from_peer", mandatory=False),
                   Relation("to_peer", "Peer", "from_peers", mandatory=False)]


class SubPeer(Peer, hybrid_name="kinsubpeer"):
    """Another hybrid of Peer's class tree."""


def test_a_cycle_of_new_objects_of_one_guid_in_two_hybrids_of_a_tree_is_refused_typed(local: Context) -> None:
    """A Peer and a SubPeer of one guid linking to each other go in one commit: save_many refused them with a
    KeyError (its naming of the clash took the object's own document check for a refusal)."""
    for order in (0, 1):
        guid = numbered_guid(0xE0 + order)
        peer, sub = (cls.from_model(cls.model().model_validate({"guid": guid, "n": 1}))
                     for cls in (Peer, SubPeer))
        peer.to_sub, sub.to_peer = sub, peer
        pair = [peer, sub] if order == 0 else [sub, peer]
        with pytest.raises(UniqueConstraintError, match=r"has the guid of a new (Peer|SubPeer) of this call, "
                           "another hybrid of its class tree"):
            save_many(pair)
        found = local.persistent.get_many([local.keys.doc(name, guid) for name in ("kinpeer", "kinsubpeer")])
        assert found == {}
