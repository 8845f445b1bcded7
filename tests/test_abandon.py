"""delete(abandon=...): every relation to the deleted object cleared, remembered, and checked input."""

from __future__ import annotations

from typing import Any

import pytest
from abandon_hybrids import AbLink, AbSite
from relation_hybrids import Owner, Pet

from dal import DataObject, Relation
from dal.cache.leases import LeasedCache
from dal.config import Context, current
from dal.exceptions import InvalidValueError, LinkedObjectError, ObjectNotFoundError
from dal.tools.check.integrity import check


class AbSubSite(AbSite):
    """A subclass hybrid: it reads the reverse relations of AbSite (primaries, secondaries), inherited."""


class AbToy(DataObject):
    """Points at a subclass hybrid through a relation of its own."""

    __relations = [Relation("site", AbSubSite, "toys", mandatory=False)]


@pytest.mark.parametrize("abandon", [["primaries", "secondaries"], ["_all"]])
def test_a_referrer_holding_two_relations_to_the_deleted_object_loses_both(
        context: Context, abandon: list[str]) -> None:
    site, other = AbSite(data={"name": "s"}), AbSite(data={"name": "o"})
    site.save()
    other.save()
    both = AbLink(data={"name": "both", "primary": site, "secondary": site})
    one = AbLink(data={"name": "one", "primary": site, "secondary": other})
    both.save()
    one.save()
    assert AbLink(both.guid).primary_guid == site.guid  # cached: the delete must drop these too
    site.delete(abandon=abandon)
    with pytest.raises(ObjectNotFoundError):
        AbSite(site.guid)
    loaded = AbLink(both.guid)
    assert (loaded.primary_guid, loaded.secondary_guid) == (None, None)
    assert loaded.primary is None and loaded.secondary is None
    kept = AbLink(one.guid)
    assert (kept.primary_guid, kept.secondary_guid) == (None, other.guid)
    assert [link.guid for link in other.secondaries] == [one.guid]
    assert check(context).clean


def test_a_referrer_rewritten_by_abandon_is_never_served_older_here(
        context: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    """As tests/test_monotonic.py: the delete's invalidation held back, the old cached entry replayed."""
    owner = Owner(data={"name": "o"})
    owner.save()
    pet = Pet(data={"name": "p", "owner": owner})
    pet.save()
    assert Pet(pet.guid).owner_guid == owner.guid and Pet(pet.guid).owner_guid == owner.guid  # cached
    key = context.keys.cached_doc(Pet._meta.name, pet.guid)
    old = context.volatile.get(key)
    assert old is not None
    with monkeypatch.context() as patch:
        patch.setattr(LeasedCache, "invalidate", lambda self, *keys, recorded=False: [])
        owner.delete(abandon=["pets"])
    if context.volatile.get(key) is None:  # evicted by the commit itself (one Redis): replay it
        assert context.volatile.set(key, old, 60)
    assert current().persistent.get(context.keys.doc(Pet._meta.name, pet.guid)) is not None
    loaded = Pet(pet.guid)
    assert loaded.owner_guid is None
    assert loaded.owner is None


@pytest.mark.parametrize("abandon", [[None], [1, "x"], [["x"]], b"pets", 5, 0, "", "pets"])
def test_abandon_takes_a_list_of_reverse_relation_names(context: Context, abandon: Any) -> None:
    owner = Owner(data={"name": "o"})
    owner.save()
    Pet(data={"name": "p", "owner": owner}).save()
    with pytest.raises(InvalidValueError, match="abandon takes a list of reverse relation names"):
        owner.delete(abandon=abandon)
    assert Owner(owner.guid).name == "o"


@pytest.mark.parametrize("abandon", [["primaries", "secondaries", "toys"], ["_all"]])
def test_a_subclass_hybrid_abandons_the_reverse_relations_it_inherits(
        context: Context, abandon: list[str]) -> None:
    """``sub.primaries`` is read, so ``abandon`` takes it; it unlinks exactly what points at ``sub``:
    AbLink.primary holds an AbSite (never an AbSubSite), filed under AbSite's links, so nothing of it."""
    site, sub = AbSite(data={"name": "s"}), AbSubSite(data={"name": "sub"})
    bare = AbSubSite(data={"name": "b"})
    for obj in (site, sub, bare):
        obj.save()
    link = AbLink(data={"name": "l", "primary": site})
    toy = AbToy(data={"site": sub})
    link.save()
    toy.save()
    bare.delete(abandon=["primaries"])  # nothing points at it: refused before, as no such relation
    known = "no reverse relation nope; known: primaries, secondaries, toys"
    for typo in (["nope"], ["_all", "nope"]):  # beside '_all' too (it was taken as '_all' alone)
        with pytest.raises(InvalidValueError, match=known):
            sub.delete(abandon=typo)
    with pytest.raises(LinkedObjectError, match=r"1 AbToy\.site points at it; .*abandon=\['toys'\]"):
        sub.delete(abandon=["primaries"])
    assert list(sub.primaries) == [] and [toy.guid] == sub.toys_guids
    sub.delete(abandon=abandon)
    for gone in (sub, bare):
        with pytest.raises(ObjectNotFoundError):
            AbSubSite(gone.guid)
    assert AbToy(toy.guid).site_guid is None
    assert context.persistent.scan(context.keys.links(AbSubSite._meta.name, sub.guid)) == []
    assert AbLink(link.guid).primary_guid == site.guid and site.primaries_guids == [link.guid]
    assert check(context).clean
