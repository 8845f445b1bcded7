"""One-to-one relations are enforced by the save's transaction: one key per target, like a unique key.

Every object pointing at a target through a one-to-one relation holds the key
``r/<hybrid>/<relation>/<target guid>`` (naming the object), written, moved and deleted with
its document. A second object pointing at the same target is refused by its own commit
(``OneToOneError``, a ``UniqueConstraintError``). Until ``dal migrate`` has built the keys
of data stored before they existed, a save does not trust their absence and checks the links.
"""

from __future__ import annotations

import io
import json
import re
import uuid
from typing import Any

import pytest
from relation_hybrids import BladeServer, Cabinet, Device, Owner, Passport
from test_transfer import populate
from transfer_hybrids import XConsole, XServer

from dal import save_many
from dal.backends.base import Delete, Put
from dal.config import Context
from dal.exceptions import (
    DalError,
    InvalidRelationError,
    ObjectNotFoundError,
    OneToOneError,
    UniqueConstraintError,
)
from dal.objects import schema
from dal.query import datalist
from dal.tools.check.integrity import Kind, check
from dal.tools.migrate.migrations import Step
from dal.tools.migrate.migrator import Migration, MigrationError, migrate
from dal.tools.transfer.dump import read_dump
from dal.tools.transfer.load import load


def onetoone_keys(context: Context, hybrid: str = "passport") -> dict[str, str]:
    """Return ``{target guid: holder guid}`` of a hybrid's one-to-one keys."""
    prefix = f"{context.keys.root}r/{hybrid}/"
    return {key[len(prefix):].split("/", 1)[1]: entry.value.decode()
            for key, entry in context.persistent.scan(prefix)}


def owner(name: str = "o") -> Owner:
    made = Owner(data={"name": name})
    made.save()
    return made


def raw_passport(context: Context, holder: Owner | None, number: str = "OLD") -> str:
    """Store a passport the way data stored before one-to-one keys existed looks: document and link only."""
    guid = str(uuid.uuid4())
    document = {"number": number, "holder_guid": holder.guid if holder is not None else None}
    ops = [Put(context.keys.doc("passport", guid), json.dumps(document).encode())]
    if holder is not None:
        ops.append(Put(context.keys.link("owner", holder.guid, "passport", "holder", guid), b""))
    assert context.persistent.commit([], ops).ok
    return guid


# --- saves -------------------------------------------------------------------------------------


def test_a_second_object_on_a_one_to_one_target_is_refused_by_its_save(context: Context) -> None:
    bob = owner("bob")
    first = Passport(data={"number": "P1", "holder": bob})
    first.save()
    # the first save into the empty hybrid recorded its keys complete: from now on they are trusted
    assert schema.onetoone_ready(context, Passport._meta) == {"holder"}
    second = Passport(data={"number": "P2", "holder": bob})
    with pytest.raises(OneToOneError, match=re.escape("Passport.holder is one-to-one")) as refused:
        second.save()
    message = str(refused.value)
    assert first.guid in message and bob.guid in message, message
    assert isinstance(refused.value, UniqueConstraintError)  # existing handlers still catch it
    with pytest.raises(ObjectNotFoundError):
        Passport(second.guid)  # nothing of it was written
    assert bob.passport == first and onetoone_keys(context) == {bob.guid: first.guid}
    assert second.holder_guid == bob.guid, "a refused save leaves the object as it was"


def test_the_key_moves_with_the_relation_and_goes_with_the_object(context: Context) -> None:
    bob, ann = owner("bob"), owner("ann")
    passport = Passport(data={"number": "P1", "holder": bob})
    passport.save()
    passport.holder = ann
    passport.save()
    assert onetoone_keys(context) == {ann.guid: passport.guid}
    Passport(data={"number": "P2", "holder": bob}).save()  # bob is free again
    passport.holder = None
    passport.save()
    assert ann.guid not in onetoone_keys(context)
    passport.holder = ann
    passport.save()
    passport.delete()
    assert ann.guid not in onetoone_keys(context) and ann.passport is None
    Passport(data={"number": "P3", "holder": ann}).save()


