"""Entity-relationship diagrams of hybrids: Mermaid, Graphviz DOT, and SVG or PNG pictures drawn by Graphviz.

Everything is read from ``Cls._meta``; nothing parses source. ``diagram()`` builds one
neutral description (entities, their attributes, the links between them), and each format
only writes it out, so Mermaid and DOT always show the same model. Output is deterministic:
entities sorted by name, attributes in declaration order, links sorted, no timestamps, no
addresses, and the Graphviz version comment stripped from SVG.
"""

from __future__ import annotations

import html
import importlib
import itertools
import re
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from dal.exceptions import ConfigurationError, DalError
from dal.model.meta import hybrids as registry

if TYPE_CHECKING:
    from dal.objects.dataobject import DataObject

Format = Literal["mermaid", "dot", "svg", "png"]
FORMATS: tuple[Format, ...] = ("mermaid", "dot", "svg", "png")
#: file suffix -> format, for inferring the format from an output file name
SUFFIXES: dict[str, Format] = {".mmd": "mermaid", ".mermaid": "mermaid", ".dot": "dot", ".gv": "dot",
                               ".svg": "svg", ".png": "png"}
#: seconds Graphviz may take to lay out a diagram
DOT_TIMEOUT = 120.0


class GraphvizNotFoundError(DalError):
    """Graphviz's ``dot`` program, which draws SVG and PNG pictures, is not installed."""


@dataclass(frozen=True)
class Attribute:
    """One row of an entity: its guid, a property, a relation (its stored guid) or a dynamic."""

    kind: Literal["guid", "property", "relation", "dynamic"]
    name: str
    type: str
    mandatory: bool = False
    unique: bool = False
    indexed: bool = False
    default: str | None = None  # repr() of the default; None when there is none
    values: tuple[str, ...] = ()  # an enum's allowed values, as repr()
    timeout: float | None = None  # a dynamic's TTL in seconds
    locked: bool = False

    @property
    def keys(self) -> tuple[str, ...]:
        """Return the key marks: PK (the guid), FK (a relation), UK (unique)."""
        marks = {"guid": ("PK",), "relation": ("FK",)}.get(self.kind, ())
        return marks + (("UK",) if self.unique else ())

    def notes(self) -> list[str]:
        """Return what the key marks and the type do not say, in words."""
        if self.kind == "guid":
            return []
        if self.kind == "dynamic":
            ttl = "never cached" if not self.timeout else f"ttl {_number(self.timeout)}s"
            return ["dynamic", ttl] + (["locked"] if self.locked else [])
        notes = ["mandatory" if self.mandatory else "optional"]
        if self.indexed:
            notes.append("indexed")
        if self.values:
            notes.append("one of " + ", ".join(self.values))
        if self.default is not None:
            notes.append(f"default {self.default}")
        return notes


@dataclass(frozen=True)
class Entity:
    """A hybrid as drawn. ``external``: not selected, drawn only because a selected relation points at it."""

    id: str
    hybrid: str
    attributes: tuple[Attribute, ...] = ()
    junction: bool = False
    external: bool = False


@dataclass(frozen=True)
class Link:
    """A relation ``source.name`` -> ``target`` + reverse accessor, or a many-to-many via a junction."""

    kind: Literal["many-to-one", "one-to-one", "many-to-many"]
    source: str
    target: str
    name: str  # the relation's name, or the junction's id for a many-to-many
    reverse: str | None = None
    mandatory: bool = False

    @property
    def label(self) -> str:
        if self.kind == "many-to-many":
            return f"many-to-many via {self.name}"
        return self.name if self.reverse is None else f"{self.name} / {self.reverse}"


@dataclass(frozen=True)
class Diagram:
    entities: tuple[Entity, ...]
    links: tuple[Link, ...]


# --- choosing hybrids ----------------------------------------------------------------------


