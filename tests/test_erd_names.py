"""Names the ERD formats could misread: Mermaid keywords, and diagram ids that clash.

Mermaid's lexer takes ``Class``, ``End``, ``One``... for keywords outside an entity block and
``PK``, ``FK``, ``UK`` for key marks inside one; Graphviz and Mermaid merge two entities of one
id. The Mermaid checks here are structural (no Mermaid parser runs in CI): entity ids quoted,
attribute words bare only when no Mermaid version reads them as anything but a word.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from test_erd import MIRRORED, SAMPLE, SMALL

from dal import DataObject, Property, Relation
from dal.tools import erd

#: outside an entity block Mermaid's lexer takes these for keywords, in any case
MERMAID_KEYWORDS = ("Class", "End", "Style", "Subgraph", "Classdef", "One", "Many", "To")


def keyword_hybrid(name: str, **fields: Any) -> type[DataObject]:
    attributes = {"__module__": "erd_keywords", **fields}  # not this module's model (SMALL)
    return type(DataObject)(name, (DataObject,), attributes, hybrid_name=f"erd_kw_{name.lower()}")


KEYWORD_MODEL: list[type[DataObject]] = [keyword_hybrid(name) for name in MERMAID_KEYWORDS[:-2]]
KEYWORD_MODEL.append(keyword_hybrid("Many", _Many__properties=[Property("pk", int), Property("Fk", str),
                                                               Property("uK", str, unique=True)]))
KEYWORD_MODEL.append(keyword_hybrid("To", _To__relations=[Relation("uk", KEYWORD_MODEL[0], "tos"),
                                                          Relation("one", KEYWORD_MODEL[-1], "tos")]))
KEYWORD_MODEL.append(keyword_hybrid("Pk", _Pk__relations=[Relation("end", KEYWORD_MODEL[1], "pks")]))
KEYWORD_MODEL.append(keyword_hybrid("Ukx", _Ukx__relations=[Relation("pk", KEYWORD_MODEL[-1], "ukxs")]))

#: what Mermaid reads in a block as a key mark (its lexer: \b(PK|FK|UK)\b, case-insensitive)
KEY_MARK = r"(?ia)(?:PK|FK|UK)\b"
#: an attribute line: type, name (each bare or in backticks), key marks, the quoted notes
ATTRIBUTE_LINE = r'        (`[^`\n]+`|\S+) (`[^`\n]+`|\S+)( (?:PK|FK|UK)(?:, (?:PK|FK|UK))*)?( "[^"\n]*")?'


def assert_mermaid_escapes_every_name(text: str) -> None:
    """Entity ids quoted everywhere; attribute words bare only when no Mermaid reads them as keywords."""
    inside = False
    for line in text.splitlines()[1:]:
        if line.lstrip().startswith("%%"):
            continue
        if inside:
            if line == "    }":
                inside = False
                continue
            match = re.fullmatch(ATTRIBUTE_LINE, line)
            assert match, f"not an attribute line Mermaid reads: {line!r}"
            for word in match.group(1, 2):
                if not word.startswith("`"):
                    assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_\-\[\]()]*", word), f"{word!r} in {line!r}"
                    assert not re.match(KEY_MARK, word), f"{word!r} reads as a key mark in {line!r}"
        elif line.endswith(" {"):
            assert re.fullmatch(r'    "[^"%\\\n]+" \{', line), f"entity id not quoted: {line!r}"
            inside = True
        else:
            assert re.fullmatch(r'    "[^"%\\\n]+" \S+ "[^"%\\\n]+" : "[^"\n]*"', line), f"link: {line!r}"


def test_mermaid_quotes_ids_and_keyword_names() -> None:
    text = erd.render_mermaid(KEYWORD_MODEL)
    assert_mermaid_escapes_every_name(text)
    lines = text.splitlines()
    for name in MERMAID_KEYWORDS:
        assert f'    "{name}" {{' in lines
    assert '        int `pk` "mandatory"' in lines and '        str `Fk` "mandatory"' in lines
    assert '        str `uK` UK "mandatory"' in lines
    assert '        Class `uk` FK "mandatory"' in lines  # a keyword only as a name, not as a type
    assert '        `Pk` `pk` FK "mandatory"' in lines  # an entity id used as a type is a word too
    assert '        End end FK "mandatory"' in lines  # keywords only outside a block: bare inside
    assert '    "Class" ||--o{ "To" : "uk / tos"' in lines
    assert '    "Class" }o..o{ "Many" : "many-to-many via To"' in lines


@pytest.mark.parametrize("model", [SAMPLE, SMALL, MIRRORED], ids=["sample", "small", "mirrored"])
def test_mermaid_of_every_model_escapes_every_name(model: list[type[DataObject]]) -> None:
    assert_mermaid_escapes_every_name(erd.render_mermaid(model))


def test_clashing_ids_get_a_suffix_in_every_format() -> None:
    # two classes named ErdDup stored as 'erd-dup' and 'erd_dup' both make ErdDup_erd_dup, which is
    # also the name of a third class: Graphviz and Mermaid would draw all three as one box
    first = keyword_hybrid("ErdDup_erd_dup")
    second = type(DataObject)("ErdDup", (DataObject,), {"__module__": "erd_clash"}, hybrid_name="erd-dup")
    third = type(DataObject)("ErdDup", (DataObject,), {
        "__module__": "erd_clash", "_ErdDup__relations": [Relation("twin", second, "twins")]},
        hybrid_name="erd_dup")
    model = [first, second, third]
    entities = {entity.hybrid: entity.id for entity in erd.diagram(model).entities}
    # a class's own name wins over a made-up one; then logical names decide
    assert entities == {"erd_kw_erddup_erd_dup": "ErdDup_erd_dup", "erd-dup": "ErdDup_erd_dup_2",
                        "erd_dup": "ErdDup_erd_dup_3"}
    assert [(link.source, link.target) for link in erd.diagram(model).links] == [
        ("ErdDup_erd_dup_3", "ErdDup_erd_dup_2")]
    for order in (model, model[::-1], [second, first, third]):
        assert erd.render_dot(order) == erd.render_dot(model)
        assert erd.render_mermaid(order) == erd.render_mermaid(model)
    dot = erd.render_dot(model)
    nodes = re.findall(r'^    "([^"]+)" \[label=', dot, flags=re.MULTILINE)
    assert sorted(nodes) == sorted(entities.values())
    mermaid = erd.render_mermaid(model)
    assert re.findall(r'^    "([^"]+)" \{$', mermaid, flags=re.MULTILINE) == sorted(entities.values())
    assert "        ErdDup_erd_dup_2 twin FK \"mandatory\"" in mermaid


def test_mermaid_writes_non_ascii_names_by_their_real_name_in_backticks() -> None:
    # a type (here the target of a relation) and a name alike: `Größe`, not a mangled Gr__e
    size = type(DataObject)("Größe", (DataObject,), {
        "__module__": "erd_unicode", "_Größe__properties": [Property("wert", int)]},
        hybrid_name="erd_groesse")
    measure = type(DataObject)("Messung", (DataObject,), {
        "__module__": "erd_unicode", "_Messung__relations": [Relation("größe", size, "messungen")]},
        hybrid_name="erd_messung")
    text = erd.render_mermaid([size, measure])
    assert_mermaid_escapes_every_name(text)
    lines = text.splitlines()
    assert '        `Größe` `größe` FK "mandatory"' in lines  # no "type Größe" note: the type says it
    assert '    "Größe" {' in lines and '    "Größe" ||--o{ "Messung" : "größe / messungen"' in lines
    assert "Gr__e" not in text
