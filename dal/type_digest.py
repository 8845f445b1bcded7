"""Digests naming a declared type, alike in every process that declares it; and its name in messages.

A cached dynamic is tagged with the digest of the type its class declares
(:mod:`dal.objects.dynamics_tags`), so a process declaring another type (during a deploy that
changed it) reads that value as a miss. A digest is built from text every process gives alike:
never an ``id`` or a ``hash``, which differ from process to process.
"""

from __future__ import annotations

import hashlib
import json
import re
import types
from collections.abc import Sequence
from typing import Annotated, Any, Literal, Union, get_args, get_origin

#: an object's address in a repr (``<... object at 0x7f...>``): another in every process
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")
#: hex digits of a digest: 32 bits tell apart the types one dynamic is declared as over its life
DIGEST_LENGTH = 8


def type_digest(declared: object, schema: dict[str, Any] | None, adapter: Any = None) -> str:
    """Return the digest of a declared type: the JSON ``schema`` of what it admits, less the words
    that describe rather than constrain (:func:`constraints`); a type pydantic cannot describe, or a
    native one (``str``, ``int``, ``list``: no schema), by its repr without addresses.

    Never the repr of a described type: its ``Annotated`` metadata may print a set, in an order
    that differs from process to process (``PYTHONHASHSEED``), and every process would read the
    others' values as another type's.

    What a type admits does not always tell what it writes: ``Decimal`` admits a number or a string,
    as ``float | str`` does, but writes a string, which ``float | str`` would read back as a ``str``
    (``'1.5' * 2 == '1.51.5'``). So where the schema of what the type writes (``adapter``'s, in
    serialization mode) is another, it is digested too. Only there: the digest of every other type
    stays what it was, and a value cached before stays a hit. Types alike in both schemas read each
    other's values as their own type (``list[int]`` and ``tuple[int, ...]``, ``set`` and ``frozenset``,
    an ``Enum`` and the ``Literal`` of its values, two models of the same fields): converted, never
    served as another type.
    """
    if schema is not None:
        described = constraints(schema)
        # both by field name: dal writes a model's fields by name, whatever alias pydantic's schema shows
        written = None if adapter is None else json_schema(adapter, "serialization", by_alias=False)
        admitted = None if written is None else json_schema(adapter, by_alias=False)
        if written is not None and admitted is not None and constraints(written) != constraints(admitted):
            described = {"admits": described, "writes": constraints(written)}
        return _digest(json.dumps(described, sort_keys=True, default=_address_free))
    return _digest(_address_free(declared))


#: schema keywords that describe a type without constraining its values: a docstring (absent under
#: ``python -OO``), a title, an example, and a default (a model field's ``= datetime.now()`` is
#: another in every process)
_DESCRIPTIVE = frozenset({"title", "description", "default", "examples"})
#: keywords whose value is a mapping of names (fields, definitions) to schemas, not a schema
_NAMED = frozenset({"properties", "$defs", "definitions", "patternProperties", "dependentSchemas"})
#: keywords whose value is data (allowed values), kept whole
_DATA = frozenset({"enum", "const"})


def constraints(schema: Any, named: bool = False) -> Any:
    """Return a JSON schema without its descriptive keywords, at any depth (a field named
    ``default`` in a model's ``properties`` is kept: there the keys are names)."""
    if isinstance(schema, dict):
        return {key: value if key in _DATA and not named else constraints(value, key in _NAMED and not named)
                for key, value in schema.items() if named or key not in _DESCRIPTIVE}
    if isinstance(schema, list):
        return [constraints(item) for item in schema]
    return schema


def _address_free(value: object) -> str:
    return _ADDRESS.sub("", repr(value))


def values_digest(allowed: Sequence[Any]) -> str:
    """Return the digest of a list of allowed values: a set, so their order admits nothing more or
    less, and 1, 1.0 and true are told apart."""
    return _digest("one of " + json.dumps(sorted(json.dumps(item, sort_keys=True) for item in allowed)))


def json_schema(adapter: Any, mode: str = "validation", *, by_alias: bool = True) -> dict[str, Any] | None:
    """Return the JSON schema of a pydantic ``TypeAdapter``'s type: of what it admits, or in ``mode``
    ``"serialization"`` of what it writes (fields named by their aliases unless ``by_alias`` is false);
    None when pydantic cannot describe it (it cannot describe every type it validates)."""
    try:
        schema: dict[str, Any] = adapter.json_schema(mode=mode, by_alias=by_alias)
    except Exception:
        return None
    return schema


def _digest(description: str) -> str:
    return hashlib.sha256(description.encode("utf-8", "backslashreplace")).hexdigest()[:DIGEST_LENGTH]


def type_label(declared: object) -> str:
    """Return how a message names a declared type: a class by its name (``Limits``, ``datetime``); a
    parametrised or special form as written, with its arguments so named (``list[float]``, ``int | str``,
    ``date | None``, ``tuple[int, ...]``, ``Literal['a', 'b']``); ``Annotated[str, ...]`` by the type it
    constrains (``str``: the message's reason names the constraint)."""
    origin = get_origin(declared)
    if origin is None:
        if declared is None or declared is type(None):
            return "None"
        if declared is Ellipsis:
            return "..."
        if isinstance(declared, list):  # Callable's parameters
            return f"[{', '.join(map(type_label, declared))}]"
        name = getattr(declared, "__name__", None)
        return name if isinstance(name, str) else _address_free(declared)
    arguments = get_args(declared)
    if origin is Annotated:
        return type_label(arguments[0])
    if origin is Union or origin is types.UnionType:
        return " | ".join(map(type_label, arguments))
    if origin is Literal:
        return f"Literal[{', '.join(map(repr, arguments))}]"
    if not arguments:  # a bare typing.List
        return type_label(origin)
    return f"{type_label(origin)}[{', '.join(map(type_label, arguments))}]"