def hybrids_in(modules: Iterable[str]) -> list[type[DataObject]]:
    """Return the registered hybrids declared in these modules or their submodules, or in their ``__all__``.

    The modules are imported. The registry is process-wide, so this is how a caller draws
    one model and not every hybrid some other import happened to register; a hybrid a module
    merely imports is not its own unless its ``__all__`` re-exports it.
    """
    names = [name.strip() for name in modules if name.strip()]
    exported: set[object] = set()
    for name in names:
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            raise DalError(f"cannot import hybrids module {name!r}: {exc}; check its name") from exc
        exported.update(getattr(module, item, None) for item in getattr(module, "__all__", ()))
    return [cls for cls in registry.all()
            if cls in exported or any(cls.__module__ == n or cls.__module__.startswith(f"{n}.")
                                      for n in names)]


def select(hybrids: Iterable[type[DataObject]], only: Iterable[str]) -> list[type[DataObject]]:
    """Return the hybrids named in ``only`` (class or logical names); raise DalError naming unknown ones."""
    candidates = list(hybrids)
    by_name = {cls.__name__: cls for cls in candidates} | {cls._meta.name: cls for cls in candidates}
    wanted = [name.strip() for name in only if name.strip()]
    unknown = [name for name in wanted if name not in by_name]
    if unknown:
        raise DalError(f"no hybrid named {', '.join(unknown)} among those drawn; known: "
                       f"{', '.join(sorted(cls.__name__ for cls in candidates)) or 'none'}")
    chosen = {by_name[name] for name in wanted}
    return [cls for cls in candidates if cls in chosen]


# --- the neutral description ---------------------------------------------------------------


def diagram(hybrids: Iterable[type[DataObject]] | None = None) -> Diagram:
    """Describe ``hybrids`` (default: every registered hybrid) as entities and links."""
    chosen = sorted(set(registry.all() if hybrids is None else hybrids), key=lambda cls: cls._meta.name)
    if not chosen:
        raise DalError("no hybrids to draw; import the modules that declare them (dal erd --hybrids MODULE)")
    for cls in chosen:
        for relation in cls._meta.relations.values():
            if relation.target is None:
                raise ConfigurationError(
                    f"{relation.qualified} points at hybrid {relation.foreign_type!r}, which is not "
                    "declared; import the module that declares it (dal erd --hybrids MODULE[,MODULE])")
    targets = {r.target for cls in chosen for r in cls._meta.relations.values()}
    drawn = chosen + sorted((t for t in targets if t is not None and t not in chosen),
                            key=lambda cls: cls._meta.name)
    ids = _ids(drawn)
    entities = [_entity(cls, ids, external=cls not in chosen) for cls in drawn]
    links = [link for cls in chosen for link in _links(cls, ids)]
    for entity, cls in zip(entities, drawn, strict=True):
        if entity.junction:
            links.extend(_many_to_many(cls, ids))
    return Diagram(tuple(sorted(entities, key=lambda e: e.id)),
                   tuple(sorted(links, key=lambda link: (link.kind == "many-to-many", link.source,
                                                         link.name, link.target))))


def is_junction(cls: type[DataObject]) -> bool:
    """Return whether ``cls`` joins other hybrids many-to-many.

    A junction has two or more mandatory many-to-one relations to other hybrids: it cannot
    exist without both ends. Optional and self relations do not count, so a Disk that
    belongs to a node and maybe to a pool and maybe to a parent disk is no junction.
    """
    return len(_joined(cls)) >= 2


def _joined(cls: type[DataObject]) -> list[type[DataObject]]:
    """Return the targets of the relations that make ``cls`` a junction, if it has two or more."""
    return [r.target for r in cls._meta.relations.values()
            if r.target is not None and r.mandatory and not r.onetoone and r.target is not cls]


def _ids(drawn: Sequence[type[DataObject]]) -> dict[type[DataObject], str]:
    """Name each entity by its class; classes sharing a name are told apart by their logical names."""
    count: dict[str, int] = {}
    for cls in drawn:
        count[cls.__name__] = count.get(cls.__name__, 0) + 1
    return {cls: cls.__name__ if count[cls.__name__] == 1
            else f"{cls.__name__}_{re.sub(r'[^A-Za-z0-9_]', '_', cls._meta.name)}" for cls in drawn}


