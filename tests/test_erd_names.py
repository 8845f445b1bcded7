"""Names the ERD formats could misread: Mermaid keywords, and diagram ids that clash.

Mermaid's lexer takes ``Class``, ``End``, ``One``... for keywords outside an entity block and
``PK``, ``FK``, ``UK`` for key marks inside one; Graphviz and Mermaid merge two entities of one
id. No Mermaid runs in CI: entity blocks are read by :func:`mermaid_block`, the block rules of
Mermaid's own lexer (erDiagram.jison of 10.9.0 and of 11.14) copied as they are; the lines
outside blocks are checked structurally (entity ids quoted).
"""

from __future__ import annotations

import ast
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

#: the rules of Mermaid's erDiagram.jison lexer inside an entity block, in order, as released in
#: 10.9.0 and in 11.14 (11.5 added the letters from U+00C0 on), with the token each returns (None:
#: skipped, "char": the character itself); jison tries them in order at the start of the input
#: left (``%options case-insensitive``) and the first that matches wins
_BLOCK_END = [(r'\"[^"]*\"', "COMMENT"), (r"[\n]+", None), (r"\}", "}"), (r".", "char")]
MERMAID_BLOCK_RULES: dict[str, list[tuple[str, str | None]]] = {
    "10.9": [(r",", ","), (r"\s+", None), (r"\b((?:PK)|(?:FK)|(?:UK))\b", "KEY"),
             (r"(.*?)[~](.*?)*[~]", "WORD"), (r"[\*A-Za-z_][A-Za-z0-9\-_\[\]\(\)]*", "WORD"), *_BLOCK_END],
    "11.14": [(r"\s+", None), (r"\b((?:PK)|(?:FK)|(?:UK))\b", "KEY"), (r"([^\s]*)[~].*[~]([^\s]*)", "WORD"),
              ("([\\*A-Za-z_\u00c0-\uffff][A-Za-z0-9\\-\\_\\[\\]\\(\\)\u00c0-\uffff\\*]*)", "WORD"),
              *_BLOCK_END]}


def mermaid_block(body: str, version: str) -> list[tuple[str, str, list[str], str | None]]:
    """Read an entity block as Mermaid ``version`` does: (type, name, key marks, comment) per attribute.

    The grammar: ``attribute: WORD WORD [KEY (',' KEY)*] [COMMENT]``, repeated up to ``}``.
    """
    rules = [(re.compile(rule, re.IGNORECASE | re.ASCII), token)
             for rule, token in MERMAID_BLOCK_RULES[version]]
    tokens: list[tuple[str, str]] = []
    rest = body + "\n}"
    while tokens[-1:] != [("}", "}")]:
        found, token = next((found, token) for rule, token in rules if (found := rule.match(rest)))
        if token is not None:
            tokens.append((found.group() if token == "char" else token, found.group()))
        rest = rest[found.end():]
    attributes = []
    while tokens[0][0] != "}":
        assert [kind for kind, _ in tokens[:2]] == ["WORD", "WORD"], (
            f"Mermaid {version} expects a type and a name, got {tokens[:2]}")
        (_, kind), (_, name), keys, comment = tokens.pop(0), tokens.pop(0), [], None
        while tokens[0][0] == "KEY":
            keys.append(tokens.pop(0)[1])
            if tokens[0][0] != "," or tokens[1][0] != "KEY":
                break
            tokens.pop(0)
        if tokens[0][0] == "COMMENT":
            comment = tokens.pop(0)[1][1:-1]
        attributes.append((kind, name, keys, comment))
    return attributes


def mermaid_blocks(text: str, version: str) -> dict[str, list[tuple[str, str, list[str], str | None]]]:
    """Read every entity block of a Mermaid ``erDiagram`` as Mermaid ``version`` does, by entity id."""
    blocks = re.findall(r'^    "([^"]+)" \{\n(.*?)\n    \}$', text, re.MULTILINE | re.DOTALL)
    return {entity: mermaid_block(body, version) for entity, body in blocks}


def assert_mermaid_escapes_every_name(text: str) -> None:
    """Every Mermaid from 10.9 on reads each attribute line as written; entity ids quoted everywhere."""
    for version in MERMAID_BLOCK_RULES:
        rows = sum(len(block) for block in mermaid_blocks(text, version).values())
        assert rows == len(re.findall(r"^        \S", text, re.MULTILINE))
    inside = False
    for line in text.splitlines()[1:]:
        if line.lstrip().startswith("%%") or (inside and line.startswith("        ")):
            continue
        if inside:
            assert line == "    }", f"not an attribute line: {line!r}"
            inside = False
        elif line.endswith(" {"):
            assert re.fullmatch(r'    "[^"%\\\n]+" \{', line), f"entity id not quoted: {line!r}"
            inside = True
        else:
            assert re.fullmatch(r'    "[^"%\\\n]+" \S+ "[^"%\\\n]+" : "[^"\n]*"', line), f"link: {line!r}"


