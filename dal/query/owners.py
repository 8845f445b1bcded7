"""The owner of a reverse list, given to each member that points at it, without a round trip.

``shelf.books`` lists the books whose ``shelf`` is that shelf: each listed book's ``shelf``
is the ``shelf`` object itself, unless its document (read after the list's guids) points
elsewhere, because it moved since.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from dal.objects.dataobject import DataObject


def give_owners(objects: Iterable[DataObject], seed: Mapping[str, DataObject]) -> None:
    """Give every object whose relation (named in ``seed``) points at its owner that owner object.

    Which relations apply is worked out once per hybrid, not per object: a reverse list of
    1,000 children costs one comparison each.
    """
    # per hybrid: (relation name, its guid field, the owner's guid, the owner)
    links: dict[type[DataObject], list[tuple[str, str, str, DataObject]]] = {}
    for obj in objects:
        kind = type(obj)
        hooks = links.get(kind)
        if hooks is None:
            relations = kind._meta.relations
            hooks = links[kind] = [(name, relations[name].guid_field, owner.guid, owner)
                                   for name, owner in seed.items()
                                   if name in relations and relations[name].target is type(owner)]
        data, related = obj._data, obj._objects
        for name, guid_field, guid, owner in hooks:
            # a member that moved away since the query ran keeps the relation its document holds
            if data[guid_field] == guid:
                related[name] = owner