def _entity(cls: type[DataObject], ids: dict[type[DataObject], str], *, external: bool) -> Entity:
    meta = cls._meta
    if external:
        return Entity(ids[cls], meta.name, external=True)
    rows = [Attribute("guid", "guid", "str", mandatory=True)]
    for prop in meta.properties.values():
        enum = isinstance(prop.property_type, (list, tuple))
        rows.append(Attribute(
            "property", prop.name, _type_label(prop.property_type), mandatory=prop.mandatory,
            unique=prop.unique, indexed=prop.indexed,
            default=None if prop.default is None else repr(prop.default),
            values=tuple(repr(value) for value in prop.property_type) if enum else ()))
    for relation in meta.relations.values():
        assert relation.target is not None
        rows.append(Attribute("relation", relation.name, ids[relation.target], mandatory=relation.mandatory))
    for dynamic in meta.dynamics.values():
        rows.append(Attribute("dynamic", dynamic.name, _type_label(dynamic.return_type),
                              timeout=dynamic.timeout, locked=dynamic.locked))
    return Entity(ids[cls], meta.name, tuple(rows), junction=is_junction(cls))


def _links(cls: type[DataObject], ids: dict[type[DataObject], str]) -> list[Link]:
    links = []
    for relation in cls._meta.relations.values():
        target = relation.target
        assert target is not None
        reverse = target._meta.reverse.get(relation.foreign_key)
        # an inherited relation leaves the reverse accessor with the class that declared it
        accessor = relation.foreign_key if reverse is not None and reverse.source is cls else None
        links.append(Link("one-to-one" if relation.onetoone else "many-to-one", ids[cls], ids[target],
                          relation.name, accessor, relation.mandatory))
    return links


def _many_to_many(junction: type[DataObject], ids: dict[type[DataObject], str]) -> list[Link]:
    ends = sorted(ids[target] for target in _joined(junction))
    return [Link("many-to-many", a, b, ids[junction]) for a, b in itertools.combinations(ends, 2)]


def _type_label(declared: Any) -> str:
    if isinstance(declared, (list, tuple)):
        return "enum"
    if isinstance(declared, type) and getattr(declared, "__origin__", None) is None:
        return declared.__name__
    return re.sub(r"\b(typing|datetime|decimal|uuid|pathlib)\.", "", repr(declared))


def _number(seconds: float) -> str:
    return str(int(seconds)) if float(seconds).is_integer() else str(seconds)


# --- Mermaid -------------------------------------------------------------------------------

#: (mandatory, one-to-one) -> the target's end, the line, the source's end
_MERMAID_ENDS = {(True, False): ("||", "o{"), (False, False): ("|o", "o{"),
                 (True, True): ("||", "o|"), (False, True): ("|o", "o|")}


def render_mermaid(hybrids: Iterable[type[DataObject]] | None = None) -> str:
    """Return a Mermaid ``erDiagram`` of ``hybrids`` (default: every registered hybrid)."""
    model = diagram(hybrids)
    lines = ["erDiagram",
             "    %% generated by `dal erd`; each line reads: relation / reverse accessor",
             "    %% PK guid, FK relation, UK unique; the quoted notes say the rest"]
    for entity in model.entities:
        if entity.external:
            lines.append(f"    %% {entity.id}: not selected, drawn only as a target")
            continue
        if entity.junction:
            lines.append(f"    %% {entity.id}: a many-to-many junction")
        if entity.hybrid != entity.id.lower():
            lines.append(f"    %% {entity.id}: stored as {entity.hybrid!r}")
        lines.append(f"    {entity.id} {{")
        for row in entity.attributes:
            word = _mermaid_word(row.type)
            notes = row.notes() if word == row.type else [f"type {row.type}", *row.notes()]
            keys = f" {', '.join(row.keys)}" if row.keys else ""
            comment = ' "' + "; ".join(notes).replace('"', "'") + '"' if notes else ""
            lines.append(f"        {word} {row.name}{keys}{comment}")
        lines.append("    }")
    for link in model.links:
        if link.kind == "many-to-many":
            lines.append(f'    {link.source} }}o..o{{ {link.target} : "{link.label}"')
            continue
        left, right = _MERMAID_ENDS[link.mandatory, link.kind == "one-to-one"]
        lines.append(f'    {link.target} {left}--{right} {link.source} : "{link.label}"')
    return "\n".join(lines) + "\n"