def test_abandoning_the_target_releases_its_key(context: Context) -> None:
    bob = owner("bob")
    passport = Passport(data={"number": "P1", "holder": bob})
    passport.save()
    bob.delete(abandon=["passport"])
    assert onetoone_keys(context) == {} and Passport(passport.guid).holder_guid is None
    again = owner("again")
    passport = Passport(passport.guid)
    passport.holder = again
    passport.save()
    assert onetoone_keys(context) == {again.guid: passport.guid}


def test_a_save_racing_another_onto_one_target_is_refused(
        context: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    bob = owner("bob")
    late = Passport(data={"number": "late", "holder": bob})
    real_commit = context.persistent.commit
    raced: list[Passport] = []

    def commit(checks: Any, ops: Any) -> Any:
        if not raced:  # another process commits between this save's plan and its commit
            monkeypatch.setattr(context.persistent, "commit", real_commit)
            early = Passport(data={"number": "early", "holder": bob})
            early.save()
            raced.append(early)
        return real_commit(checks, ops)

    monkeypatch.setattr(context.persistent, "commit", commit)
    with pytest.raises(OneToOneError):
        late.save()
    assert bob.passport == raced[0]


def test_the_sample_model_refuses_a_second_alba_backend(context: Context) -> None:
    from dal.hybrids import AlbaBackend, Backend, BackendType

    kind = BackendType(data={"name": "ALBA", "code": f"alba{uuid.uuid4().hex[:6]}"})
    kind.save()
    backend = Backend(data={"name": f"b{uuid.uuid4().hex[:6]}", "backend_type": kind})
    backend.save()
    AlbaBackend(data={"backend": backend}).save()
    with pytest.raises(OneToOneError, match=re.escape("AlbaBackend.backend")):
        AlbaBackend(data={"backend": backend}).save()
    assert backend.alba_backend is not None


# --- data stored before the keys existed ----------------------------------------------------------


def test_a_save_does_not_trust_keys_that_are_not_built_yet(context: Context) -> None:
    bob = owner("bob")
    old = raw_passport(context, bob)  # stored before one-to-one keys: no key, no schema record
    assert schema.onetoone_ready(context, Passport._meta) == frozenset()
    with pytest.raises(OneToOneError, match=old):
        Passport(data={"number": "new", "holder": bob}).save()
    ann = owner("ann")
    fresh = Passport(data={"number": "new", "holder": ann})
    fresh.save()  # a free target is taken, and its key written, before any migration
    assert onetoone_keys(context) == {ann.guid: fresh.guid}

    report = migrate(context, [Owner, Passport])
    assert report.ok, report.lines
    assert onetoone_keys(context) == {bob.guid: old, ann.guid: fresh.guid}
    schema.forget(context)
    assert schema.onetoone_ready(context, Passport._meta) == {"holder"}
    with pytest.raises(OneToOneError, match=old):
        Passport(data={"number": "new", "holder": bob}).save()
    assert migrate(context, [Owner, Passport]).up_to_date


def test_migrate_reports_several_referrers_and_writes_nothing_for_them(context: Context) -> None:
    bob, ann = owner("bob"), owner("ann")
    twins = sorted([raw_passport(context, bob, "A"), raw_passport(context, bob, "B")])
    alone = raw_passport(context, ann)
    raw_passport(context, None, "unset")
    dry = migrate(context, [Owner, Passport], dry_run=True)
    assert not dry.ok and onetoone_keys(context) == {}
    report = migrate(context, [Owner, Passport])
    assert not report.ok
    [violation] = report.violations
    assert (violation.kind, violation.field, violation.value, sorted(violation.guids)) == \
        ("onetoone", "holder", bob.guid, twins)
    text = "\n".join(report.lines)
    assert f"Passport.holder is one-to-one, but 2 objects point at Owner {bob.guid}" in text, text
    assert onetoone_keys(context) == {ann.guid: alone}, "the offenders get no key, the others do"
    schema.forget(context)
    assert schema.onetoone_ready(context, Passport._meta) == frozenset()
    with pytest.raises(InvalidRelationError):
        _ = bob.passport
    # fixed by hand (through dal, which keeps checking the links meanwhile), a new run builds the rest
    moved = Passport(twins[1])
    moved.holder = None
    moved.save()
    assert migrate(context, [Owner, Passport]).ok
    assert onetoone_keys(context) == {ann.guid: alone, bob.guid: twins[0]}
    schema.forget(context)
    assert schema.onetoone_ready(context, Passport._meta) == {"holder"}
    assert check(context).clean


def test_migrate_removes_stale_keys_before_building(context: Context) -> None:
    bob = owner("bob")
    old = raw_passport(context, bob)
    stale = context.keys.onetoone("passport", "holder", str(uuid.uuid4()))
    assert context.persistent.commit([], [Put(stale, old.encode())]).ok  # old points elsewhere
    assert migrate(context, [Owner, Passport]).ok
    assert onetoone_keys(context) == {bob.guid: old}


def test_a_migration_step_moves_one_to_one_keys_and_refuses_a_second_referrer(context: Context) -> None:
    bob, ann, cy = owner("bob"), owner("ann"), owner("cy")
    first = Passport(data={"number": "P1", "holder": bob})
    first.save()
    second = Passport(data={"number": "P2", "holder": cy})
    second.save()

    def to_ann(doc: dict[str, Any]) -> dict[str, Any] | None:
        return {**doc, "holder_guid": ann.guid} if doc["number"] == "P1" else None

    def move(step: Step) -> None:
        step.transform(Passport, to_ann)

    assert migrate(context, [Owner, Passport], migrations=[Migration(1, "move P1", move)]).ok
    assert onetoone_keys(context) == {ann.guid: first.guid, cy.guid: second.guid}
    Passport(data={"number": "P3", "holder": bob}).save()  # bob's key went with the move

    def onto_cy(doc: dict[str, Any]) -> dict[str, Any] | None:
        return {**doc, "holder_guid": cy.guid} if doc["number"] == "P3" else None

    def clash(step: Step) -> None:
        step.transform(Passport, onto_cy)

    with pytest.raises(MigrationError, match="one-to-one holder"):
        migrate(context, [Owner, Passport], migrations=[Migration(2, "onto cy", clash)])
    assert Owner(cy.guid).passport == second


# --- dal check -------------------------------------------------------------------------------------


def test_check_repairs_missing_and_stale_one_to_one_keys(context: Context) -> None:
    sample = populate()
    console = sample.console
    server = sample.servers[0]
    key = context.keys.onetoone("xconsole", "server", server.guid)
    stale = context.keys.onetoone("xconsole", "server", sample.servers[1].guid)
    assert context.persistent.get(key) is not None and check(context).clean
    assert context.persistent.commit([], [Delete(key), Put(stale, console.guid.encode())]).ok
    report = check(context)
    assert {problem.kind for problem in report.problems} == {Kind.MISSING_ONETOONE, Kind.STALE_ONETOONE}
    assert [problem.key for problem in report.of(Kind.MISSING_ONETOONE)] == [key]
    assert [problem.key for problem in report.of(Kind.STALE_ONETOONE)] == [stale]
    repaired = check(context, repair=True)
    assert len(repaired.fixed) == 2 and repaired.remaining == []
    assert check(context).clean
    entry = context.persistent.get(key)
    assert entry is not None and entry.value == console.guid.encode()
    with pytest.raises(OneToOneError):
        XConsole(data={"port": 9, "server": server}).save()
    XConsole(data={"port": 9, "server": sample.servers[1]}).save()  # the stale key blocks no one


def test_check_reports_several_referrers_and_repairs_no_key_for_them(context: Context) -> None:
    sample = populate()
    server = sample.servers[0]
    twin = str(uuid.uuid4())
    assert context.persistent.commit([], [
        Put(context.keys.doc("xconsole", twin), json.dumps({"port": 8, "server_guid": server.guid}).encode()),
        Put(context.keys.link("xserver", server.guid, "xconsole", "server", twin), b"")]).ok
    report = check(context, repair=True)
    assert [problem.kind for problem in report.problems] == [Kind.ONETOONE_VIOLATION]
    assert twin in report.problems[0].message and sample.console.guid in report.problems[0].message
    entry = context.persistent.get(context.keys.onetoone("xconsole", "server", server.guid))
    assert entry is not None and entry.value == sample.console.guid.encode()


def test_check_points_at_migrate_for_keys_that_are_not_built_yet(context: Context) -> None:
    bob, ann = owner("bob"), owner("ann")
    olds = [raw_passport(context, bob), raw_passport(context, ann)]
    report = check(context)
    [unbuilt] = report.problems  # one problem for the relation, not one per object
    assert unbuilt.kind is Kind.UNBUILT_ONETOONE and unbuilt.fix is None and unbuilt.guid in olds
    assert unbuilt.key == context.keys.onetoones("passport", "holder")
    assert "2 objects stored before they existed have none" in unbuilt.message
    assert "`dal migrate` builds them" in unbuilt.message
    assert migrate(context, [Owner, Passport]).ok
    assert check(context).clean


def test_check_groups_one_to_one_referrers_across_subclass_hybrids(context: Context) -> None:
    keeper, site = owner("keeper"), Cabinet(data={"name": "site"})
    site.save()
    blade = BladeServer(data={"name": "b", "site": site, "keeper": keeper})
    blade.save()
    device = str(uuid.uuid4())  # stored before one-to-one keys existed: a Device on the same keeper
    assert context.persistent.commit([], [
        Put(context.keys.doc("device", device), json.dumps({
            "name": "d", "site_guid": site.guid, "cabinet_guid": None, "keeper_guid": keeper.guid}).encode()),
        Put(context.keys.link("cabinet", site.guid, "device", "site", device), b""),
        Put(context.keys.link("owner", keeper.guid, "device", "keeper", device), b"")]).ok
    report = check(context, repair=True)
    [problem] = report.problems
    assert problem.kind is Kind.ONETOONE_VIOLATION, report.problems
    assert f"BladeServer {blade.guid}" in problem.message and f"Device {device}" in problem.message
    assert onetoone_keys(context, "device") == {}, "repair picks no winner"


# --- the reverse accessor ------------------------------------------------------------------------


def after_query(monkeypatch: pytest.MonkeyPatch, hybrid: type[Any], write: Any) -> None:
    """Run ``write`` (another process's, say) once, right after the query of ``hybrid``'s objects
    pointing at a target read its guids, before anything else of the reverse accessor runs."""
    real = datalist.cached_guids

    def cached_guids(context: Context, meta: Any, root: Any, run: Any) -> Any:
        found = real(context, meta, root, run)
        if meta is hybrid._meta:
            monkeypatch.setattr(datalist, "cached_guids", real)
            write()
        return found

    monkeypatch.setattr(datalist, "cached_guids", cached_guids)


def test_a_holder_deleted_while_the_accessor_reads_it_reads_as_none_or_the_new_holder(
        context: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    """owner.passport is the one object or None, never ObjectNotFoundError: a holder deleted between the
    accessor's query and its load reads as None, or as the object holding the target by then."""
    bob = owner("bob")
    gone = Passport(data={"number": "P1", "holder": bob})
    gone.save()
    assert bob.passport == gone  # the list's guids are cached now: the next read loads the passport anew
    after_query(monkeypatch, Passport, gone.delete)
    assert bob.passport is None
    held = Passport(data={"number": "P2", "holder": bob})
    held.save()
    assert bob.passport == held
    taken: list[Passport] = []

    def hand_over() -> None:
        Passport(held.guid).delete()
        taken.append(Passport(data={"number": "P3", "holder": bob}))
        taken[0].save()

    after_query(monkeypatch, Passport, hand_over)
    found = bob.passport
    assert found == taken[0] and found.holder is bob


def test_a_handover_across_subclass_hybrids_never_reads_as_two_holders_or_none(
        context: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    """A target handed from a Device to a BladeServer (another hybrid holding the relation) and back is
    never held by two, nor by none. Read hybrid after hybrid, a handover in between showed it in both
    (InvalidRelationError) or in neither (None): the accessors read as of one instant. The handover is
    made after each read of the store in turn, every point a read can be interleaved at."""
    keeper = owner("keeper")
    site = Cabinet(data={"name": "site"})
    site.save()
    holders = [Device(data={"name": "d", "site": site, "keeper": keeper}),
               BladeServer(data={"name": "b", "site": site})]
    for made in holders:
        made.save()
    store = context.persistent
    reads = {name: getattr(store, name) for name in ("get", "get_many", "scan", "scan_keys")}

    def hand_over_after(count: int) -> list[int]:
        """Hand the keeper over (to the other holder) after the ``count``-th read from now."""
        seen = [0]

        def hooked(name: str) -> Any:
            def read(*args: Any, **kwargs: Any) -> Any:
                found = reads[name](*args, **kwargs)
                seen[0] += 1
                if seen[0] == count:
                    monkeypatch.undo()
                    giver, taker = holders if holders[0].keeper_guid else holders[::-1]
                    giver.keeper = None
                    giver.save()
                    taker.keeper = keeper
                    taker.save()
                return found
            return read

        for name in reads:
            monkeypatch.setattr(store, name, hooked(name))
        return seen

    for accessor in ("device_guid", "device"):
        for count in range(1, 20):
            seen = hand_over_after(count)
            found = getattr(keeper, accessor)
            monkeypatch.undo()
            guid = found if accessor == "device_guid" else found.guid
            assert guid in {made.guid for made in holders}, (accessor, count)
            if accessor == "device":  # the object returned holds the keeper: not one that handed it over
                assert found.keeper_guid == keeper.guid, (accessor, count)
            if seen[0] < count:  # the read ended before the handover: every point was tried
                break
        else:
            raise AssertionError(f"keeper.{accessor} read more than 19 times")


def hand_over_after_each_read(monkeypatch: pytest.MonkeyPatch, context: Context, keeper: Owner,
                              holders: list[Any], times: int) -> None:
    """Hand ``keeper`` over to the other of ``holders`` (another process's two saves, say) right after each
    read of who holds it, the first ``times`` reads: each query of a hybrid's objects pointing at it, and
    each scan of its link keys made outside those queries. Every read then names a holder that moves away
    before the accessor loads it."""
    real_query, real_scan = datalist.cached_guids, context.persistent.scan_keys
    state = {"busy": False, "left": times}

    def hand_over() -> None:
        if state["left"] and not state["busy"]:
            state["left"] -= 1
            giver, taker = holders if holders[0].keeper_guid else holders[::-1]
            giver.keeper = None
            giver.save()
            taker.keeper = keeper
            taker.save()

    def cached_guids(*args: Any) -> Any:
        busy, state["busy"] = state["busy"], True  # the query's own scans are no read to hand over after
        try:
            found = real_query(*args)
        finally:
            state["busy"] = busy
        hand_over()
        return found

    def scan_keys(prefixes: list[str]) -> Any:
        found = real_scan(prefixes)
        hand_over()
        return found

    monkeypatch.setattr(datalist, "cached_guids", cached_guids)
    monkeypatch.setattr(context.persistent, "scan_keys", scan_keys)


def test_a_holder_that_hands_the_target_over_before_it_loads_is_never_returned(
        context: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    """The object a one-to-one accessor returns points at the target: a holder that handed it over between
    the read naming it and its load was returned, its relation already None. The accessor reads again;
    after three reads that each named a holder moving away, it reads as None (documented choice)."""
    keeper, site = owner("keeper"), Cabinet(data={"name": "site"})
    site.save()
    device = Device(data={"name": "d", "site": site, "keeper": keeper})
    blade = BladeServer(data={"name": "b", "site": site})
    for made in (device, blade):
        made.save()
    # the list shows both (handed over between the hybrids' queries), the keys name the device, which
    # hands over before it loads: read again, the keys name the blade, which stays
    hand_over_after_each_read(monkeypatch, context, keeper, [device, blade], times=3)
    found = keeper.device
    monkeypatch.undo()
    assert found == blade and found.keeper_guid == keeper.guid, found and found.keeper_guid
    hand_over_after_each_read(monkeypatch, context, keeper, [device, blade], times=100)
    assert keeper.device is None  # still changing hands after three reads: never a holder that moved away
    monkeypatch.undo()
    assert keeper.device is not None and keeper.device.keeper_guid == keeper.guid
    # one hybrid: the list's query names the holder, which hands over before it loads
    bob = owner("bob")
    giver, taker = Passport(data={"number": "P1", "holder": bob}), Passport(data={"number": "P2"})
    for made in (giver, taker):
        made.save()
    assert bob.passport == giver

    def hand_over() -> None:
        giver.holder = None
        giver.save()
        taker.holder = bob
        taker.save()

    after_query(monkeypatch, Passport, hand_over)
    found = bob.passport
    assert found == taker and found.holder_guid == bob.guid, found and found.holder_guid


def test_a_one_to_one_accessor_of_subclass_hybrids_reads_its_cached_list(
        context: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    """One holder listed is the answer of one instant (dal.model.reverse): read again, the accessors of a
    relation that subclass hybrids hold too answer from the cached list, without scanning the link keys."""
    keeper, site = owner("keeper"), Cabinet(data={"name": "site"})
    site.save()
    blade = BladeServer(data={"name": "b", "site": site, "keeper": keeper})
    blade.save()
    assert keeper.device_guid == blade.guid and keeper.device == blade  # the lists are cached now
    scans: list[list[str]] = []
    real = context.persistent.scan_keys
    monkeypatch.setattr(context.persistent, "scan_keys",
                        lambda prefixes: scans.append(prefixes) or real(prefixes))
    assert keeper.device_guid == blade.guid and keeper.device == blade
    assert scans == []


def test_save_many_hands_a_one_to_one_target_over_in_any_order(context: Context) -> None:
    """An object giving up a one-to-one target (or a unique value) commits before the one taking it."""
    for order in ("taker first", "giver first"):
        bob, ann = owner("bob"), owner("ann")
        old = Passport(data={"number": "old", "holder": bob})
        old.save()
        old.holder = ann
        new = Passport(data={"number": "new", "holder": bob})
        save_many([new, old] if order == "taker first" else [old, new])
        assert bob.passport == new and ann.passport == old, order
        assert onetoone_keys(context)[bob.guid] == new.guid
    # two objects swapping their targets still cannot both be stored: the first commit is refused
    bob, ann = owner("bob"), owner("ann")
    first = Passport(data={"number": "1", "holder": bob})
    second = Passport(data={"number": "2", "holder": ann})
    save_many([first, second])
    first.holder, second.holder = ann, bob
    with pytest.raises(OneToOneError, match="save_many: Passport"):
        save_many([first, second])


# --- dal load --------------------------------------------------------------------------------------


def dump_of(*consoles: tuple[str, str], servers: list[XServer]) -> Any:
    document = {"format": "dal-dump", "version": 1, "namespace": "x", "hybrids": {
        "xconsole": [{"guid": guid, "data": {"port": 1, "server_guid": target}}
                     for guid, target in consoles]}}
    return read_dump(io.StringIO(json.dumps(document)))


def test_load_refuses_two_objects_on_one_target_before_writing(context: Context) -> None:
    sample = populate()
    target = sample.servers[1].guid
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    with pytest.raises(OneToOneError, match=re.escape("XConsole.server is one-to-one")) as refused:
        load(context, dump_of((first, target), (second, target), servers=sample.servers))
    assert first in str(refused.value) and second in str(refused.value)
    with pytest.raises(ObjectNotFoundError):
        XConsole(first)
    # the store's console holds servers[0]: another object of the dump cannot take it
    with pytest.raises(OneToOneError, match=sample.console.guid):
        load(context, dump_of((first, sample.servers[0].guid), servers=sample.servers))
    result = load(context, dump_of((first, target), servers=sample.servers))
    assert result.total == 1 and XServer(target).console_guid == first
    assert onetoone_keys(context, "xconsole")[target] == first
    with pytest.raises(DalError):
        XConsole(data={"port": 2, "server": XServer(target)}).save()
