"""Sample values of a JSON schema, to try a declared type on before any object exists.

:class:`dal.validators.Validator` builds a value of the declared type from each probe and refuses
the type when one does not read back as itself (pydantic's ``SecretStr`` stores its mask), when the
class is created rather than at the first assignment that would lose data.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

#: JSON strings for formats pydantic validates from a string (any other format gets "probe")
_FORMATS = {"date-time": "2001-02-03T04:05:06.789000Z", "date": "2001-02-03", "time": "04:05:06.789000",
            "duration": "P1DT2H3M4.5S", "uuid": "12345678-1234-4234-8234-123456789abc",
            "ipv4": "192.0.2.1", "ipv6": "2001:db8::1", "email": "probe@example.com",
            "uri": "https://example.com/probe", "ipvanyaddress": "192.0.2.1"}


def probes(schema: Any, defs: dict[str, Any], depth: int = 0) -> Iterator[Any]:
    """Yield JSON values a JSON schema describes, one or a few per branch (best effort, never all)."""
    if depth > 8 or not isinstance(schema, dict):
        return
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        yield from probes(defs.get(ref.removeprefix("#/$defs/")), defs, depth + 1)
        return
    if "const" in schema:
        yield schema["const"]
        return
    if isinstance(schema.get("enum"), list):
        yield from schema["enum"][:3]
        return
    for key in ("anyOf", "oneOf", "allOf"):
        for choice in schema.get(key, ()):
            yield from probes(choice, defs, depth + 1)
    kind = schema.get("type")
    for one in kind if isinstance(kind, list) else [kind]:
        yield from _typed_probes(one, schema, defs, depth)


def _typed_probes(kind: Any, schema: dict[str, Any], defs: dict[str, Any], depth: int) -> Iterator[Any]:
    first = _first_probe
    if kind == "string":
        yield _FORMATS.get(schema.get("format", ""), "probe")
    elif kind == "integer":
        yield 7
    elif kind == "number":
        yield 2.5
    elif kind == "boolean":
        yield True
    elif kind == "null":
        yield None
    elif kind == "array":
        prefix = schema.get("prefixItems")
        if isinstance(prefix, list):
            items = [first(item, defs, depth) for item in prefix]
            if all(item is not _NO_PROBE for item in items):
                yield items
        else:
            item = first(schema.get("items", {}), defs, depth)
            yield [] if item is _NO_PROBE else [item]
    elif kind == "object":
        properties = schema.get("properties", {})
        made = {name: first(each, defs, depth) for name, each in properties.items()}
        if any(made[name] is _NO_PROBE for name in schema.get("required", ()) if name in made):
            return
        made = {name: value for name, value in made.items() if value is not _NO_PROBE}
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict) and not properties:
            value = first(extra, defs, depth)
            if value is not _NO_PROBE:
                made["1"] = value  # "1": a key that str, int and float keyed dicts all accept
        yield made


_NO_PROBE = object()


def _first_probe(schema: Any, defs: dict[str, Any], depth: int) -> Any:
    return next(probes(schema, defs, depth + 1), _NO_PROBE)
