"""delete(abandon=...) racing another process's write to a referrer, between the link scan and the commit.

Each test injects one interleaving: right after the delete scanned the links to its object, another
process (a real one, on the same stores) writes a referrer and commits; then the delete plans and
commits. The other process's committed write must survive, and no link or one-to-one key may be
left naming an object that no longer points there (``dal check`` stays clean).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from abandon_hybrids import AbLink, AbSite
from conftest import PairURLs
from relation_hybrids import Owner, Passport, Pet

import dal.objects.relations
from dal import DataList
from dal.config import Context
from dal.exceptions import LinkedObjectError, OneToOneError
from dal.tools.check.integrity import check

HERE = Path(__file__).parent
WRITER = """
import sys
from dal import configure
from abandon_hybrids import AbLink, AbSite
from relation_hybrids import Owner, Passport, Pet
configure(sys.argv[1], sys.argv[2], namespace=sys.argv[3])
exec(sys.argv[4])
"""


def elsewhere(urls: PairURLs, code: str) -> None:
    """Run ``code`` (with the test hybrids imported) in another process on the same stores."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), *sys.path])}
    done = subprocess.run([sys.executable, "-c", WRITER, urls.persistent, urls.volatile, urls.namespace,
                           code], env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr


@pytest.fixture
def after_scan(monkeypatch: pytest.MonkeyPatch, pair_urls: PairURLs) -> Iterator[Any]:
    """Return ``race(context, hybrid, guid, code)``: the first scan of the links to that object then
    runs ``code`` in another process, before the delete reads the referrers and commits."""
    real = dal.objects.relations.scan_all
    fired: list[str] = []

    def race(context: Context, hybrid: str, guid: str, code: str) -> None:
        prefix = context.keys.links(hybrid, guid)

        def scan_all(store: Any, scanned: str, *args: Any, **kwargs: Any) -> Any:
            found = real(store, scanned, *args, **kwargs)
            if scanned == prefix and not fired:
                fired.append(code)
                elsewhere(pair_urls, code)
            return found

        monkeypatch.setattr(dal.objects.relations, "scan_all", scan_all)

    yield race
    assert fired, "the delete never scanned the links: the interleaving was not injected"


def clean(context: Context) -> None:
    assert check(context).problems == []


def test_a_referrer_moved_elsewhere_during_the_delete_keeps_its_move(
        context: Context, after_scan: Any) -> None:
    gone, kept = Owner(data={"name": "gone"}), Owner(data={"name": "kept"})
    gone.save()
    kept.save()
    pet = Pet(data={"name": "p", "owner": gone})
    pet.save()
    after_scan(context, "owner", gone.guid,
               f"pet = Pet({pet.guid!r}); pet.owner = Owner({kept.guid!r}); pet.save()")
    gone.delete(abandon=["pets"])
    assert Pet(pet.guid).owner_guid == kept.guid  # the other process's committed move survives
    assert [moved.guid for moved in Owner(kept.guid).pets] == [pet.guid]
    clean(context)
    with pytest.raises(LinkedObjectError, match=re.escape("1 Pet.owner")):
        Owner(kept.guid).delete()  # refused for the pet that does point at it
    unlinked = Pet(pet.guid)
    unlinked.owner = None
    unlinked.save()
    Owner(kept.guid).delete()
    clean(context)


def test_a_one_to_one_referrer_moved_during_the_delete_keeps_its_move_and_key(
        context: Context, after_scan: Any) -> None:
    gone, kept = Owner(data={"name": "gone"}), Owner(data={"name": "kept"})
    gone.save()
    kept.save()
    passport = Passport(data={"number": "1", "holder": gone})
    passport.save()
    after_scan(context, "owner", gone.guid,
               f"held = Passport({passport.guid!r}); held.holder = Owner({kept.guid!r}); held.save()")
    gone.delete(abandon=["passport"])
    assert Passport(passport.guid).holder_guid == kept.guid
    assert Owner(kept.guid).passport == Passport(passport.guid)
    clean(context)
    # the refusal names the passport that does hold the owner, and its remedy works
    with pytest.raises(OneToOneError, match=f"Passport {passport.guid} already points at Owner {kept.guid}"):
        Passport(data={"number": "2", "holder": Owner(kept.guid)}).save()
    released = Passport(passport.guid)
    released.holder = None
    released.save()
    Passport(data={"number": "2", "holder": Owner(kept.guid)}).save()
    clean(context)


def test_only_the_relations_still_pointing_at_the_deleted_object_are_cleared(
        context: Context, after_scan: Any) -> None:
    gone, kept = AbSite(data={"name": "gone"}), AbSite(data={"name": "kept"})
    gone.save()
    kept.save()
    link = AbLink(data={"name": "s", "primary": gone, "secondary": gone})
    link.save()
    after_scan(context, "absite", gone.guid,
               f"link = AbLink({link.guid!r}); link.secondary = AbSite({kept.guid!r}); link.save()")
    gone.delete(abandon=["_all"])
    loaded = AbLink(link.guid)
    assert (loaded.primary_guid, loaded.secondary_guid) == (None, kept.guid)
    assert [secondary.guid for secondary in AbSite(kept.guid).secondaries] == [link.guid]
    clean(context)


#: the other interleavings: what the other process does, and (name, owner) the pet then has
OTHERS = {
    "unlinked": ("pet = Pet({pet!r}); pet.owner = None; pet.save()", ("p", None)),
    "renamed, still linked": ("pet = Pet({pet!r}); pet.name = 'renamed'; pet.save()", ("renamed", None)),
    # the link is written again: the delete's commit fails and its next plan sees the pet back
    "moved away and back": ("pet = Pet({pet!r}); pet.owner = Owner({kept!r}); pet.save()\n"
                            "pet = Pet({pet!r}); pet.owner = Owner({gone!r}); pet.save()", ("p", None)),
    "moved, another linked": ("pet = Pet({pet!r}); pet.owner = Owner({kept!r}); pet.save()\n"
                              "Pet(data={{'name': 'late', 'owner': Owner({gone!r})}}).save()", ("p", "kept")),
}


@pytest.mark.parametrize("other", sorted(OTHERS))
def test_every_other_write_to_a_referrer_during_the_delete_is_kept_or_unlinked(
        context: Context, after_scan: Any, other: str) -> None:
    gone, kept = Owner(data={"name": "gone"}), Owner(data={"name": "kept"})
    gone.save()
    kept.save()
    pet = Pet(data={"name": "p", "owner": gone})
    pet.save()
    code, (name, owner) = OTHERS[other]
    after_scan(context, "owner", gone.guid, code.format(pet=pet.guid, gone=gone.guid, kept=kept.guid))
    gone.delete(abandon=["pets"])
    loaded = Pet(pet.guid)
    assert (loaded.name, loaded.owner_guid) == (name, None if owner is None else kept.guid)
    assert [left.guid for left in Owner(kept.guid).pets] == ([] if owner is None else [pet.guid])
    assert all(late.owner_guid is None for late in DataList(Pet) if late.guid != pet.guid)
    clean(context)
