"""``dal.save_many``: several objects in as few atomic commits as the store allows, with save()'s rules."""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest
from query_hybrids import Item
from relation_hybrids import Owner, Passport
from typed_example import TBackend, TBackendType

import dal
from dal import DataList
from dal.backends.base import Put
from dal.config import Context
from dal.exceptions import (
    ConcurrencyError,
    InvalidValueError,
    MissingMandatoryFieldsError,
    ObjectNotFoundError,
    UniqueConstraintError,
)
from dal.objects import bulk, schema


def _count_commits(context: Context, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    commits: list[int] = []
    real = context.commit

    def counted(checks, ops, invalidate=()):  # type: ignore[no-untyped-def]
        if not all(context.keys.schemas() in getattr(op, "key", "") for op in ops):  # not a schema record
            commits.append(len(ops))
        return real(checks, ops, invalidate)

    monkeypatch.setattr(context, "commit", counted)
    return commits


def test_new_objects_and_their_links_in_one_commit(context: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    commits = _count_commits(context, monkeypatch)
    kind = TBackendType(name="ALBA", code="alba")
    backends = [TBackend(name=f"b{number}", backend_type=kind, tags=["x"]) for number in range(5)]
    dal.save_many([*backends, kind])  # the target listed last: it is committed first, in the same commit
    assert len(commits) == 1
    assert sorted(kind.backends_guids) == sorted(b.guid for b in backends)  # links
    assert TBackend.get_by(name="b3") == backends[3]  # unique keys
    assert TBackend.where(TBackend.status == "NEW").count() == 5  # index entries
    assert not any(b.updated_on_datastore() for b in backends)
    dal.save_many(backends)  # nothing changed: nothing written
    assert len(commits) == 1
    backends[0].status, backends[1].tags = "RUNNING", ["y"]
    dal.save_many(backends)
    assert len(commits) == 2 and TBackend.where(TBackend.status == "RUNNING").guids == [backends[0].guid]


def test_commits_stay_within_the_store_limit(context: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bulk, "MAX_OPS", 10)
    commits = _count_commits(context, monkeypatch)
    # 3 ops each: document, unique key, index entry
    kinds = [TBackendType(name=f"k{n}", code=f"c{n}") for n in range(9)]
    dal.save_many(kinds)
    assert commits == [9, 9, 9]
    assert DataList(TBackendType).count() == 9


def test_commits_stay_within_the_request_size_etcd_takes(context: Context,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """100 objects of 60 KB: each saves alone, and so do they together (etcd refuses a request over
    1.5 MiB whole: one commit of them all would save none)."""
    sizes: list[int] = []
    real = context.commit

    def measured(checks, ops, invalidate=()):  # type: ignore[no-untyped-def]
        sizes.append(sum(len(op.key) + len(op.value) for op in ops if isinstance(op, Put)))
        return real(checks, ops, invalidate)

    monkeypatch.setattr(context, "commit", measured)
    items = [Item(name=f"i{n}", note="x" * 60_000) for n in range(100)]
    dal.save_many(items)
    assert DataList(Item).count() == 100
    assert len(sizes) >= 6 and max(sizes) <= bulk.MAX_BYTES
    monkeypatch.setattr(bulk, "MAX_BYTES", 130_000)
    sizes.clear()
    for item in items:
        item.note = "y" * 60_000
    dal.save_many(items)
    assert len(sizes) == 50 and max(sizes) <= 130_000  # two objects per commit
    assert {item.note for item in DataList(Item)} == {"y" * 60_000}


def test_a_refused_commit_names_the_object_and_writes_nothing_of_it(context: Context) -> None:
    TBackendType(name="ALBA", code="alba").save()
    fine = TBackendType(name="A", code="a")
    taken = TBackendType(name="B", code="alba")
    refused = f"TBackendType {taken.guid} refused.*code must be unique"
    with pytest.raises(UniqueConstraintError, match=refused):
        dal.save_many([fine, taken])
    assert DataList(TBackendType).count() == 1  # `fine` was in the refused commit: not written
    assert fine.updated_on_datastore() is False and fine._raw is None
    ghost = TBackendType(name="ghost", code="ghost")  # never saved, and not in the batch
    linked = TBackend(name="b", backend_type=ghost)
    with pytest.raises(ObjectNotFoundError, match=f"TBackend {linked.guid} refused.*not stored"):
        dal.save_many([linked])


def test_two_new_objects_claiming_one_unique_value(context: Context) -> None:
    first, second = TBackendType(name="1", code="same"), TBackendType(name="2", code="same")
    with pytest.raises(UniqueConstraintError, match=f"TBackendType {second.guid}"):
        dal.save_many([first, second])  # two commits: the second is refused as a save would be
    assert TBackendType.get_by(code="same") == first


def test_a_concurrent_change_is_merged_as_save_merges(context: Context) -> None:
    kind = TBackendType(name="ALBA", code="alba")
    kind.save()
    other = TBackendType.get(kind.guid)
    other.name = "changed elsewhere"
    other.save()
    kind.code = "alba2"
    fresh = TBackendType(name="new", code="new")
    dal.save_many([kind, fresh])
    stored = TBackendType.get(kind.guid)
    assert (stored.name, stored.code) == ("changed elsewhere", "alba2")
    assert TBackendType.get_by(code="new") == fresh


@pytest.mark.parametrize("how", ["save", "save_many"])
def test_a_value_json_cannot_store_changed_in_place_is_refused_with_advice(
        context: Context, how: str) -> None:
    """Validation runs at assignment; a list changed in place bypasses it. Both paths refuse the value
    with a typed error (the comparison with the stored document raised a bare TypeError), write
    nothing, and say how to avoid it."""
    item = Item(data={"name": "tagged", "tags": ["a"]})
    item.save()
    item.tags.append({"a set"})  # in place: no validation
    with pytest.raises(InvalidValueError, match="changed in place bypasses validation: assign JSON values"):
        item.save() if how == "save" else dal.save_many([item])
    assert Item(item.guid).tags == ["a"]


@pytest.mark.parametrize("order", ["targets last", "targets first"])
def test_new_objects_linked_in_a_chain_share_one_commit_in_any_order(
        context: Context, monkeypatch: pytest.MonkeyPatch, order: str) -> None:
    """A referrer listed before its new target was refused as pointing at nothing, and nothing saved."""
    commits = _count_commits(context, monkeypatch)
    kind = TBackendType(name="ALBA", code="alba")
    parent = TBackend(name="parent", backend_type=kind)
    child = TBackend(name="child", backend_type=kind, parent=parent)
    dal.save_many([child, parent, kind] if order == "targets last" else [kind, parent, child])
    assert len(commits) == 1
    assert TBackend.get_by(name="child").parent == parent and parent.backend_type == kind
    assert TBackend(parent.guid).children_guids == [child.guid]


def test_new_objects_linking_to_each_other_are_saved_together(context: Context) -> None:
    kind = TBackendType(name="ALBA", code="alba")
    first = TBackend(name="first", backend_type=kind)
    second = TBackend(name="second", backend_type=kind, parent=first)
    first.parent = second
    dal.save_many([first, second, kind])
    assert TBackend(first.guid).parent == second and TBackend(second.guid).parent == first


def test_two_copies_of_a_new_object_in_a_cycle_and_a_handover_are_saved_as_two_saves(
        context: Context) -> None:
    """Two in-memory copies of one new object (copy.deepcopy) are two items with one document: ordering the
    handover followed the last copy's group, not the one the cycle was placed by, and crashed (IndexError)."""
    kind = TBackendType(name="ALBA", code="alba")
    kind.save()
    giver = TBackend(name="U", backend_type=kind)
    giver.save()
    first = TBackend(name="a", backend_type=kind)
    linker = TBackend(name="x", backend_type=kind, parent=first)
    first.parent = linker  # first <-> linker: a cycle of new objects
    copied = copy.deepcopy(first)
    copied.name, giver.name = "U", "gone"  # the copy takes the name the giver gives up
    dal.save_many([linker, copied, first, giver])
    stored = TBackend(first.guid)  # the copy listed before it, merged over it as a second save() would be
    assert (stored.name, stored.parent_guid) == ("U", linker.guid)
    assert TBackend(giver.guid).name == "gone" and TBackend(linker.guid).parent_guid == first.guid


def test_a_chain_over_several_commits_stores_each_target_first(
        context: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bulk, "MAX_OPS", 10)  # a backend plans 5 ops (4 without a parent), its type 3
    commits = _count_commits(context, monkeypatch)
    kind = TBackendType(name="ALBA", code="alba")
    chain = [TBackend(name="b0", backend_type=kind)]
    for number in range(1, 4):
        chain.append(TBackend(name=f"b{number}", backend_type=kind, parent=chain[-1]))
    dal.save_many([*reversed(chain), kind])
    assert commits == [7, 10, 5]  # b0 and its type, b1 and b2, b3: listed last, stored first
    assert [TBackend(b.guid).parent_guid for b in chain] == [None, *(b.guid for b in chain[:-1])]


def test_a_cycle_no_commit_can_hold_is_refused_before_anything_is_written(
        context: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    kind = TBackendType(name="ALBA", code="alba")
    kind.save()
    twins = [TBackend(name="twin", backend_type=kind) for _ in range(2)]  # one unique name
    twins[0].parent, twins[1].parent = twins[1], twins[0]
    fine = TBackend(name="fine", backend_type=kind)
    with pytest.raises(UniqueConstraintError, match=f"TBackend {twins[1].guid} refused.*name must be unique"):
        dal.save_many([fine, *twins])
    monkeypatch.setattr(bulk, "MAX_OPS", 10)
    ring = [TBackend(name=f"r{number}", backend_type=kind) for number in range(3)]  # 15 ops
    for number, backend in enumerate(ring):
        backend.parent = ring[number - 1]
    cycle = r"3 new objects link to each other in a cycle.*nothing was saved"
    with pytest.raises(InvalidValueError, match=cycle):
        dal.save_many([fine, *ring])
    assert DataList(TBackend).count() == 0 and fine._raw is None


def test_a_target_refused_keeps_its_referrers_of_the_same_commit_out(context: Context) -> None:
    TBackendType(name="ALBA", code="alba").save()
    taken = TBackendType(name="other", code="alba")
    backend = TBackend(name="b", backend_type=taken)
    with pytest.raises(UniqueConstraintError, match=f"TBackendType {taken.guid} refused"):
        dal.save_many([backend, taken])
    assert DataList(TBackend).count() == 0 and backend._raw is None


def test_a_concurrently_changed_object_linking_to_a_new_one_is_merged_after_it_is_stored(
        context: Context) -> None:
    """The changed object was saved again before the rest of its commit: its new target was not stored yet."""
    kind = TBackendType(name="ALBA", code="alba")
    mine = TBackend(name="mine", backend_type=kind)
    dal.save_many([mine, kind])
    other = TBackend(mine.guid)
    other.status = "RUNNING"
    other.save()
    mine.parent = parent = TBackend(name="parent", backend_type=kind)
    dal.save_many([parent, mine])
    stored = TBackend(mine.guid)
    assert (stored.status, stored.parent) == ("RUNNING", parent)


def test_a_concurrent_change_to_the_same_unique_value_is_merged_as_save_merges(context: Context) -> None:
    """save() merges a unique value another writer stored for this object; save_many refused it as taken."""
    kind = TBackendType(name="ALBA", code="a")
    kind.save()
    other = TBackendType(kind.guid)
    other.code = "b"
    other.save()
    kind.code, kind.name = "b", "renamed"
    dal.save_many([kind])
    stored = TBackendType.get_by(code="b")
    assert (stored.guid, stored.name) == (kind.guid, "renamed")


def test_a_refusal_before_any_commit_names_the_object_and_its_place(context: Context) -> None:
    """One of many objects lacking a mandatory field: the error says which, and that nothing of the
    call was committed."""
    kinds = [TBackendType(name=f"k{number}", code=f"c{number}") for number in range(5)]
    kinds[3].name = None
    with pytest.raises(MissingMandatoryFieldsError) as refused:
        dal.save_many(kinds)
    message = str(refused.value)
    assert f"TBackendType {kinds[3].guid} (item 3) refused, nothing of this call committed" in message
    assert "without name" in message
    assert DataList(TBackendType).count() == 0


def test_a_refusal_after_a_concurrent_change_names_the_object_and_what_was_stored(context: Context) -> None:
    """The fallback save() of an object another writer changed refuses its unique value: the message
    names the object and says the rest of its commit was stored (they were)."""
    TBackendType(name="taken", code="t").save()
    mine = TBackendType(name="mine", code="m")
    mine.save()
    theirs = TBackendType(mine.guid)
    theirs.name = "theirs"
    theirs.save()
    mine.code = "t"  # the other object's unique code
    others = [TBackendType(name=f"w{number}", code=f"w{number}") for number in range(3)]
    with pytest.raises(UniqueConstraintError) as refused:
        dal.save_many([*others, mine])
    message = str(refused.value)
    assert f"save_many: TBackendType {mine.guid} refused after another writer changed it" in message
    assert "the other objects of its commit were stored" in message
    assert sorted(kind.name for kind in DataList(TBackendType)) == ["taken", "theirs", "w0", "w1", "w2"]


def test_each_object_changed_concurrently_is_saved_again_though_one_is_refused(context: Context) -> None:
    """Three objects of one commit changed by another writer: once the first one's merge was refused, the
    others were never saved again, though the message said they were stored."""
    kind = TBackendType(name="ALBA", code="alba")
    first, mergeable, last = (TBackend(name=name, backend_type=kind) for name in ("a", "b", "c"))
    dal.save_many([first, mergeable, last, kind])
    for mine, field, value in ((first, "status", "RUNNING"), (mergeable, "tags", ["theirs"]),
                               (last, "status", "RUNNING")):
        theirs = TBackend(mine.guid)
        setattr(theirs, field, value)
        theirs.save()
    first.status, mergeable.size, last.status = "STOPPED", 7, "STOPPED"  # two conflicts, one merge
    with pytest.raises(ConcurrencyError) as refused:
        dal.save_many([first, mergeable, last], datastore_wins=None)
    stored = TBackend(mergeable.guid)
    assert (stored.size, stored.tags) == (7, ["theirs"])  # saved, as the message says
    assert [TBackend(mine.guid).status for mine in (first, last)] == ["RUNNING", "RUNNING"]
    message = str(refused.value)
    assert message.startswith(f"save_many: TBackend {first.guid} refused after another writer changed it "
                              "(the other objects of its commit were stored except "
                              f"TBackend {last.guid} (refused too: ConcurrencyError: "), message


def test_a_refused_recommit_of_the_others_names_the_changed_objects_left_unsaved(
        context: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another writer changes ``a`` before the call's commit, a third takes ``b``'s new name before the
    others' re-commit: the call stops at that refusal, and its message named only ``b``
    (found by a review)."""
    kind = TBackendType(name="ALBA", code="alba")
    a, b = TBackend(name="a", backend_type=kind), TBackend(name="b", backend_type=kind)
    dal.save_many([a, b, kind])
    a.size, b.name = 7, "b2"
    real, calls, busy = context.commit, [], [False]

    def commit(*args: Any, **kwargs: Any) -> Any:
        if not busy[0]:  # the call's own commits, not the other writers'
            busy[0] = True
            calls.append(len(calls))
            try:
                if len(calls) == 1:  # the call's commit: another writer changes a first
                    theirs = TBackend(a.guid)
                    theirs.status = "RUNNING"
                    theirs.save()
                elif len(calls) == 2:  # the others' re-commit: a third writer takes b's new name first
                    TBackend(name="b2", backend_type=kind).save()
            finally:
                busy[0] = False
        return real(*args, **kwargs)

    monkeypatch.setattr(context, "commit", commit)
    with pytest.raises(UniqueConstraintError) as refused:
        dal.save_many([a, b], datastore_wins=None)
    monkeypatch.undo()
    assert f"(not saved either, changed by another writer meanwhile: TBackend {a.guid})" in str(refused.value)
    assert TBackend(a.guid).size is None and TBackend(b.guid).name == "b"


def _handover_no_order_stores(case: str) -> tuple[list[Any], Any, str]:
    """Stored objects changed so that one takes what another gives up, which must then be stored first,
    while it links to the taker or takes back what the taker gives up: the call, the taker, and why."""
    kind = TBackendType(name="ALBA", code="alba")
    kind.save()
    if case == "a giver linking to its new taker":
        giver = TBackend(name="x", backend_type=kind)
        giver.save()
        taker = TBackend(name="x", backend_type=kind)  # new: takes the name 'x' ...
        giver.name, giver.parent = "y", taker  # ... which the giver gives up, linking to it
        return [taker, giver], taker, f"TBackend {giver.guid} links to new TBackend {taker.guid}"
    if case == "a swap of unique values":
        taker, giver = TBackendType(name="1", code="one"), TBackendType(name="2", code="two")
        dal.save_many([taker, giver])
        taker.code, giver.code = "two", "one"
    else:  # a swap of one-to-one targets
        bob, ann = Owner(data={"name": "bob"}), Owner(data={"name": "ann"})
        taker = Passport(data={"number": "1", "holder": bob})
        giver = Passport(data={"number": "2", "holder": ann})
        dal.save_many([bob, ann, taker, giver])
        taker.holder, giver.holder = ann, bob
    name = type(taker).__name__
    return [taker, giver], taker, f"{name} {giver.guid} takes what {name} {taker.guid} gives up \\(a swap\\)"


@pytest.mark.parametrize("case", ["a giver linking to its new taker", "a swap of unique values",
                                  "a swap of one-to-one targets"])
def test_a_handover_no_order_of_commits_can_store_is_refused_before_anything_is_written(
        context: Context, monkeypatch: pytest.MonkeyPatch, case: str) -> None:
    """It was refused at its commit, after the commits placed before it in the same call were written."""
    objects, taker, why = _handover_no_order_stores(case)
    before = {obj.guid: obj._raw for obj in objects if obj._raw is not None}
    monkeypatch.setattr(bulk, "MAX_OPS", 1)  # one object per commit: the first ones would be written
    fine = TBackendType(name="fine", code="fine")
    with pytest.raises(UniqueConstraintError) as refused:  # OneToOneError for a one-to-one target
        dal.save_many([fine, *objects])
    assert fine._raw is None and TBackendType.where(TBackendType.code == "fine").count() == 0
    assert {guid: type(taker)(guid)._raw for guid in before} == before
    if taker._raw is None:  # the new taker
        with pytest.raises(ObjectNotFoundError):
            type(taker)(taker.guid)
    message = str(refused.value)
    assert re.match(f"save_many: {type(taker).__name__} {taker.guid} refused, nothing of this call written: "
                    f"it takes what .* gives up, so .* must be stored first, but {why}: no order of commits "
                    "can store both. Give .* a value or link no object holds", message), message


def _record_rewritten_before_the_commit(context: Context, monkeypatch: pytest.MonkeyPatch, meta: Any) -> None:
    """Rewrite ``meta``'s schema record (as a newer model's first save or ``dal migrate`` would) once,
    after save_many planned and before its commit: the creates' check of it fails."""
    real, done = bulk._commit, []

    def commit(ctx: Context, chunk: Any, wins: Any, attempt: int = 0) -> None:
        if not done:
            done.append(True)
            record = schema.read_record(context, meta.name)
            assert record is not None and schema.write_record(context, record)[1]
        real(ctx, chunk, wins, attempt)

    monkeypatch.setattr(bulk, "_commit", commit)


@pytest.mark.parametrize("cycle", [False, True])
def test_a_record_changed_since_the_plan_plans_the_commit_again(
        context: Context, monkeypatch: pytest.MonkeyPatch, cycle: bool) -> None:
    """A new referrer and its new target, or a cycle of new objects: replanned and stored together
    (saved alone, the referrer would point at a target not stored yet)."""
    kind = TBackendType(name="warm", code="warm")
    kind.save()
    TBackend(name="warm", backend_type=kind).save()  # both hybrids recorded
    if cycle:
        first = TBackend(name="first", backend_type=kind)
        second = TBackend(name="second", backend_type=kind, parent=first)
        first.parent = second
        _record_rewritten_before_the_commit(context, monkeypatch, TBackend._meta)
        dal.save_many([first, second])
        assert TBackend(first.guid).parent == second and TBackend(second.guid).parent == first
    else:
        target = TBackendType(name="ALBA", code="alba")
        referrer = TBackend(name="first", backend_type=target)
        _record_rewritten_before_the_commit(context, monkeypatch, TBackendType._meta)
        dal.save_many([referrer, target])
        assert TBackend(referrer.guid).backend_type == target


def test_creates_of_one_hybrid_check_its_schema_record_once_per_commit(
        context: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each create plans from the record (dal/objects/views.py); a commit checks it once, so the
    checks do not halve how many objects a commit takes."""
    TBackendType(name="warm", code="warm").save()
    seen: list[int] = []
    real, record = context.commit, context.keys.schema("tbackendtype")

    def counted(checks, ops, invalidate=()):  # type: ignore[no-untyped-def]
        seen.append(sum(1 for check in checks if getattr(check, "key", "") == record))
        return real(checks, ops, invalidate)

    monkeypatch.setattr(context, "commit", counted)
    dal.save_many([TBackendType(name=f"k{number}", code=f"c{number}") for number in range(200)])
    assert seen and all(count == 1 for count in seen), seen



def test_a_cycle_outgrowing_its_commit_when_planned_again_says_the_commits_before_it_were_written(
        context: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another writer's change refuses the second commit (a changed object and a cycle); the cycle,
    planned again, no longer fits one commit: refused saying the first commit stayed written
    (found by a mutation audit: it said "nothing was saved")."""
    kind = TBackendType(name="ALBA", code="alba")
    kind.save()
    changed = TBackend(name="changed", backend_type=kind)
    changed.save()
    theirs = TBackend(changed.guid)
    theirs.status = "RUNNING"
    theirs.save()  # between the load and save_many
    changed.name = "mine"
    ring = [TBackend(name=f"r{number}", backend_type=kind) for number in range(3)]  # 15 ops
    for number, backend in enumerate(ring):
        backend.parent = ring[number - 1]
    first = [TBackendType(name=f"k{number}", code=f"c{number}") for number in range(10)]  # 3 ops each
    monkeypatch.setattr(bulk, "MAX_OPS", 30)  # the types fill the first commit
    real = bulk._commit_again

    def grown(*args: Any, **kwargs: Any) -> None:  # stands in for a plan that grew (a one-to-one check)
        monkeypatch.setattr(bulk, "MAX_OPS", 10)
        real(*args, **kwargs)

    monkeypatch.setattr(bulk, "_commit_again", grown)
    with pytest.raises(InvalidValueError) as refused:
        dal.save_many([*first, changed, *ring])
    message = str(refused.value)
    assert "3 new objects link to each other in a cycle" in message, message
    assert "nothing of this commit was saved (those before it were)" in message, message
    assert f"changed by another writer meanwhile: TBackend {changed.guid})" in message, message
    assert DataList(TBackendType).count() == 11  # the first commit, and kind
    assert DataList(TBackend).count() == 1 and TBackend(changed.guid).name == "changed"
