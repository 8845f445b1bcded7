"""The pass over documents: each checked against the model, and the keys it should own noted."""

from __future__ import annotations

from dal.backends.base import Entry
from dal.model.meta import HybridMeta
from dal.model.registry import family
from dal.model.trees import class_trees
from dal.model.validation import valid_guid, validate_document
from dal.objects.transaction import Document, decode
from dal.structures import GUID_RULE
from dal.tools.check.problems import Kind
from dal.tools.check.state import CheckState, Indexed, Link


class DocumentPass(CheckState):
    """Read every document: report those that do not fit the model, note the keys the others own."""

    def document(self, key: str, rest: str, entry: Entry) -> None:
        hybrid, _, guid = rest.partition("/")
        counts = self.report.documents
        counts[hybrid] = counts.get(hybrid, 0) + 1
        meta = self.metas.get(hybrid)
        if not guid:  # o/<hybrid> itself: no object's key, whether the hybrid is declared or not
            self.add(Kind.INVALID_DOCUMENT, key, f"a document key without a guid (o/{hybrid}, not "
                     f"o/{hybrid}/<guid>): no object has it, and reads, dumps and loads never see it; delete "
                     "the key", hybrid, guid)
            return
        if meta is None:
            self.add(Kind.ORPHAN_KEY, key, f"document of undeclared hybrid {hybrid!r}: pass the module "
                     "declaring it with --hybrids, or delete the data", hybrid, guid)
            return
        if not valid_guid(guid):
            # no object has this key: reads, dumps and loads refuse it, so no keys are expected (nor
            # built by --repair) for it, and keys naming it are left alone, as an unreadable one's
            self.unreadable.add((hybrid, guid))
            self.add(Kind.INVALID_DOCUMENT, key, f"a {meta.cls.__name__} document is stored under "
                     f"{guid!r}, which is not a guid ({GUID_RULE}): dal cannot read, dump or load it, and "
                     "leaves the keys naming it alone; store it again as a new object, or delete the key",
                     hybrid, guid)
            return
        self.docs[hybrid, guid] = entry.revision
        label = f"{meta.cls.__name__} {guid}"
        try:
            document = decode(entry.value)
        except ValueError as exc:  # includes bad UTF-8 and JSON
            self.unreadable.add((hybrid, guid))
            self.add(Kind.INVALID_DOCUMENT, key, f"{label}: the stored document is not a JSON object "
                     f"({exc}); its keys are left alone; restore it from a dump or delete the object",
                     hybrid, guid)
            return
        validation = validate_document(meta, document)
        if validation.problems:
            wrong = "; ".join(problem.message for problem in validation.problems)
            self.add(Kind.INVALID_DOCUMENT, key, f"{label}: {wrong}; assign values of the declared types and "
                     "save the object, or correct the data in a migration step (the only way for a typed "
                     "value that fails the load)", hybrid, guid)
        if validation.unknown:
            unknown, name = validation.unknown, meta.cls.__name__
            them = "it" if len(unknown) == 1 else "them"
            self.add(Kind.UNKNOWN_FIELD, key, f"{label} stores {', '.join(unknown)}, which {name} does not "
                     f"declare: written by a newer model (leave {them}), or left by an older one that "
                     f"declared {them}: once no process runs that model, drop {them} with a migration step "
                     f"(step.drop_field({name}, {unknown[0]!r}); see docs/migrations.md)", hybrid, guid)
        for dropped in validation.dropped:  # what a load, copy or save with this model would lose
            self.add(Kind.UNKNOWN_FIELD, key, f"{label}: {dropped.message}", hybrid, guid)
        # validation leaves None for a stored value that does not fit, but reads return the stored
        # value (a type read through a converter fails or converts it) and keys are built from it
        read = {**validation.document, **{problem.field: document[problem.field]
                                          for problem in validation.problems if problem.field in document}}
        self.expect(meta, guid, document, read)

    def expect(self, meta: HybridMeta, guid: str, document: Document, read: Document) -> None:
        """Record the keys ``document`` owns, exactly as plan_write derives them.

        ``read`` is the document as reads see it (defaults filled in). Keys the schema record does
        not list as built are expected as `dal migrate` builds them: from the values reads return.
        Built index entries are expected from the stored value, or, for a field the document lacks,
        from the default reads return: queries ask for that value, so an entry for None would hide
        the object (a save drops both). Built unique keys from the stored value: a unique key is
        another object's to lose if deleted by mistake, so a save only ever deletes its own.
        """
        keys = self.keys
        indexed_built, unique_built = self.keys_built(meta)
        for prop in meta.unique:
            built = prop.name in unique_built
            value = document.get(prop.name) if built else read.get(prop.name)
            if value is not None:
                unique_key = keys.unique(meta.name, prop.name, value)
                self.unique_holders.setdefault(unique_key, []).append(guid)
                self.unique_values[unique_key] = (meta, prop.name, value)
                if not built:
                    self.unbuilt_unique.add(unique_key)
        for prop in meta.indexed:
            built = prop.name in indexed_built
            value = document[prop.name] if built and prop.name in document else read.get(prop.name)
            entry = Indexed(meta, guid, prop.name, value, read.get(prop.name), prop.name not in document,
                             built)
            self.index_entries[keys.index(meta.name, prop.name, value, guid)] = entry
        for relation in meta.relations.values():
            target = document.get(relation.guid_field)
            if relation.target is None or not valid_guid(target):
                continue
            link = keys.link(relation.target._meta.name, target, meta.name, relation.name, guid)
            self.links[link] = Link(meta, guid, relation, target)
            if relation.onetoone:
                self.onetoone.setdefault((family(relation)[0], target), []).append((meta, guid))
                self.onetoone_keys.setdefault(keys.onetoone(meta.name, relation.name, target), []).append(
                    self.links[link])

    def documents_read(self) -> None:
        """Report what the documents tell only together: shared guids, one-to-one targets pointed at twice."""
        self.shared_guids()
        self.one_to_one()

    def shared_guids(self) -> None:
        """Report each guid stored under several hybrids of one class tree (a hybrid, its subclass hybrids).

        ``from_model()`` refuses such a guid, but a save checks only its own hybrid's key: two racing saves
        of objects given one guid, or another client, can store it. A load or copy refuses it before writing.
        """
        roots = {name: root for root, names in class_trees().items() if len(names) > 1 for name in names}
        held: dict[tuple[str, str], list[str]] = {}  # (root, guid) -> the hybrids storing it
        for hybrid, guid in self.docs:
            if hybrid in roots and hybrid in self.metas:
                held.setdefault((roots[hybrid], guid), []).append(hybrid)
        for (_, guid), names in held.items():
            if len(names) < 2:
                continue
            classes = " and ".join(self.metas[name].cls.__name__ for name in names)
            self.add(Kind.DUPLICATE_GUID, self.keys.doc(names[0], guid),
                     f"{classes} {guid} share one guid, which names one object across a hybrid and its "
                     "subclass hybrids: a reverse list holding both shows one of them twice and the other "
                     "never, and `dal load` and `dal copy` refuse them; store all but one again as a new "
                     "object (relinking what points at it) and delete the old one (`dal check --repair` does "
                     "not fix this)", names[0], guid)

    def one_to_one(self) -> None:
        for (relation, target), sources in self.onetoone.items():
            if len(sources) > 1:
                assert relation.owner is not None and relation.target is not None
                several = len({meta.name for meta, _ in sources}) > 1  # subclass hybrids among them
                named = [f"{meta.cls.__name__} {guid}" if several else guid for meta, guid in sources]
                self.violated.update(self.keys.onetoone(member.owner._meta.name, member.name, target)
                                     for member in family(relation) if member.owner is not None)
                self.add(Kind.ONETOONE_VIOLATION, self.keys.doc(relation.target._meta.name, target),
                         f"{relation.qualified} is one-to-one, but {len(sources)} objects point at "
                         f"{relation.target.__name__} {target}: {', '.join(named)}; unlink all but one",
                         relation.target._meta.name, target)
