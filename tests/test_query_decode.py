"""The scan's document decoder answers exactly as ``json.loads`` does, on any bytes, and refuses what
is JSON but not an object (a stored document always is one)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dal.exceptions import BackendError
from dal.query.batches import decode_document

JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
                    max_leaves=12)


def loads(value: bytes) -> tuple[str, Any]:
    try:
        document = json.loads(value)
    except ValueError:
        return "error", None
    return ("ok", document) if isinstance(document, dict) else ("error", None)


def decoded(value: bytes) -> tuple[str, Any]:
    try:
        return "ok", decode_document(value, "Thing", "g")
    except BackendError:
        return "error", None


@settings(max_examples=400, deadline=None)
@given(JSON, st.sampled_from(["compact", "spaced", "ascii", "bom", "utf-16", "padded"]))
def test_a_document_decodes_as_json_loads_would(value: Any, form: str) -> None:
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=form == "ascii") if form != "spaced" \
        else json.dumps(value, indent=1)
    raw = {"bom": b"\xef\xbb\xbf" + text.encode(), "utf-16": text.encode("utf-16"),
           "padded": f" \n{text}\t ".encode()}.get(form, text.encode())
    assert decoded(raw) == loads(raw)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=40) | st.text(max_size=40).map(str.encode))
def test_any_bytes_decode_as_json_loads_would(raw: bytes) -> None:
    assert decoded(raw) == loads(raw)


EDGES = [b"", b"{", b'{"a":1}x', b'{"a":1} {}', b"\xff", b'"\\ud800"', b"[1]", b"nul"]


@pytest.mark.parametrize("raw", EDGES)
def test_edge_cases(raw: bytes) -> None:
    assert decoded(raw) == loads(raw)


def test_not_json_names_the_object() -> None:
    for raw in (b"{oops", b"[1]", b'"text"'):
        with pytest.raises(BackendError, match=r"Thing g is not a JSON object .* run `dal check`"):
            decode_document(raw, "Thing", "g")
