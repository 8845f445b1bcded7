"""Entity-relationship diagrams of hybrids: Mermaid, Graphviz DOT, and SVG or PNG pictures drawn by Graphviz.

Everything is read from ``Cls._meta``; nothing parses source. ``diagram()`` builds one
neutral description (entities, their attributes, the links between them), and each format
only writes it out, so Mermaid and DOT always show the same model. Output is deterministic:
entities sorted by name, attributes in declaration order, links sorted, no timestamps, no
addresses, and the Graphviz version comment stripped from SVG.

:mod:`~dal.tools.erd.diagram` builds the neutral description, :mod:`~dal.tools.erd.formats`
writes it out.
"""

from dal.tools.erd.diagram import Attribute, Diagram, Entity, Link, diagram, hybrids_in, is_junction, select
from dal.tools.erd.formats import (
    DOT_TIMEOUT,
    FORMATS,
    LEGEND,
    SUFFIXES,
    Format,
    GraphvizNotFoundError,
    format_for,
    render,
    render_dot,
    render_mermaid,
    render_picture,
)

__all__ = ["DOT_TIMEOUT", "FORMATS", "LEGEND", "SUFFIXES", "Attribute", "Diagram", "Entity", "Format",
           "GraphvizNotFoundError", "Link", "diagram", "format_for", "hybrids_in", "is_junction", "render",
           "render_dot", "render_mermaid", "render_picture", "select"]
