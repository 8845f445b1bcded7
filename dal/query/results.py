"""Cached query results, invalidated exactly through version tokens.

A cached result stores its guids together with the tokens of the versions it depends on:
``v/<hybrid>/<field>/=<value>`` for an ``EQUALS``/``IN`` condition (a change to or from
that value), ``v/<hybrid>/<field>/*`` for any other condition (any change of the field),
the relation fields a dotted path walks, and ``v/<hybrid>/guid/*`` for a query with no
condition and for a condition the field's default satisfies while documents may lack the field
(the hybrid's schema record does not list it: a document written by a model that does not declare
the field reads as that default, and its writer names no version of it).
A writer, after its commit, deletes the versions of what it changed (one batched
delete, with the object cache entries). A reader fetches the result and its versions in one
multi-get and uses the result only if every token is still the one it was built with.

Why that is exact: a reader takes its tokens *before* computing, creating missing ones
with fresh random values. A commit the computation missed happened after the tokens were
read, so its writer's delete comes after them too and removes them; a token is random, so
it never comes back. A create only touches the versions of the values it holds, so a
cached ``status EQUALS 'RUNNING'`` survives creating a ``'NEW'`` object. The writers' side,
which versions a write changes, is :func:`dal.cache.versions.changed_versions`.
A result over a hybrid with indexes also depends on the hybrid's schema version
(``v/<hybrid>/#schema``), which every write of its schema record deletes, and is planned from a
view of the record read after that token was last seen as it is now
(:func:`dal.objects.schema.as_of`). A writer that does not maintain an index takes it out of the
record before its own commit (and a create or delete checks, in its commit, that the record is
the one it planned from: :mod:`dal.objects.views`), so either the plan sees that, or the
result's tokens change when the record write's delete arrives, or the writer's commit comes after
the tokens were read and invalidates the result.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from functools import partial
from typing import TYPE_CHECKING

from dal.objects.schema import as_of, recorded_fields
from dal.query.grammar import (
    Condition,
    Group,
    Node,
    Operator,
    WhereOperator,
    digest,
    satisfies,
    uses_dynamics,
)
from dal.values import has_text

if TYPE_CHECKING:
    from dal.config import Context
    from dal.keys import Keys
    from dal.model.meta import HybridMeta

#: a cached result is dropped after this long even if no write touched it
RESULT_TTL = 600.0
#: tokens outlive results; a lost token only costs a recomputation
TOKEN_TTL = 3600.0


def cached_guids(context: Context, meta: HybridMeta, root: Group,
                 compute: Callable[[], list[str]]) -> tuple[list[str], str]:
    """Return the guids matching ``root`` and how they were found: ``hit``, ``miss`` or ``off``."""
    if not context.caches_objects or uses_dynamics(root):
        return compute(), "off"  # dynamics are computed values: their results are never cached
    context.check_local_cache()
    cache = context.objects
    # a result planned through an index depends on the record that said the index is complete too: a
    # record write deletes its schema version (late, through the journal, if the cache missed it)
    indexed = {context.keys.schema_version(owner.name): owner for owner in _indexed_hybrids(meta, root)}
    versions = sorted({*dependencies(context.keys, meta, root, partial(recorded_fields, context)), *indexed})
    result_key = context.keys.cached_result(meta.name, digest(meta, root))
    found = cache.get_many([result_key, *versions], count=False)
    tokens = [found.get(key) for key in versions]
    raw = found.get(result_key)
    if raw is not None and None not in tokens:
        entry = json.loads(raw)
        if entry["t"] == [token.decode() for token in tokens if token is not None]:
            context.stats.add("query_hits")
            return list(entry["g"]), "hit"
    context.stats.add("query_misses")
    for index, key in enumerate(versions):
        if tokens[index] is None:
            token = os.urandom(9).hex().encode()
            if not cache.put(key, token, TOKEN_TTL):
                return compute(), "off"  # without its token a result could not be checked later
            tokens[index] = token
    for index, key in enumerate(versions):  # which indexes are complete, as of no earlier than the tokens
        owner = indexed.get(key)
        if owner is not None:
            as_of(context, owner, tokens[index] or b"")
    guids = compute()
    entry_text = json.dumps({"t": [token.decode() for token in tokens if token is not None], "g": guids},
                            separators=(",", ":"))
    cache.put(result_key, entry_text.encode(), RESULT_TTL)
    return guids, "miss"


def dependencies(keys: Keys, meta: HybridMeta, node: Node,
                 held: Callable[[HybridMeta], frozenset[str]]) -> Iterable[str]:
    """Yield the version keys whose change may change the result of ``node`` over ``meta``; ``held``
    tells the fields every stored document of a hybrid holds (:func:`recorded_fields`)."""
    if isinstance(node, Group):
        if not node.items and node.kind is WhereOperator.AND:
            yield keys.field_version(meta.name, "guid")  # everything: any create or delete
        for item in node.items:
            yield from dependencies(keys, meta, item, held)
        return
    owner = meta
    for relation in node.field.hops:
        yield keys.field_version(owner.name, relation.guid_field)
        assert relation.target is not None
        owner = relation.target._meta
    yield from _condition_versions(keys, owner.name, node)
    if satisfies(node, node.field.default) and node.field.name not in held(owner):
        # a document without the field reads as its default: one created by a model that does not
        # declare it (an older one, in a rolling deploy) names no version of the field, only guid/*;
        # once the hybrid's record lists the field (`dal migrate` brought every document up to it),
        # no document lacks it
        yield keys.field_version(owner.name, "guid")


def _indexed_hybrids(meta: HybridMeta, node: Node) -> set[HybridMeta]:
    """Return the hybrids whose indexes a plan of ``node`` over ``meta`` may read."""
    if isinstance(node, Group):
        return set().union(*(_indexed_hybrids(meta, item) for item in node.items)) if node.items else set()
    owner = meta
    for relation in node.field.hops:
        assert relation.target is not None
        owner = relation.target._meta
    return {owner} if owner.indexed or owner.unique else set()


def _condition_versions(keys: Keys, hybrid: str, condition: Condition) -> Iterable[str]:
    name = condition.field.name
    exact = condition.operator in (Operator.EQUALS, Operator.IN)
    values = condition.value if condition.operator is Operator.IN else (condition.value,)
    # a case-insensitive match of a value holding text matches other values too: any change counts
    if exact and (condition.sensitive or not any(has_text(value) for value in values)):
        for value in values:
            yield keys.value_version(hybrid, name, value)
    else:
        yield keys.field_version(hybrid, name)
