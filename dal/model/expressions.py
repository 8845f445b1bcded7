"""The query builder: ``Backend.status == 'RUNNING'`` builds a condition of the query grammar.

Reading a field on a hybrid class (``Backend.status``, ``Backend.backend_type.code``, ``Backend.guid``)
gives a :class:`FieldExpression`; its operators and methods build a :class:`Condition`, and ``&``
and ``|`` combine conditions into a :class:`Where`. Each is only a way of writing the grammar the
query engine reads (:mod:`dal.query.grammar`): :meth:`Where.grammar` returns the very dict of
tuples a hand-written query is, with the operators spelled as the strings the grammar accepts
(``'EQUALS'``, ``'AND'``, ...), so the planner, the result cache and ``explain()`` see no difference.
Nothing is validated here: the grammar checks fields and values when the query is made.

A field expression also reads as the spec it stands for (``Backend.name.unique``, ``.owner``,
``.validator``): reading a field on the class gave the spec itself before the builder existed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from dal import structures

if TYPE_CHECKING:
    from dal.model.meta import HybridMeta


class FieldExpression:
    """A field of a hybrid, read on the class: ``path`` as the grammar names it, ``spec`` its declaration."""

    __slots__ = ("_meta", "_path", "_spec")

    def __init__(self, meta: HybridMeta | None, path: str, spec: Any) -> None:
        object.__setattr__(self, "_meta", meta)  # of the hybrid the path ends in (relations: their target)
        object.__setattr__(self, "_path", path)
        object.__setattr__(self, "_spec", spec)

    # --- conditions ---------------------------------------------------------------------------

    def __eq__(self, value: object) -> Condition:  # type: ignore[override]
        return Condition(self._path, "EQUALS", value)

    def __ne__(self, value: object) -> Condition:  # type: ignore[override]
        return Condition(self._path, "NOT_EQUALS", value)

    def __lt__(self, value: object) -> Condition:
        return Condition(self._path, "LT", value)

    def __gt__(self, value: object) -> Condition:
        return Condition(self._path, "GT", value)

    def __le__(self, value: object) -> Condition:
        return Condition(self._path, "LE", value)

    def __ge__(self, value: object) -> Condition:
        return Condition(self._path, "GE", value)

    def __hash__(self) -> int:
        return hash((FieldExpression, self._path, id(self._spec)))

    def eq(self, value: object, *, case: bool = True) -> Condition:
        """``EQUALS``; ``case=False`` compares strings case-insensitively."""
        return Condition(self._path, "EQUALS", value, case)

    def ne(self, value: object, *, case: bool = True) -> Condition:
        return Condition(self._path, "NOT_EQUALS", value, case)

    def in_(self, values: Iterable[object], *, case: bool = True) -> Condition:
        """``IN``: the field equals one of ``values``."""
        # a str, bytes, a mapping or no iterable at all goes as it is, for the grammar to refuse as it
        # refuses a hand-written IN of one ('ab' is not ['a', 'b'])
        wrong = isinstance(values, (str, bytes, Mapping)) or not isinstance(values, Iterable)
        return Condition(self._path, "IN", values if wrong else list(values), case)

    def contains(self, value: object, *, case: bool = True) -> Condition:
        """``CONTAINS``: a substring of a string field, an element of a list field."""
        return Condition(self._path, "CONTAINS", value, case)

    def is_(self, value: None) -> Condition:
        """``EQUALS None``: the field is unset (``is_not(None)``: it is set)."""
        return Condition(self._path, "EQUALS", value)

    def is_not(self, value: None) -> Condition:
        return Condition(self._path, "NOT_EQUALS", value)

    # --- paths and the spec ---------------------------------------------------------------------

    def __getattr__(self, name: str) -> Any:
        if name in FieldExpression.__slots__:  # not set yet (a copy being made)
            raise AttributeError(name)
        meta = self._meta
        if meta is not None and not name.startswith("_") and _is_field(meta, name):
            return FieldExpression(_target_meta(meta, name), f"{self._path}.{name}", _spec_of(meta, name))
        if self._spec is None:
            raise AttributeError(f"{self._path!r} has no field {name!r}")
        return getattr(self._spec, name)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("a field expression is read-only; assign fields on objects")

    def __repr__(self) -> str:
        return f"<field {self._path!r}: {self._spec!r}>"


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
    return FieldExpression(_target_meta(meta, name), name, spec)


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


class Condition(Where):
    """One condition: ``(field, operator, value)``, with ``False`` fourth when case-insensitive."""

    def __init__(self, path: str, operator: str, value: Any, case: bool = True) -> None:
        self.item: tuple[Any, ...] = (path, operator, value) if case else (path, operator, value, False)

    def grammar(self) -> dict[str, Any]:
        return {"type": "AND", "items": [self.item]}

    def __repr__(self) -> str:
        return f"<where {self.item!r}>"


class Group(Where):
    """Conditions joined by ``kind`` (``'AND'`` or ``'OR'``); ``a & b & c`` is one group of three."""

    def __init__(self, kind: str, items: tuple[Where, ...]) -> None:
        self.kind = kind
        self.items = items

    def grammar(self) -> dict[str, Any]:
        items = [item.item if isinstance(item, Condition) else item.grammar() for item in self.items]
        return {"type": self.kind, "items": items}


def _checked(other: object) -> Where:
    if not isinstance(other, Where):
        raise TypeError(f"can only join query conditions (Cls.field == value, ...), not {other!r}")
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
    if len(checked) == 1:
        return checked[0].grammar()
    return Group("AND", tuple(part for condition in checked for part in _parts(condition, "AND"))).grammar()


def _class_access(spec: Any, owner: type | None) -> Any:
    """A field read on its hybrid class: its expression, once the class is built (the spec before)."""
    meta = None if owner is None else vars(owner).get("_meta")
    if meta is None:
        return spec  # the class is being built (or is not a hybrid): the declaration itself
    if isinstance(spec, structures.RelationGuid):
        return field_expression(meta, spec.relation.guid_field, spec.relation)
    return field_expression(meta, spec.name, spec)


structures.class_access = _class_access
