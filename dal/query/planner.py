"""Run a compiled query: candidates from index keys where they apply, a batched scan otherwise.

``EQUALS``/``IN`` on ``guid`` needs no read at all; on ``<relation>_guid`` it reads the
link keys, on a unique property the unique keys, on an indexed property its index entries
(each only once ``dal migrate`` has built them, see :mod:`dal.objects.schema`). ``AND`` intersects
the candidates of its indexable items, ``OR`` unions them when every item is indexable.
A dotted path whose last field is indexable walks the link keys back, one batched read per
hop. Candidates are always re-verified against their documents, loaded in batches; only
when nothing applies are the documents scanned, in batches. Dotted paths and dynamics are
resolved for a whole batch at once (:mod:`dal.query.batches`): one batched load per hop, one
multi-get of the cached values per dynamic a row of the batch reaches, never one per row.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from dal.backends.base import Entry
from dal.backends.paging import scan_batches
from dal.objects.schema import ready_indexes
from dal.query.batches import Batch, decode_document
from dal.query.filters import DocumentFilter, Filter, compile_document_filter, compile_filter
from dal.query.grammar import Condition, Group, Node, Operator, WhereOperator
from dal.values import has_text

if TYPE_CHECKING:
    from dal.config import Context
    from dal.model.meta import HybridMeta
    from dal.structures import Relation

#: documents per scanned or loaded batch
BATCH = 500
#: a dotted path walked back through more objects than this is verified forward instead
BACKWARD_LIMIT = 2000


@dataclass(frozen=True)
class Step:
    """One line of a plan: what a part of the query did, and how many guids it gave."""

    what: str
    how: str
    count: int | None = None

    def __str__(self) -> str:
        counted = "" if self.count is None else f" -> {self.count}"
        return f"{self.how}: {self.what}{counted}"


@dataclass
class Execution:
    """The steps of one run, and the documents it verified (kept so iteration need not reload)."""

    steps: list[Step] = field(default_factory=list)
    scanned: int = 0
    entries: dict[str, Entry] = field(default_factory=dict)
    #: their decoded documents, handed over to the objects built from them
    documents: dict[str, dict[str, Any]] = field(default_factory=dict)


class _TooWide(Exception):
    """A dotted path fans out too far to walk back; verify it forward instead."""


def access(meta: HybridMeta, condition: Condition, ready: frozenset[str]) -> str | None:
    """Return how an index can answer ``condition`` on ``meta`` (no dotted path), or ``None``."""
    if condition.operator not in (Operator.EQUALS, Operator.IN):
        return None
    values = condition.value if condition.operator is Operator.IN else (condition.value,)
    if not condition.sensitive and any(has_text(value) for value in values):
        return None
    kind, name = condition.field.kind, condition.field.name
    if kind == "guid":
        return "guid"
    if kind == "relation":
        return None if None in values else "link"
    if kind != "property" or name not in ready:
        return None
    prop = meta.properties[name]
    if prop.unique and None not in values:
        return "unique"
    return "index" if prop.indexed else None


class Planner:
    """Find the guids of ``meta`` objects matching ``root``."""

    def __init__(self, context: Context, meta: HybridMeta, root: Group) -> None:
        self.context = context
        self.meta = meta
        self.root = root
        self.run = Execution()
        self._ready: dict[str, frozenset[str]] = {}
        #: the query as one closure, compiled at the first batch it tests; in a 1-tuple when it needs the
        #: whole batch (dotted paths, dynamics)
        self._filter: DocumentFilter | tuple[Filter] | None = None

    def ready(self, meta: HybridMeta) -> frozenset[str]:
        if meta.name not in self._ready:
            self._ready[meta.name] = ready_indexes(self.context, meta) if meta.indexed or meta.unique \
                else frozenset()
        return self._ready[meta.name]

    # --- planning -------------------------------------------------------------------------

    def indexable(self, node: Node, meta: HybridMeta | None = None) -> bool:
        meta = meta or self.meta
        if isinstance(node, Group):
            if node.kind is WhereOperator.AND:
                return any(self.indexable(item, meta) for item in node.items)
            return all(self.indexable(item, meta) for item in node.items)
        if node.field.hops:
            return self.indexable(_leaf(node), _leaf_meta(node))
        return access(meta, node, self.ready(meta)) is not None

    def describe(self) -> list[Step]:
        """Return the plan without running it."""
        if not self.indexable(self.root):
            return [Step(describe_node(self.root), f"scan {self.meta.cls.__name__} in batches of {BATCH}")]
        return [*self._describe(self.root, self.meta), Step("every candidate", "verify against its document")]

    def _describe(self, node: Node, meta: HybridMeta) -> Iterator[Step]:
        if isinstance(node, Group):
            for item in node.items:
                if self.indexable(item, meta):
                    yield from self._describe(item, meta)
                else:
                    yield Step(describe_node(item), "verify only (no index applies)")
            return
        if node.field.hops:
            leaf_meta = _leaf_meta(node)
            yield from self._describe(_leaf(node), leaf_meta)
            path = ".".join(relation.name for relation in node.field.hops)
            yield Step(node.describe(), f"walk back {path} through link keys (or, past {BACKWARD_LIMIT:,} "
                       "objects on a hop, scan instead)")
            return
        how = access(meta, node, self.ready(meta))
        yield Step(node.describe(), _ACCESS[how or ""].format(cls=meta.cls.__name__, field=node.field.name))

    # --- running --------------------------------------------------------------------------

    def guids(self) -> list[str]:
        """Run the query and return the matching guids in guid order."""
        candidates: set[str] | None = None
        if self.indexable(self.root):
            try:
                candidates = self._lookup(self.root, self.meta)
            except _TooWide as exc:
                self.run.steps.append(Step(str(exc), "too wide to walk back; scanning instead"))
        if candidates is None:
            return self._scan()
        return self._verify(sorted(candidates))

    def _lookup(self, node: Node, meta: HybridMeta) -> set[str] | None:
        if isinstance(node, Group):
            found: set[str] | None = None
            for item in node.items:
                if not self.indexable(item, meta):
                    if node.kind is WhereOperator.OR:
                        return None
                    continue
                guids = self._lookup(item, meta)
                if guids is None:
                    return None
                if node.kind is WhereOperator.AND:
                    found = guids if found is None else found & guids
                    if not found:
                        return found
                else:
                    found = guids if found is None else found | guids
            return found if found is not None else set()
        if node.field.hops:
            return self._walk_back(node)
        return self._access(meta, node)

    def _access(self, meta: HybridMeta, condition: Condition) -> set[str]:
        how = access(meta, condition, self.ready(meta))
        values = condition.value if condition.operator is Operator.IN else (condition.value,)
        keys = self.context.keys
        name = condition.field.name
        if how == "guid":
            found = {value for value in values if isinstance(value, str)}
        elif how == "unique":
            stored = self.context.persistent.get_many([keys.unique(meta.name, name, v) for v in values])
            found = {entry.value.decode() for entry in stored.values()}
        elif how == "link":
            relation = next(r for r in meta.relations.values() if r.guid_field == name)
            assert relation.target is not None
            target = relation.target._meta.name
            found = self._link_sources(target, meta.name, relation.name, values)
        else:
            prefixes = [keys.index_prefix(meta.name, name, value) for value in values]
            scanned = self.context.persistent.scan_keys(prefixes)
            found = {key[len(prefix):] for prefix in prefixes for key in scanned[prefix]}
        self.run.steps.append(Step(condition.describe(), f"{how} lookup on {meta.cls.__name__}", len(found)))
        return found

    def _link_sources(self, target: str, source: str, relation: str, target_guids: Iterable[str]) -> set[str]:
        prefixes = [self.context.keys.links(target, guid, source, relation) for guid in target_guids]
        scanned = self.context.persistent.scan_keys(prefixes)
        return {key[len(prefix):] for prefix in prefixes for key in scanned[prefix]}

    def _walk_back(self, condition: Condition) -> set[str] | None:
        guids = self._lookup(_leaf(condition), _leaf_meta(condition))
        if guids is None:
            return None
        for relation in reversed(condition.field.hops):
            if len(guids) > BACKWARD_LIMIT:
                raise _TooWide(f"{condition.describe()} reaches {len(guids)} {_owner(relation)} objects")
            assert relation.target is not None and relation.owner is not None
            guids = self._link_sources(relation.target._meta.name, relation.owner._meta.name, relation.name,
                                       sorted(guids))
        self.run.steps.append(Step(condition.describe(), "walked back through link keys", len(guids)))
        return guids

    def _scan(self) -> list[str]:
        matched: list[str] = []
        prefix = self.context.keys.docs(self.meta.name)
        skip = len(prefix)
        for batch in scan_batches(self.context.persistent, prefix, BATCH):
            self.run.scanned += len(batch)
            matched += self._matching([(key[skip:], entry) for key, entry in batch])
        scanned = f"scanned {self.run.scanned} documents"
        self.run.steps.append(Step(describe_node(self.root), scanned, len(matched)))
        return matched

    def _verify(self, candidates: list[str]) -> list[str]:
        matched: list[str] = []
        for start in range(0, len(candidates), BATCH):
            batch = candidates[start:start + BATCH]
            entries = self.context.load_documents(self.meta.name, batch)
            matched += self._matching([(guid, entries[guid]) for guid in batch if guid in entries])
        self.run.steps.append(Step(f"{len(candidates)} candidates", "verified against their documents",
                                   len(matched)))
        return matched

    def _matching(self, pairs: list[tuple[str, Entry]]) -> list[str]:
        """Return the guids of ``pairs`` whose documents match; keep the first BATCH matched for iteration."""
        if self._filter is None:
            self._filter = compile_document_filter(self.root) or (compile_filter(self.root),)
        test = self._filter
        if isinstance(test, tuple):
            return self._matching_batch(test[0], pairs)
        run, name = self.run, self.meta.cls.__name__
        keep = BATCH - len(run.entries)
        matched: list[str] = []
        for guid, entry in pairs:
            document = decode_document(entry.value, name, guid)
            if test(guid, document):
                matched.append(guid)
                if keep > 0:  # handed over to the objects iteration builds; beyond one batch, not kept
                    keep -= 1
                    run.entries[guid] = entry
                    run.documents[guid] = document
        return matched

    def _matching_batch(self, test: Filter, pairs: list[tuple[str, Entry]]) -> list[str]:
        """``_matching`` for a query that reads dotted paths or dynamics, resolved per batch."""
        batch = Batch(self.context, self.meta, dict(pairs))
        matched = batch.matching(test, [guid for guid, _ in pairs])
        for guid in matched[:max(0, BATCH - len(self.run.entries))]:
            self.run.entries[guid] = batch.entries[guid]
            self.run.documents[guid] = batch.data[guid]
        return matched


_ACCESS = {"guid": "guids given", "link": "link keys of {cls}.{field}",
           "unique": "unique keys of {cls}.{field}", "index": "index entries of {cls}.{field}",
           "": "verify only (no index applies)"}


def _leaf(condition: Condition) -> Condition:
    field = condition.field
    return replace(condition, field=replace(field, hops=(), text=field.text.rsplit(".", 1)[-1]))


def _leaf_meta(condition: Condition) -> HybridMeta:
    target = condition.field.hops[-1].target
    assert target is not None
    return target._meta


def _owner(relation: Relation) -> str:
    return relation.target.__name__ if relation.target is not None else "?"


def describe_node(node: Node) -> str:
    if isinstance(node, Condition):
        return node.describe()
    if not node.items:
        return "every object" if node.kind is WhereOperator.AND else "nothing"
    parts = (describe_node(item) if isinstance(item, Condition) else f"({describe_node(item)})"
             for item in node.items)
    return f" {node.kind.value} ".join(parts)
