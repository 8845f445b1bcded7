"""Hybrids for tests/test_abandon_races.py, importable by the process that writes concurrently."""

from __future__ import annotations

from typing import Any

from dal import DataObject, Property, Relation


class Stage(DataObject):
    """The target of two relations of one hybrid."""

    __properties: list[Property[Any]] = [Property("name", str)]


class Show(DataObject):
    """Points at a stage twice: a concurrent writer may move one relation and leave the other."""

    __properties: list[Property[Any]] = [Property("name", str)]
    __relations = [Relation("main", Stage, "mains", mandatory=False),
                   Relation("backup", Stage, "backups", mandatory=False)]