def _mermaid_word(label: str) -> str:
    """Return ``label`` as a Mermaid attribute type: letters, digits, ``_-[]()`` only."""
    word = re.sub(r"\s*\|\s*", "-or-", label)
    word = re.sub(r",\s*", "-", word)
    return re.sub(r"[^A-Za-z0-9_\-\[\]()]", "_", word)


# --- Graphviz DOT --------------------------------------------------------------------------

_HEADER = {"plain": "#cfe2f3", "junction": "#fce5cd", "external": "#eeeeee"}
#: (mandatory, one-to-one) -> arrow at the target, arrow at the source (crow's foot notation)
_DOT_ENDS = {(True, False): ("teetee", "crowodot"), (False, False): ("teeodot", "crowodot"),
             (True, True): ("teetee", "teeodot"), (False, True): ("teeodot", "teeodot")}
LEGEND = ("PK guid · FK relation · UK unique · IX indexed · NN mandatory · "
          "dynamics in italics with their cache TTL (locked: one computation at a time)")


def render_dot(hybrids: Iterable[type[DataObject]] | None = None) -> str:
    """Return a Graphviz DOT digraph of ``hybrids`` (default: every registered hybrid)."""
    model = diagram(hybrids)
    lines = ["digraph erd {",
             "    // generated by `dal erd`",
             '    graph [rankdir=LR, nodesep=0.5, ranksep=1.0, fontname="Helvetica", fontsize=10, '
             f'labelloc=b, label="{LEGEND}"];',
             '    node [shape=plain, fontname="Helvetica", fontsize=10];',
             '    edge [fontname="Helvetica", fontsize=9, color="#555555", dir=both];']
    for entity in model.entities:
        lines.append(f'    "{entity.id}" [label=<{_dot_table(entity)}>];')
    for link in model.links:
        label = _dot_string(link.label)
        if link.kind == "many-to-many":
            lines.append(f'    "{link.source}" -> "{link.target}" [label="{label}", style=dashed, '
                         'arrowhead=crowodot, arrowtail=crowodot, constraint=false];')
            continue
        head, tail = _DOT_ENDS[link.mandatory, link.kind == "one-to-one"]
        lines.append(f'    "{link.source}" -> "{link.target}" [label="{label}", arrowhead={head}, '
                     f"arrowtail={tail}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _dot_table(entity: Entity) -> str:
    kind = "external" if entity.external else "junction" if entity.junction else "plain"
    title = f"<B>{_html(entity.id)}</B>"
    if entity.junction:
        title += "<BR/><I>many-to-many junction</I>"
    if entity.external:
        title += "<BR/><I>not selected</I>"
    if entity.hybrid != entity.id.lower():
        title += f'<BR/><FONT POINT-SIZE="8">stored as {_html(repr(entity.hybrid))}</FONT>'
    cells = ['<TABLE BORDER="1" CELLBORDER="0" CELLSPACING="0" CELLPADDING="3">',
             f'<TR><TD COLSPAN="4" BGCOLOR="{_HEADER[kind]}">{title}</TD></TR>']
    previous = None
    for row in entity.attributes:
        if previous is not None and row.kind != previous and "dynamic" in (row.kind, previous):
            cells.append("<HR/>")
        previous = row.kind
        cells.append(_dot_row(row))
    cells.append("</TABLE>")
    return "".join(cells)


def _dot_row(row: Attribute) -> str:
    name, kind = _html(row.name), _html(row.type)
    if row.values:
        chunks = [" | ".join(row.values[i:i + 3]) for i in range(0, len(row.values), 3)]
        kind = "<BR/>".join(_html(chunk) for chunk in chunks)
    if row.kind == "relation":
        kind = f"→ {kind}"
    if row.kind == "dynamic":
        marks = ", ".join(row.notes()[1:])
        return (f'<TR><TD ALIGN="LEFT"><I>{name}</I></TD><TD ALIGN="LEFT"><I>{kind}</I></TD>'
                f'<TD ALIGN="LEFT" COLSPAN="2"><I>{_html(marks)}</I></TD></TR>')
    keys = [*row.keys, *(["IX"] if row.indexed else []),
            *(["NN"] if row.mandatory and row.kind != "guid" else [])]
    default = "" if row.default is None else f"= {_html(row.default)}"
    return (f'<TR><TD ALIGN="LEFT">{name}</TD><TD ALIGN="LEFT" BALIGN="LEFT">{kind}</TD>'
            f'<TD ALIGN="LEFT">{" ".join(keys)}</TD><TD ALIGN="LEFT">{default}</TD></TR>')


def _html(text: str) -> str:
    return html.escape(text, quote=False)


def _dot_string(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


# --- pictures --------------------------------------------------------------------------------


def render_picture(hybrids: Iterable[type[DataObject]] | None = None, fmt: Format = "svg", *,
                   program: str = "dot") -> bytes:
    """Return an SVG or PNG picture of ``hybrids``, drawn by Graphviz's ``program`` (default ``dot``)."""
    if fmt not in ("svg", "png"):
        raise DalError(f"a picture is svg or png, not {fmt!r}")
    source = render_dot(hybrids)
    binary = shutil.which(program)
    if binary is None:
        raise GraphvizNotFoundError(
            f"Graphviz's {program!r} program is not on PATH, and --format {fmt} needs it to draw; install "
            "Graphviz (Debian/Ubuntu: `apt-get install graphviz`, macOS: `brew install graphviz`), or write "
            "text with --format mermaid or --format dot")
    try:
        done = subprocess.run([binary, f"-T{fmt}"], input=source.encode(), capture_output=True,
                              timeout=DOT_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DalError(f"Graphviz ({binary}) failed to draw the diagram: {exc}") from exc
    if done.returncode != 0:
        raise DalError(f"Graphviz ({binary}) failed to draw the diagram (exit {done.returncode}): "
                       f"{done.stderr.decode(errors='replace').strip()}")
    return _steady_svg(done.stdout) if fmt == "svg" else done.stdout


def _steady_svg(svg: bytes) -> bytes:
    """Drop the comment naming Graphviz's version: the same model gives the same file on any machine."""
    return re.sub(rb"<!-- Generated by graphviz[^>]*-->\n", b"", svg)


def render(hybrids: Iterable[type[DataObject]] | None = None, fmt: Format = "mermaid", *,
           program: str = "dot") -> str | bytes:
    """Return a diagram of ``hybrids`` in ``fmt``: text (str) for mermaid and dot, bytes for svg and png."""
    if fmt == "mermaid":
        return render_mermaid(hybrids)
    if fmt == "dot":
        return render_dot(hybrids)
    if fmt in ("svg", "png"):
        return render_picture(hybrids, fmt, program=program)
    raise DalError(f"unknown ERD format {fmt!r}; use one of {', '.join(FORMATS)}")


def format_for(path: str) -> Format:
    """Return the format a file name's suffix implies; raise DalError when it implies none."""
    suffix = Path(path).suffix.lower()
    if suffix not in SUFFIXES:
        raise DalError(f"cannot tell the format of {path!r} from its suffix; name one with --format "
                       f"({', '.join(FORMATS)}) or use a suffix among {', '.join(SUFFIXES)}")
    return SUFFIXES[suffix]
