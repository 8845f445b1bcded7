"""The stored form of a schema record (:mod:`dal.objects.schema`): what a readable one holds.

A record is read by every save and query of its hybrid, and may have been written by anything
with access to the store (a hand edit, a restored backup). One that does not have the shape dal
writes is unreadable: :func:`parse_record` raises ``TypeError`` or ``ValueError`` (bad UTF-8 or
JSON) for it, saying what is wrong, and the record counts as one with nothing ready until
``dal migrate`` rewrites it; ``dal check`` reports it (:func:`record_fault`).
"""

from __future__ import annotations

import json
from typing import Any

#: the lists of names ``ready`` holds; ``onetoone`` is absent from records written before one-to-one keys
READY_PARTS = ("indexed", "unique", "onetoone")


def parse_record(raw: bytes) -> tuple[dict[str, Any], str, frozenset[str], frozenset[str], frozenset[str]]:
    """Return a stored record's (model, fingerprint, indexed, unique, onetoone); raise ``TypeError``
    or ``ValueError`` saying what is wrong when it does not have the shape dal writes."""
    data = json.loads(raw)
    if not isinstance(data, dict) or not isinstance(data.get("ready"), dict):
        raise TypeError('it is not a JSON object with a "ready" object')
    model, fingerprint = data.get("model"), data.get("fingerprint", "")
    if not isinstance(model, dict):
        raise TypeError('its "model" is not an object')
    for part in ("properties", "relations"):
        specs = model.get(part, {})
        if not isinstance(specs, dict) or not all(isinstance(spec, dict) for spec in specs.values()):
            raise TypeError(f'its "model.{part}" is not an object of objects, one per {part[:-1]}')
    lacking = model.get("lacking", [])
    if not isinstance(lacking, list) or not all(isinstance(name, str) for name in lacking):
        raise TypeError('its "model.lacking" is not a list of field names')
    if not isinstance(fingerprint, str):
        raise TypeError('its "fingerprint" is not a string')
    ready = data["ready"]
    names = []
    for part in READY_PARTS:
        listed = ready.get(part, [] if part == "onetoone" else None)
        if not isinstance(listed, list) or not all(isinstance(name, str) for name in listed):
            raise TypeError(f'its "ready.{part}" is not a list of names')
        names.append(frozenset(listed))
    return model, fingerprint, names[0], names[1], names[2]


def record_fault(raw: bytes) -> str | None:
    """Return why a stored record is unreadable (it counts as one with nothing ready), or ``None``."""
    try:
        parse_record(raw)
    except (ValueError, TypeError) as exc:  # ValueError includes bad UTF-8 and JSON
        return str(exc)
    return None
