"""The write path's shortcuts write exactly what they always wrote (issue 16).

Keys and stored bytes are a contract: data already on disk and caches other processes fill must
still be found. Each shortcut of the write path is checked against the code it replaced (kept
here as the reference) and against keys written down before the change:

- ``canonical`` skips normalizing when no ``-0.0`` is in the text, and reuses one encoder;
- ``Keys.value_version`` remembers the keys of scalar values, by type and value, so ``1``,
  ``1.0`` and ``True`` never share one;
- ``encode_value`` leaves text ``quote`` would not change as it is;
- ``changed_versions`` takes a shorter path for a create and a delete;
- ``decode`` reads a document as ``encode`` writes it without ``json.loads``'s detours;
- a journal record joins its keys once.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dal import keys as keys_module
from dal.cache.journal import RECORD, Journal
from dal.cache.versions import changed_versions
from dal.keys import Keys, encode_value
from dal.objects.transaction import decode, encode
from dal.values import canonical

# --- the code the shortcuts replaced ------------------------------------------------------


def reference_normalized(value: Any) -> Any:
    if isinstance(value, float):
        return value + 0.0
    if isinstance(value, list):
        return [reference_normalized(item) for item in value]
    if isinstance(value, dict):
        return {key: reference_normalized(item) for key, item in value.items()}
    return value


def reference_canonical(value: Any) -> str:
    return json.dumps(reference_normalized(value), sort_keys=True, separators=(",", ":"))


def reference_tagged(value: Any) -> str:
    if value is None:
        return "n"
    if value is True or value is False:
        return "b1" if value else "b0"
    if isinstance(value, int):
        return f"i{value}"
    if isinstance(value, float):
        return f"f{value + 0.0!r}"
    if isinstance(value, str):
        return "s" + value
    return "j" + reference_canonical(value)


def reference_encode_value(value: Any) -> str:
    text = reference_tagged(value)
    if text[0] in "sj":
        text = text[0] + quote(text[1:], safe="")
    if len(text) > 200:
        text = "h" + hashlib.sha256(text.encode()).hexdigest()
    return text


ROOT = "ns/c/st/"


def reference_value_version(hybrid: str, field: str, value: Any) -> str:
    digest = hashlib.blake2b(reference_tagged(value).encode(), digest_size=12).hexdigest()
    return f"{ROOT}v/{hybrid}/{field}/={digest}"


ABSENT = object()


def reference_same(left: Any, right: Any) -> bool:
    if type(left) is not type(right):
        return False
    if isinstance(left, (list, dict)):
        return reference_canonical(left) == reference_canonical(right)
    return bool(left == right)


def reference_changed_versions(meta: Any, guid: str, before: Mapping[str, Any] | None,
                               after: Mapping[str, Any] | None) -> list[str]:
    changed: list[str] = []
    if (before is None) != (after is None):
        changed += [f"{ROOT}v/{meta.name}/guid/*", reference_value_version(meta.name, "guid", guid)]
    for name, default in meta.stored_defaults.items():
        old = before.get(name, default) if before is not None else ABSENT
        new = after.get(name, default) if after is not None else ABSENT
        if old is not ABSENT and new is not ABSENT and reference_same(old, new):
            continue
        changed.append(f"{ROOT}v/{meta.name}/{name}/*")
        for value in (old, new):
            if value is not ABSENT:
                changed.append(reference_value_version(meta.name, name, value))
    return changed


# --- values -----------------------------------------------------------------------------

scalars = st.none() | st.booleans() | st.integers() | st.just(-0.0) | st.text(max_size=12) | \
    st.floats(allow_nan=False, allow_infinity=False)
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) |
                           st.dictionaries(st.text(max_size=6), inner, max_size=4), max_leaves=12)

#: (value, canonical text, key component, version key) as written before the shortcuts
CASES: list[tuple[Any, str, str, str]] = [
    (None, 'null', 'n', 'ns/c/st/v/H/f/=834ada729fa69c056513ab9c'),
    (True, 'true', 'b1', 'ns/c/st/v/H/f/=07d47076001829431c3da221'),
    (False, 'false', 'b0', 'ns/c/st/v/H/f/=5544492dab5bb98a59063c48'),
    (0, '0', 'i0', 'ns/c/st/v/H/f/=59d36bd813cb58c33b9d406c'),
    (1, '1', 'i1', 'ns/c/st/v/H/f/=a2ca199f3a2a5855bec59bf5'),
    (-1, '-1', 'i-1', 'ns/c/st/v/H/f/=68a15e5180ffec5c63e16dd1'),
    (1.0, '1.0', 'f1.0', 'ns/c/st/v/H/f/=595f81cbb197ca891b07a729'),
    (0.0, '0.0', 'f0.0', 'ns/c/st/v/H/f/=3b737f171d24b8f6c7a370c5'),
    (-0.0, '0.0', 'f0.0', 'ns/c/st/v/H/f/=3b737f171d24b8f6c7a370c5'),
    (1.5, '1.5', 'f1.5', 'ns/c/st/v/H/f/=070554a6909b06d27cb48cf8'),
    (-2.5e-300, '-2.5e-300', 'f-2.5e-300', 'ns/c/st/v/H/f/=565c35ab8332df251994b1b4'),
    ('1', '"1"', 's1', 'ns/c/st/v/H/f/=3f9e3f039cd08869e421a624'),
    ('', '""', 's', 'ns/c/st/v/H/f/=8b65b5d8cfad0d18d5edad88'),
    ('None', '"None"', 'sNone', 'ns/c/st/v/H/f/=71fcff9f5da4645521e0d0c9'),
    ('a/b c', '"a/b c"', 'sa%2Fb%20c', 'ns/c/st/v/H/f/=ab579fcc8d82f6d7af3b5a75'),
    ('é€😀', '"\\u00e9\\u20ac\\ud83d\\ude00"',
     's%C3%A9%E2%82%AC%F0%9F%98%80',
     'ns/c/st/v/H/f/=ea319272f7c81f294cce9ac0'),
    ('-0.0', '"-0.0"', 's-0.0', 'ns/c/st/v/H/f/=ea8dfbb43954871caadf1a98'),
    ([1, 1.0, True], '[1,1.0,true]', 'j%5B1%2C1.0%2Ctrue%5D', 'ns/c/st/v/H/f/=aa95ccb7fa06af6bc6d602a5'),
    ([-0.0, {'b': -0.0, 'a': [0.0]}], '[0.0,{"a":[0.0],"b":0.0}]',
     'j%5B0.0%2C%7B%22a%22%3A%5B0.0%5D%2C%22b%22%3A0.0%7D%5D',
     'ns/c/st/v/H/f/=a6dc10654a8f7d7ec4ba457b'),
    ({'b': 1, 'a': {'d': [], 'c': None}}, '{"a":{"c":null,"d":[]},"b":1}',
     'j%7B%22a%22%3A%7B%22c%22%3Anull%2C%22d%22%3A%5B%5D%7D%2C%22b%22%3A1%7D',
     'ns/c/st/v/H/f/=075395a6d678eed41de01cf6'),
    ({'x': '-0.0'}, '{"x":"-0.0"}',
     'j%7B%22x%22%3A%22-0.0%22%7D',
     'ns/c/st/v/H/f/=beb0e83d43586211afe7b13a'),
    ([-0.01, 0.5], '[-0.01,0.5]', 'j%5B-0.01%2C0.5%5D', 'ns/c/st/v/H/f/=4a46f6dcfb076438a939b83a'),
    ("x" * 300, '"' + "x" * 300 + '"', 'h9a31477bebb65e8fc74f3e862b444cc6fb347fa37a1342e82b9b776ae0418183',
     'ns/c/st/v/H/f/=930345ded4737fe7751e44d0'),
    (1000000000000000000000000000000, '1000000000000000000000000000000',
     'i1000000000000000000000000000000',
     'ns/c/st/v/H/f/=d28ecfd4ec78e05a883f64b5'),
    ([], '[]', 'j%5B%5D', 'ns/c/st/v/H/f/=84929912f70eb5513c2e2819'),
    ({}, '{}', 'j%7B%7D', 'ns/c/st/v/H/f/=4adb90ef59e7cb0f1f1026db'),
    ([[], {}, [None]], '[[],{},[null]]',
     'j%5B%5B%5D%2C%7B%7D%2C%5Bnull%5D%5D',
     'ns/c/st/v/H/f/=3f772d0abd76eb1dc9c65279'),
    ({'é': ['€', -0.0]}, '{"\\u00e9":["\\u20ac",0.0]}',
     'j%7B%22%5Cu00e9%22%3A%5B%22%5Cu20ac%22%2C0.0%5D%7D',
     'ns/c/st/v/H/f/=b36b3aafe9626e3e78c54397'),
]


@pytest.mark.parametrize(("value", "text", "component", "version"), CASES)
def test_keys_and_texts_are_the_ones_written_before(value: Any, text: str, component: str,
                                                    version: str) -> None:
    keys = Keys("ns", "st")
    assert canonical(value) == text
    assert encode_value(value) == component
    assert keys.value_version("H", "f", value) == version
    assert keys.value_version("H", "f", value) == version  # again: from the memo


@given(json_values)
def test_canonical_text_and_keys_match_the_replaced_code(value: Any) -> None:
    keys = Keys("ns", "st")
    assert canonical(value) == reference_canonical(value)
    assert encode_value(value) == reference_encode_value(value)
    for _ in range(2):
        assert keys.value_version("H", "f", value) == reference_value_version("H", "f", value)


def test_the_version_memo_never_conflates_equal_values_of_other_types() -> None:
    values = [1, True, 1.0, "1", 0, False, 0.0, -0.0, None, "None", "", 2 ** 70, float(2 ** 70)]
    for order in (values, values[::-1]):
        keys = Keys("ns", "st")  # each order fills its own memo first
        for value in order * 2:
            assert keys.value_version("H", "f", value) == reference_value_version("H", "f", value)
    keys = Keys("ns", "st")
    distinct = {keys.value_version("H", "f", value) for value in (1, True, 1.0, "1")}
    assert len(distinct) == 4
    assert keys.value_version("H", "f", -0.0) == keys.value_version("H", "f", 0.0)
    assert keys.value_version("H", "g", 1) != keys.value_version("H", "f", 1)
    assert keys.value_version("I", "f", 1) != keys.value_version("H", "f", 1)


def test_the_version_memo_is_bounded_and_skips_long_text(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(keys_module, "VERSION_MEMO", 8)
    keys = Keys("ns", "st")
    for number in range(100):
        assert keys.value_version("H", "f", number) == reference_value_version("H", "f", number)
        assert len(keys._versions) <= 8
    long = "x" * (keys_module.VERSION_MEMO_TEXT + 1)
    assert keys.value_version("H", "f", long) == reference_value_version("H", "f", long)
    assert all(value != long for *_, value in keys._versions)
    assert keys.object_version("H", "g1") == reference_value_version("H", "guid", "g1")
    assert ("H", "guid", str, "g1") not in keys._versions  # a guid never repeats


class Meta:
    name = "H"
    stored_defaults: Mapping[str, Any] = {"a": None, "b": 0, "c": [], "d": "x", "rel_guid": None}


documents = st.none() | st.fixed_dictionaries(
    {}, optional={name: json_values for name in Meta.stored_defaults})


@given(documents, documents)
def test_changed_versions_match_the_replaced_code(before: dict[str, Any] | None,
                                                  after: dict[str, Any] | None) -> None:
    keys = Keys("ns", "st")
    for _ in range(2):  # the second with the memo filled
        assert changed_versions(keys, Meta(), "g1", before, after) == \
            reference_changed_versions(Meta(), "g1", before, after)


# --- documents and journal records --------------------------------------------------------

DOC = {"b": "é", "a": [1, 2.5, -0.0], "c": {"z": 1, "y": None}, "d": "\u2028\"\\"}
DOC_BYTES = b'{"b":"\xc3\xa9","a":[1,2.5,-0.0],"c":{"z":1,"y":null},"d":"\xe2\x80\xa8\\"\\\\"}'


def test_encode_writes_the_bytes_it_always_wrote() -> None:
    assert encode(DOC) == DOC_BYTES
    assert repr(decode(DOC_BYTES)) == repr(DOC)


@given(st.dictionaries(st.text(max_size=6), json_values, max_size=6))
def test_decode_reads_what_json_loads_reads(document: dict[str, Any]) -> None:
    raw = encode(document)
    for variant in (raw, b" " + raw, raw + b"\n", b"\t" + raw + b" \r\n", raw.decode().encode("utf-16")):
        assert repr(decode(variant)) == repr(json.loads(variant))


@pytest.mark.parametrize("raw", [b'{"a":1}x', b"{", b'{"a":\xff}', b"[1]", b"", b'{"a":1}{}', b"{\x00",
                                 b'{"a":1', b"1", b"null"])
def test_decode_refuses_what_json_loads_refuses(raw: bytes) -> None:
    try:
        expected: type[BaseException] = type(None)  # type: ignore[assignment]
        loaded = json.loads(raw)
        if not isinstance(loaded, dict):
            expected = ValueError
    except ValueError as exc:
        expected = type(exc)
    with pytest.raises(expected):
        decode(raw)


def test_a_journal_record_lists_its_keys_as_it_always_did() -> None:
    journal = Journal.__new__(Journal)  # _encode and decode need only the keys
    journal.keys = Keys("ns", "st")
    invalidate = [f"{ROOT}o/H/g1", f"{ROOT}{ROOT}x", f"{ROOT}v/H/f/*", "elsewhere/k", f"a{ROOT}b"]
    record = journal._encode(invalidate)
    assert record == RECORD + "\n".join(key.removeprefix(ROOT) for key in invalidate).encode()
    under_root = [key for key in invalidate if key.startswith(ROOT)]
    assert journal.decode(journal._encode(under_root)) == under_root
    assert journal._encode([]) == RECORD


@pytest.mark.parametrize("text", [chr(code) for code in range(1, 256)] + ["a/b", "~._-AZaz09", "é", "a b"])
def test_every_character_is_quoted_as_before(text: str) -> None:
    for value in (text, f"x{text}y", [text], {text: text}):
        assert encode_value(value) == reference_encode_value(value)
