"""The passes over derived keys: unique keys, index entries, links and one-to-one keys.

Each key read is ticked off what the documents pass noted; a key no document owns is stale,
and what is left over after a pass is missing.
"""

from __future__ import annotations

from typing import Any

from dal.backends.base import Delete, Entry, Exists, Put, Revision
from dal.model.meta import HybridMeta
from dal.model.validation import valid_guid
from dal.tools.check.problems import Fix, Kind
from dal.tools.check.state import CheckState, Link, shown


class DerivedKeyPasses(CheckState):
    """Check the keys a save derives from a document against what the documents own."""

    # --- unique keys --------------------------------------------------------------------

    def unique_key(self, key: str, rest: str, entry: Entry) -> None:
        parts = rest.split("/", 2)
        meta = self.metas.get(parts[0])
        prop = meta.properties.get(parts[1]) if meta is not None and len(parts) == 3 else None
        if meta is None or prop is None or not prop.unique:
            self.add(Kind.ORPHAN_KEY, key, "unique key of an undeclared hybrid or of a property that is not "
                     "unique: pass the module declaring it with --hybrids, or delete the key", parts[0])
            return
        owner = entry.value.decode(errors="replace")
        holders = self.unique_holders.pop(key, None)
        values = self.unique_values.pop(key, None)
        name = meta.cls.__name__
        if holders is None:
            if (meta.name, owner) in self.unreadable:
                return  # its owner's document cannot be read: it may well hold the value
            self.add(Kind.STALE_UNIQUE, key, f"unique key {name}.{prop.name} names {owner}, but no {name} "
                     "holds that value; it blocks the value for everyone", meta.name, owner,
                     Fix((Revision(key, entry.revision), self.doc_revision(meta.name, owner)),
                         (Delete(key),)))
        elif len(holders) > 1:
            assert values is not None
            self.duplicate(key, values, holders)
        elif holders[0] != owner:
            holder = holders[0]
            assert values is not None
            fix = None if (meta.name, owner) in self.unreadable else Fix(
                (Revision(key, entry.revision), self.doc_revision(meta.name, holder),
                 self.doc_revision(meta.name, owner)), (Put(key, holder.encode()),),
                self.versions(meta.name, prop.name, values[2]))
            left = "" if fix is not None else (f"; left alone while {name} {owner}'s document cannot be "
                                               "read (it may hold the value too): restore or delete it first")
            self.add(Kind.STALE_UNIQUE, key, f"unique key {name}.{prop.name} names {owner}, but {name} "
                     f"{holder} holds that value{left}", meta.name, holder, fix)

    def duplicate(self, key: str, values: tuple[HybridMeta, str, Any], holders: list[str]) -> None:
        meta, prop_name, value = values
        name = meta.cls.__name__
        self.add(Kind.DUPLICATE_UNIQUE, key, f"{name}.{prop_name} must be unique, but {len(holders)} objects "
                 f"hold {value!r}: {', '.join(holders)}; change all but one", meta.name, holders[0])

    def missing_unique(self) -> None:
        for key, holders in self.unique_holders.items():
            meta, prop_name, value = self.unique_values[key]
            if len(holders) > 1:
                self.duplicate(key, (meta, prop_name, value), holders)
                continue
            guid = holders[0]
            if key in self.unbuilt_unique:
                self.note_unbuilt(Kind.UNBUILT_UNIQUE, meta, prop_name, guid, value, False)
                continue
            self.add(Kind.MISSING_UNIQUE, key, f"{meta.cls.__name__} {guid} holds {prop_name}={value!r}, but "
                     "its unique key is missing, so another object could take the value", meta.name, guid,
                     Fix((Revision(key, 0), self.doc_revision(meta.name, guid)), (Put(key, guid.encode()),),
                         self.versions(meta.name, prop_name, value)))
        self.unique_holders.clear()
        self.unique_values.clear()
        self.unbuilt_unique.clear()
        self.report_unbuilt(Kind.UNBUILT_UNIQUE)

    # --- index entries ------------------------------------------------------------------

    def index_key(self, key: str, rest: str, entry: Entry) -> None:
        parts = rest.split("/", 3)
        meta = self.metas.get(parts[0])
        prop = meta.properties.get(parts[1]) if meta is not None and len(parts) == 4 else None
        if meta is None or prop is None or not prop.indexed:
            self.add(Kind.ORPHAN_KEY, key, "index entry of an undeclared hybrid or of a property that is not "
                     "indexed: pass the module declaring it with --hybrids, or delete the key", parts[0])
            return
        if self.index_entries.pop(key, None) is not None:
            return
        guid = parts[3]
        if (meta.name, guid) in self.unreadable:
            return
        state = "stores another value" if (meta.name, guid) in self.docs else "is not stored"
        self.add(Kind.STALE_INDEX, key, f"index entry of {meta.cls.__name__}.{prop.name} for {guid}, which "
                 f"{state}; queries re-check every object an entry names, so it only costs them a wasted "
                 "read", meta.name, guid,
                 Fix((Revision(key, entry.revision), self.doc_revision(meta.name, guid)), (Delete(key),)))

    def missing_index(self) -> None:
        for key, indexed in self.index_entries.items():
            meta = indexed.meta
            if not indexed.built:
                self.note_unbuilt(Kind.UNBUILT_INDEX, meta, indexed.field, indexed.guid, indexed.read,
                                  indexed.lacks)
                continue
            fix = Fix((self.doc_revision(meta.name, indexed.guid),), (Put(key, b""),),
                      self.versions(meta.name, indexed.field, indexed.value))
            self.add(Kind.MISSING_INDEX, key, f"{meta.cls.__name__} {indexed.guid} reads "
                     f"{shown(indexed.field, indexed.read, indexed.lacks)}, but its index entry is missing; "
                     "queries would miss it", meta.name, indexed.guid, fix)
        self.index_entries.clear()
        self.report_unbuilt(Kind.UNBUILT_INDEX)

    # --- links --------------------------------------------------------------------------

    def link_key(self, key: str, rest: str, entry: Entry) -> None:
        parts = rest.split("/", 4)
        source = self.metas.get(parts[2]) if len(parts) == 5 else None
        relation = source.relations.get(parts[3]) if source is not None else None
        if source is None or relation is None or relation.target is None \
                or relation.target._meta.name != parts[0]:
            if source is None or not self.source_gone(key, parts, entry, source):
                self.add(Kind.ORPHAN_KEY, key, "link of an undeclared hybrid or relation: pass the module "
                         "declaring it with --hybrids, or delete the key", parts[0])
            return
        target, target_guid, source_guid = parts[0], parts[1], parts[4]
        expected = self.links.pop(key, None)
        if expected is not None:
            self.dangling(expected)
            return
        if (source.name, source_guid) in self.unreadable:
            return
        name = source.cls.__name__
        state = (f"{name} {source_guid}.{relation.name} points elsewhere"
                 if (source.name, source_guid) in self.docs else f"{name} {source_guid} is not stored")
        checks = (Revision(key, entry.revision), self.doc_revision(source.name, source_guid))
        self.add(Kind.STALE_LINK, key, f"link from {name}.{relation.name} to {relation.target.__name__} "
                 f"{target_guid}, but {state}; reverse lists re-check each object a link names and leave it "
                 "out, but it blocks deleting its target", target, target_guid,
                 Fix(checks, (Delete(key),)))

    def source_gone(self, key: str, parts: list[str], entry: Entry, source: HybridMeta) -> bool:
        """Report as stale (and repairable) a link of a declared hybrid, through a relation it does not
        declare (to that target), whose source object is not stored; tell whether it was one.

        A process of a newer model deleting the object left it (its delete unlinks only declared
        relations): no document names it, so nothing is lost, and it blocks deleting its target.
        A source dal could not have stored (not a guid) is left to a person.
        """
        hybrid, source_guid = parts[2], parts[4]
        if not valid_guid(source_guid) or (hybrid, source_guid) in self.docs \
                or (hybrid, source_guid) in self.unreadable:
            return False
        name = source.cls.__name__
        self.add(Kind.STALE_LINK, key, f"link from {name}.{parts[3]} (a relation {name} does not declare to "
                 f"{parts[0]}) to {parts[0]} {parts[1]}, but {name} {source_guid} is not stored; it blocks "
                 "deleting its target", parts[0], parts[1],
                 Fix((Revision(key, entry.revision), self.doc_revision(hybrid, source_guid)), (Delete(key),)))
        return True

    def dangling(self, link: Link) -> bool:
        """Report a relation whose target is not stored; return whether it was."""
        relation = link.relation
        assert relation.target is not None
        target = relation.target._meta.name
        if (target, link.target) in self.docs:
            return False
        self.add(Kind.DANGLING_RELATION, self.keys.doc(link.meta.name, link.guid),
                 f"{relation.qualified} of {link.guid} points at {relation.target.__name__} {link.target}, "
                 "which is not stored; relink the object or delete it", link.meta.name, link.guid)
        return True

    # --- one-to-one keys ----------------------------------------------------------------

    def onetoone_key(self, key: str, rest: str, entry: Entry) -> None:
        parts = rest.split("/", 2)
        meta = self.metas.get(parts[0])
        relation = meta.relations.get(parts[1]) if meta is not None and len(parts) == 3 else None
        if meta is None or relation is None or not relation.onetoone or relation.target is None:
            self.add(Kind.ORPHAN_KEY, key, "one-to-one key of an undeclared hybrid or of a relation that "
                     "is not one-to-one: pass the module declaring it with --hybrids, or delete the key",
                     parts[0])
            return
        target, owner = f"{relation.target.__name__} {parts[2]}", entry.value.decode(errors="replace")
        holders = self.onetoone_keys.pop(key, None)
        if key in self.violated or (meta.name, owner) in self.unreadable:
            return  # several objects point there (reported above), or its owner cannot be read
        name = meta.cls.__name__
        if holders is None:
            state = "points elsewhere" if (meta.name, owner) in self.docs else "is not stored"
            self.add(Kind.STALE_ONETOONE, key, f"one-to-one key of {relation.qualified} for {target} names "
                     f"{name} {owner}, which {state}; it keeps every other object from pointing there",
                     meta.name, owner,
                     Fix((Revision(key, entry.revision), self.doc_revision(meta.name, owner)),
                         (Delete(key),)))
        elif holders[0].guid != owner:
            holder = holders[0].guid
            self.add(Kind.STALE_ONETOONE, key, f"one-to-one key of {relation.qualified} for {target} names "
                     f"{owner}, but {name} {holder} is the one pointing there", meta.name, holder,
                     Fix((Revision(key, entry.revision), self.doc_revision(meta.name, holder),
                          self.doc_revision(meta.name, owner)), (Put(key, holder.encode()),)))

    def missing_onetoone(self) -> None:
        unbuilt: dict[tuple[str, str], list[Link]] = {}
        for key, holders in self.onetoone_keys.items():
            link = holders[0]
            relation = link.relation
            assert relation.target is not None
            if key in self.violated or (relation.target._meta.name, link.target) not in self.docs:
                continue  # several point there, or the target is gone: the relation needs a person
            if relation.name not in self.onetoone_built(link.meta):
                unbuilt.setdefault((link.meta.name, relation.name), []).append(link)
                continue
            self.add(Kind.MISSING_ONETOONE, key, f"{relation.qualified} of {link.guid} points at "
                     f"{relation.target.__name__} {link.target}, but its one-to-one key is missing, so "
                     "another object could point there too", link.meta.name, link.guid,
                     Fix((Revision(key, 0), self.doc_revision(link.meta.name, link.guid),
                          Exists(self.keys.doc(relation.target._meta.name, link.target))),
                         (Put(key, link.guid.encode()),)))
        for links in unbuilt.values():  # one problem per relation, not per object
            count, first = len(links), links[0]
            meta, relation = first.meta, first.relation
            assert relation.target is not None
            self.add(Kind.UNBUILT_ONETOONE, self.keys.onetoones(meta.name, relation.name),
                     f"{relation.qualified} is one-to-one, but its keys are not built yet: {count} "
                     f"object{'s' * (count != 1)} stored before they existed have none, e.g. "
                     f"{meta.cls.__name__} {first.guid}, which points at {relation.target.__name__} "
                     f"{first.target}; saves check the links instead until `dal migrate` builds them",
                     meta.name, first.guid)
        self.onetoone_keys.clear()

    def missing_links(self) -> None:
        for key, link in self.links.items():
            if self.dangling(link):
                continue  # a link to nothing would not help: the relation itself needs a person
            relation = link.relation
            assert relation.target is not None
            self.add(Kind.MISSING_LINK, key, f"{relation.qualified} of {link.guid} points at "
                     f"{relation.target.__name__} {link.target}, but the link is missing; "
                     f"{relation.target.__name__}.{relation.foreign_key} would not list it",
                     link.meta.name, link.guid,
                     Fix((self.doc_revision(link.meta.name, link.guid),
                          Exists(self.keys.doc(relation.target._meta.name, link.target))), (Put(key, b""),),
                         self.versions(link.meta.name, relation.guid_field, link.target)))
        self.links.clear()
