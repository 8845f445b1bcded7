"""The query builder: ``Backend.status == 'RUNNING'`` builds a condition of the query grammar.

Reading a field on a hybrid class (``Backend.status``, ``Backend.backend_type.code``, ``Backend.guid``)
gives a :class:`FieldExpression`; its operators and methods build a :class:`Condition`, and ``&``
and ``|`` combine conditions into a :class:`Where`. Each is only a way of writing the grammar the
query engine reads (:mod:`dal.query.grammar`): :meth:`Where.grammar` returns the very dict of
tuples a hand-written query is, with the operators spelled as the strings the grammar accepts
(``'EQUALS'``, ``'AND'``, ...), so the planner, the result cache and ``explain()`` see no difference.
Nothing is validated here: the grammar checks fields and values when the query is made.

A field expression also reads as the spec it stands for (``Backend.name.unique``, ``.owner``,
``.validator``): reading a field on the class gave the spec itself before the builder existed. A
relation's expression is first the path into its target: a name its target lacks is no field
(``Item.kind.name`` when ``Kind`` has no ``name``), save the few of :data:`RELATION_SPEC`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from dal import structures
from dal.exceptions import InvalidQueryError, NoSuchFieldError, NotAConditionError

if TYPE_CHECKING:
    from dal.model.meta import HybridMeta

#: what a relation's expression reads of its spec (``Item.kind.foreign_key``) when its target has no
#: field of that name: the spec's own settings, never ``name``, ``doc`` or ``owner``, which a target's
#: field of that name would be mistaken for (``Item.kind.name == 'box'`` compared 'kind' with 'box')
RELATION_SPEC = frozenset({"foreign_type", "foreign_key", "mandatory", "onetoone", "target"})


def _not_declared(relation: structures.Relation) -> str:
    return f"{relation.qualified} points at {relation.foreign_type!r}, which is not a declared hybrid"


#: why a relation has no target (not declared yet, or an abstract base); the registry, a layer above,
#: installs its :meth:`~dal.model.registry.Registry.undeclared`
undeclared: Callable[[structures.Relation], str] = _not_declared


class FieldExpression:
    """A field of a hybrid, read on the class: ``path`` as the grammar names it, ``spec`` its declaration."""

    __slots__ = ("_meta", "_path", "_root", "_spec")

    def __init__(self, meta: HybridMeta | None, path: str, spec: Any, root: type | None = None) -> None:
        object.__setattr__(self, "_meta", meta)  # of the hybrid the path ends in (relations: their target)
        object.__setattr__(self, "_path", path)
        object.__setattr__(self, "_spec", spec)
        # the hybrid the field was read on: a query of another hybrid would read its own field of that
        # path, so the condition is checked against the queried hybrid (check_roots)
        object.__setattr__(self, "_root", root)

    def _condition(self, operator: str, value: Any, case: bool = True) -> Condition:
        return Condition(self._path, operator, value, case, root=self._root)

    # --- conditions ---------------------------------------------------------------------------

    def __eq__(self, value: object) -> Condition:  # type: ignore[override]
        return self._condition("EQUALS", value)

    def __ne__(self, value: object) -> Condition:  # type: ignore[override]
        return self._condition("NOT_EQUALS", value)

    def __lt__(self, value: object) -> Condition:
        return self._condition("LT", value)

    def __gt__(self, value: object) -> Condition:
        return self._condition("GT", value)

    def __le__(self, value: object) -> Condition:
        return self._condition("LE", value)

    def __ge__(self, value: object) -> Condition:
        return self._condition("GE", value)

    def __hash__(self) -> int:
        return hash((FieldExpression, self._path, id(self._spec)))

    def eq(self, value: object, *, case: bool = True) -> Condition:
        """``EQUALS``; ``case=False`` compares strings case-insensitively."""
        return self._condition("EQUALS", value, case)

    def ne(self, value: object, *, case: bool = True) -> Condition:
        return self._condition("NOT_EQUALS", value, case)

    def in_(self, values: Iterable[object], *, case: bool = True) -> Condition:
        """``IN``: the field equals one of ``values``."""
        # a str, bytes, a mapping or no iterable at all goes as it is, for the grammar to refuse as it
        # refuses a hand-written IN of one ('ab' is not ['a', 'b'])
        wrong = isinstance(values, (str, bytes, Mapping)) or not isinstance(values, Iterable)
        return self._condition("IN", values if wrong else list(values), case)

    def contains(self, value: object, *, case: bool = True) -> Condition:
        """``CONTAINS``: a substring of a string field, an element of a list field."""
        return self._condition("CONTAINS", value, case)

    def is_(self, value: None) -> Condition:
        """``EQUALS None``: the field is unset (``is_not(None)``: it is set)."""
        return self._condition("EQUALS", value)

    def is_not(self, value: None) -> Condition:
        return self._condition("NOT_EQUALS", value)

    # --- paths and the spec ---------------------------------------------------------------------

    def __getattr__(self, name: str) -> Any:
        if name in FieldExpression.__slots__:  # not set yet (a copy being made)
            raise AttributeError(name)
        meta, spec = self._meta, self._spec
        if name.startswith("_"):  # a protocol's probe (copy, inspect), never a field
            if spec is None:
                raise AttributeError(name)
            return getattr(spec, name)
        if meta is not None and _is_field(meta, name):
            return FieldExpression(_target_meta(meta, name), f"{self._path}.{name}", _spec_of(meta, name),
                                   self._root)
        if spec is not None and hasattr(spec, name) and (name in RELATION_SPEC or not _walks(self)):
            return getattr(spec, name)  # what its spec says: Store.name.unique, Store.kind.foreign_key
        raise NoSuchFieldError(_no_field(self, name))

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("a field expression is read-only; assign fields on objects")

    def __repr__(self) -> str:
        return f"<field {self._path!r}: {self._spec!r}>"


def _no_field(expression: FieldExpression, name: str) -> str:
    """Return why ``expression.<name>`` is no field of the query builder, and what to write instead."""
    meta, spec, path = expression._meta, expression._spec, expression._path
    root = expression._root.__name__ if expression._root is not None else "?"
    written = f"{root}.{path}.{name}"
    if meta is not None:
        target = meta.cls.__name__
        if name in meta.reverse:
            source = meta.reverse[name].source.__name__
            return (f"{written}: {target}.{name} is a reverse relation, which a query path cannot walk; "
                    f"query {source} instead ({source}.where({source}.{meta.reverse[name].relation.name} "
                    f"== <a {target}>))")
        return (f"{written}: {target} has no field {name!r}. Fields: guid, properties "
                f"({_names(meta.properties)}), relations ({_names(meta.relations)}, or <relation>_guid), "
                f"dynamics ({_names(meta.dynamics)}), and dotted paths through relations")
    if _walks(expression):  # its target is not declared (yet), or is an abstract base
        return f"{written}: {undeclared(spec)}"
    what = "a guid" if spec is None or isinstance(spec, structures.Relation) else \
        f"a {type(spec).__name__.lower()}"
    return (f"{written}: {root}.{path} is {what}, not a relation to a hybrid, and a dotted path walks "
            f"relations only; compare the whole value ({root}.{path} == ...)")


def _walks(expression: FieldExpression) -> bool:
    """Whether ``expression`` is a relation (a path into its target), not its guid or another field."""
    spec = expression._spec
    return isinstance(spec, structures.Relation) and expression._path.rsplit(".", 1)[-1] == spec.name


def _names(specs: Mapping[str, Any]) -> str:
    return ", ".join(sorted(specs)) or "none"


def _is_field(meta: HybridMeta, name: str) -> bool:
    return (name == "guid" or name in meta.properties or name in meta.relations
            or name in meta.dynamics or name in meta.fields())


def _spec_of(meta: HybridMeta, name: str) -> Any:
    return (meta.properties.get(name) or meta.relations.get(name) or meta.dynamics.get(name)
            or next((r for r in meta.relations.values() if r.guid_field == name), None))


def _target_meta(meta: HybridMeta, name: str) -> HybridMeta | None:
    relation = meta.relations.get(name)
    return relation.target._meta if relation is not None and relation.target is not None else None


def field_expression(meta: HybridMeta, name: str, spec: Any) -> FieldExpression:
    """Return the expression of field ``name`` of a hybrid (a relation's walks on into its target)."""
    return FieldExpression(_target_meta(meta, name), name, spec, meta.cls)


#: how deeply a query's groups may nest: every layer of a query (validation, planning, filtering)
#: walks its tree recursively, and this stays far below Python's recursion limit in all of them
MAX_DEPTH = 100


class Where:
    """Something a query is made of: a condition, or conditions joined by ``&`` (AND) or ``|`` (OR)."""

    def grammar(self) -> dict[str, Any]:
        """Return the query (``{'type': ..., 'items': [...]}``) a ``DataList`` reads."""
        raise NotImplementedError

    def __and__(self, other: Where) -> Group:
        return Group("AND", (*_parts(self, "AND"), *_parts(_checked(other), "AND")))

    def __or__(self, other: Where) -> Group:
        return Group("OR", (*_parts(self, "OR"), *_parts(_checked(other), "OR")))

    def __bool__(self) -> bool:
        raise TypeError(f"{self!r} is a query condition, not a truth value: pass it to Cls.where(...), and "
                        "join conditions with & and |, not `and` and `or`")

    def __repr__(self) -> str:
        return f"<where {self.grammar()!r}>"

    def conditions(self) -> tuple[Condition, ...]:
        """Return every condition this is made of."""
        raise NotImplementedError


class Condition(Where):
    """One condition: ``(field, operator, value)``, with ``False`` fourth when case-insensitive.

    ``root`` is the hybrid class its field was read on (None: not known, not checked).
    """

    def __init__(self, path: str, operator: str, value: Any, case: bool = True, *,
                 root: type | None = None) -> None:
        if not isinstance(case, bool):  # as the grammar refuses a fourth item that is not a bool
            field = path if root is None else f"{root.__name__}.{path}"
            raise InvalidQueryError(f"{field}: case must be True or False (case=False compares strings "
                                    f"case-insensitively), not {case!r}")
        self.item: tuple[Any, ...] = (path, operator, value) if case else (path, operator, value, False)
        self.root = root

    def grammar(self) -> dict[str, Any]:
        return {"type": "AND", "items": [self.item]}

    def conditions(self) -> tuple[Condition, ...]:
        return (self,)

    def __repr__(self) -> str:
        return f"<where {self.item!r}>"


class Group(Where):
    """Conditions joined by ``kind`` (``'AND'`` or ``'OR'``); ``a & b & c`` is one group of three."""

    def __init__(self, kind: str, items: tuple[Where, ...]) -> None:
        self.kind = kind
        self.items = items
        #: how many groups nest here, this one included (refused past MAX_DEPTH, as the grammar does)
        self.depth: int = 1 + max((item.depth for item in items if isinstance(item, Group)), default=0)
        if self.depth > MAX_DEPTH:
            raise InvalidQueryError(f"a query whose groups nest {self.depth} deep, more than {MAX_DEPTH}; "
                                    "flatten it (a & b & c is one group; join a long list of "
                                    "alternatives with one Cls.field.in_([...]))")

    def grammar(self) -> dict[str, Any]:
        items = [item.item if isinstance(item, Condition) else item.grammar() for item in self.items]
        return {"type": self.kind, "items": items}

    def conditions(self) -> tuple[Condition, ...]:
        return tuple(condition for item in self.items for condition in item.conditions())


class Built(dict[str, Any]):
    """The grammar ``where()`` returns (a plain query dict to everything reading it), with the
    conditions it was built from, for the query list to check against its hybrid (:func:`for_hybrid`)."""

    def __init__(self, grammar: dict[str, Any], conditions: tuple[Condition, ...]) -> None:
        super().__init__(grammar)
        self._conditions = conditions

    def conditions(self) -> tuple[Condition, ...]:
        return self._conditions


def _checked(other: object) -> Where:
    if isinstance(other, bool):  # a comparison of two plain values: one side was no field expression
        raise NotAConditionError(
            f"can only join query conditions (Cls.field == value, ...), not {other!r}, which a comparison "
            "gave: one side was no field expression (Cls.field, Cls.relation.field), but a plain value, "
            "a spec's setting or something else; a reverse accessor (Kind.stores) is not a field either: "
            "query the hybrid holding its relation (Store.where(Store.kind == kind))")
    if not isinstance(other, Where):
        raise NotAConditionError(f"can only join query conditions (Cls.field == value, ...), not {other!r}")
    return other


def _parts(where: Where, kind: str) -> tuple[Where, ...]:
    """Return the items ``where`` gives a group of ``kind``: a group of the same kind is flattened."""
    return where.items if isinstance(where, Group) and where.kind == kind else (where,)


def where(*conditions: Where | bool) -> dict[str, Any] | None:
    """Return the query all ``conditions`` build, joined by AND; ``None`` (every object) without any.

    One group (``a | b``) is the query itself; several conditions are the items of an AND.
    """
    checked = [_checked(condition) for condition in conditions]
    if not checked:
        return None
    joined = checked[0] if len(checked) == 1 else Group(
        "AND", tuple(part for condition in checked for part in _parts(condition, "AND")))
    return Built(joined.grammar(), joined.conditions())


def for_hybrid(hybrid: type, query: Mapping[str, Any] | Where | None) -> Mapping[str, Any] | None:
    """Return the grammar of ``query`` for a query list of ``hybrid``: a built query is checked first.

    A field read on another hybrid (``Store.where(Kind.name == 'x')``) would filter ``hybrid``'s own
    field of that path: refused with InvalidQueryError. A field of a class ``hybrid`` derives from is its
    field too; a subclass's is not (a query of the parent would select parents on a child's field).
    """
    if isinstance(query, (Where, Built)):
        for condition in query.conditions():
            _check_root(hybrid, condition)
    return query.grammar() if isinstance(query, Where) else query


def _check_root(hybrid: type, condition: Condition) -> None:
    root = condition.root
    if root is None or issubclass(hybrid, root):
        return
    path = condition.item[0]
    meta: HybridMeta = vars(hybrid)["_meta"]
    through = [f"{hybrid.__name__}.{relation.name}.{path}" for relation in meta.relations.values()
               if isinstance(relation.target, type) and issubclass(relation.target, root)]
    fix = (f"to follow a relation, write {' or '.join(through)}" if through
           else f"query {root.__name__}.where(...) for {root.__name__} objects")
    raise InvalidQueryError(
        f"a query of {hybrid.__name__}: the condition {condition.item!r} is on a field of {root.__name__}, "
        f"not of {hybrid.__name__} or a class it derives from, and would filter {hybrid.__name__}'s own "
        f"{path!r}; {fix}")


def _class_access(spec: Any, owner: type | None) -> Any:
    """A field read on its hybrid class: its expression, once the class is built (the spec before)."""
    meta = None if owner is None else vars(owner).get("_meta")
    if meta is None:
        return spec  # the class is being built (or is not a hybrid): the declaration itself
    if isinstance(spec, structures.RelationGuid):
        return field_expression(meta, spec.relation.guid_field, spec.relation)
    return field_expression(meta, spec.name, spec)


structures.class_access = _class_access