def test_the_copied_mermaid_lexer_refuses_what_released_mermaid_refuses() -> None:
    # checked against the parsers jison 0.4.18 builds from Mermaid's own erDiagram.jison (10.9.0, 11.14)
    for version in MERMAID_BLOCK_RULES:
        assert mermaid_block('        str guid PK\n        int n "x"', version) == [
            ("str", "guid", ["PK"], None), ("int", "n", [], "x")]
        assert mermaid_block("        str name PK, UK", version) == [("str", "name", ["PK", "UK"], None)]
        for refused in ("str `pk`", "str pk", "pk-or-str name", 'str name "a~b~"', 'str name "a"b"'):
            with pytest.raises(AssertionError, match=f"Mermaid {re.escape(version)} expects"):
                mermaid_block(f"        {refused}", version)
    with pytest.raises(AssertionError, match=r"Mermaid 10\.9 expects"):
        mermaid_block("        int Größe", "10.9")
    assert mermaid_block("        int Größe", "11.14") == [("int", "Größe", [], None)]


def test_mermaid_quotes_ids_and_keyword_names() -> None:
    text = erd.render_mermaid(KEYWORD_MODEL)
    assert_mermaid_escapes_every_name(text)
    lines = text.splitlines()
    for name in MERMAID_KEYWORDS:
        assert f'    "{name}" {{' in lines
    # a key mark as a name or type gets an _, and the note gives the real one
    assert '        int pk_ "name pk; mandatory"' in lines and '        str Fk_ "name Fk; mandatory"' in lines
    assert '        str uK_ UK "name uK; mandatory"' in lines
    assert '        Class uk_ FK "name uk; mandatory"' in lines  # a keyword only as a name, not as a type
    assert '        Pk_ pk_ FK "type Pk; name pk; mandatory"' in lines  # an entity id used as a type too
    assert '        End end FK "mandatory"' in lines  # keywords only outside a block: bare inside
    assert '    "Class" ||--o{ "To" : "uk / tos"' in lines
    assert '    "Class" }o..o{ "Many" : "many-to-many via To"' in lines
    assert "`" not in text.replace("`dal erd`", "")  # no released Mermaid reads backticks in a block
    blocks = mermaid_blocks(text, "10.9")
    assert ("int", "pk_", [], "name pk; mandatory") in blocks["Many"]


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


def test_mermaid_writes_non_ascii_names_in_ascii_with_the_real_name_in_the_note() -> None:
    # Mermaid before 11.5 reads no letter beyond ASCII in a block: accents dropped, other letters _,
    # the real name in the note (which any Mermaid reads); quoted entity ids keep any letter
    size = type(DataObject)("Größe", (DataObject,), {
        "__module__": "erd_unicode", "_Größe__properties": [Property("wert", int), Property("名前", str)]},
        hybrid_name="erd_groesse")
    measure = type(DataObject)("Messung", (DataObject,), {
        "__module__": "erd_unicode", "_Messung__relations": [Relation("größe", size, "messungen")]},
        hybrid_name="erd_messung")
    text = erd.render_mermaid([size, measure])
    assert_mermaid_escapes_every_name(text)
    lines = text.splitlines()
    assert '        Gro_e gro_e FK "type Größe; name größe; mandatory"' in lines
    assert '        str __ "name 名前; mandatory"' in lines
    assert '    "Größe" {' in lines and '    "Größe" ||--o{ "Messung" : "größe / messungen"' in lines
    assert "`" not in text.replace("`dal erd`", "")


def test_mermaid_notes_show_quotes_and_tildes_in_values_unambiguously() -> None:
    # a note ends at the next ", and Mermaid reads from a pair of ~ on as a generic type: the notes
    # write string literals between single quotes, " as \x22 and ~ as \x7e, as Python would
    quoted = type(DataObject)("Quoted", (DataObject,), {"__module__": "erd_quotes", "_Quoted__properties": [
        Property("greeting", str, default='say "hi"'), Property("owner", str, default="it's"),
        Property("both", str, default="""it's "x\\y" """), Property("home", str, default="~a~")]},
        hybrid_name="erd_quoted")
    text = erd.render_mermaid([quoted])
    assert_mermaid_escapes_every_name(text)
    for version in MERMAID_BLOCK_RULES:
        notes = [comment for _, _, _, comment in mermaid_blocks(text, version)["Quoted"]]
        assert notes == [None, r"mandatory; default 'say \x22hi\x22'", r"mandatory; default 'it\'s'",
                         r"mandatory; default 'it\'s \x22x\\y\x22 '", r"mandatory; default '\x7ea\x7e'"]
    values = [ast.literal_eval(note.split("default ", 1)[1]) for note in notes if note]
    assert values == ['say "hi"', "it's", """it's "x\\y" """, "~a~"]  # each is the exact value
