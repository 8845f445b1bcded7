"""Digests naming a declared type, alike in every process that declares it.

A cached dynamic is tagged with the digest of the type its class declares
(:mod:`dal.objects.dynamics_tags`), so a process declaring another type (during a deploy that
changed it) reads that value as a miss. A digest is built from text every process gives alike:
never an ``id`` or a ``hash``, which differ from process to process.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from typing import Any

#: an object's address in a repr (``<... object at 0x7f...>``): another in every process
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")
#: hex digits of a digest: 32 bits tell apart the types one dynamic is declared as over its life
DIGEST_LENGTH = 8


def type_digest(declared: object, schema: dict[str, Any] | None) -> str:
    """Return the digest of a declared type: its repr (``list[int]``, ``<class 'app.Reading'>``) without
    addresses, and the JSON ``schema`` of what it admits (a model's fields), keys sorted."""
    described = repr(declared)
    if schema is not None:
        described += " " + json.dumps(schema, sort_keys=True, default=repr)
    return _digest(_ADDRESS.sub("", described))


def values_digest(allowed: Sequence[Any]) -> str:
    """Return the digest of a list of allowed values: a set, so their order admits nothing more or
    less, and 1, 1.0 and true are told apart."""
    return _digest("one of " + json.dumps(sorted(json.dumps(item, sort_keys=True) for item in allowed)))


def json_schema(adapter: Any) -> dict[str, Any] | None:
    """Return the JSON schema of a pydantic ``TypeAdapter``'s type; None when pydantic cannot describe
    it (it cannot describe every type it validates)."""
    try:
        schema: dict[str, Any] = adapter.json_schema()
    except Exception:
        return None
    return schema


def _digest(description: str) -> str:
    return hashlib.sha256(description.encode("utf-8", "backslashreplace")).hexdigest()[:DIGEST_LENGTH]
