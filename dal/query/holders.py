"""Who holds a one-to-one target now: its link keys, read as of one instant.

The reverse list of a relation that subclass hybrids hold too runs one query per hybrid, one after
another: a target handed over from one hybrid's object to another's in between shows in both (two
holders, never stored at once) or in neither. The one-to-one accessors (:mod:`dal.model.reverse`)
read the holders from here when their list cannot tell (it shows several, or none of several hybrids,
or the one it shows was deleted or moved away before it loaded): the link keys of every hybrid holding
the relation, under the target, in one ``scan_keys`` (read as of one instant by every store), so that
two holders found here are two stored at once.
"""

from __future__ import annotations

from dal.config import current
from dal.model.registry import family
from dal.objects.dataobject import DataObject
from dal.objects.origin import check_listing
from dal.query.owners import give_owners
from dal.structures import Relation


class Holders:
    """The objects whose ``relation`` (or a subclass hybrid's, inherited) points at ``target`` now.

    Nothing is read until ``guids`` or ``first()`` is used: then every hybrid's link keys, at once.
    """

    def __init__(self, relation: Relation, target: DataObject) -> None:
        self._relation, self._target = relation, target
        self._members = [member for member in family(relation) if member.owner is not None]
        #: how many hybrids hold the relation: past one, their reverse list is no read of one instant
        self.hybrids = len(self._members)
        self._found: list[tuple[type[DataObject], str]] | None = None

    def _read(self) -> list[tuple[type[DataObject], str]]:
        """(hybrid, guid) of each holder, the declaring hybrid's first; read once."""
        if self._found is None:
            context = current()
            check_listing(self._relation, self._target, context)
            prefixes: list[tuple[type[DataObject], str]] = []
            for member in self._members:
                assert member.owner is not None and member.target is not None
                prefixes.append((member.owner, context.keys.links(
                    member.target._meta.name, self._target.guid, member.owner._meta.name, member.name)))
            scanned = context.persistent.scan_keys([prefix for _, prefix in prefixes])
            self._found = [(hybrid, key[len(prefix):]) for hybrid, prefix in prefixes
                           for key in scanned[prefix]]
        return self._found

    @property
    def guids(self) -> list[str]:
        return [guid for _, guid in self._read()]

    def first(self) -> DataObject | None:
        """Return the first holder still stored and still pointing at the target (loaded as its own hybrid),
        or ``None``: one deleted, or that handed the target over, since the keys were read is skipped."""
        field = self._relation.guid_field  # a subclass hybrid inherits the relation: the same field
        for hybrid, guid in self._read():
            holder = hybrid._load_many([guid]).get(guid)
            if holder is not None and holder._data.get(field) == self._target.guid:
                give_owners([holder], {member.name: self._target for member in self._members})
                return holder
        return None
