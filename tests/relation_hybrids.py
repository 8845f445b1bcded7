"""Hybrids for the relation tests, importable by spawned worker processes."""

from __future__ import annotations

from typing import Any

from dal import DataObject, Property, Relation


class Pet(DataObject):
    """Declared before its owner's class: a string forward reference."""

    __properties: list[Property[Any]] = [Property("name", str)]
    __relations = [Relation("owner", "Owner", "pets", mandatory=False)]


class Owner(DataObject):
    """Owns pets; has an optional one-to-one passport."""

    __properties: list[Property[Any]] = [Property("name", str)]


class Passport(DataObject):
    """At most one per owner (one-to-one)."""

    __properties: list[Property[Any]] = [Property("number", str)]
    __relations = [Relation("holder", Owner, "passport", onetoone=True, mandatory=False)]


class Folder(DataObject):
    """A tree: a folder's parent is a folder (a self relation)."""

    __properties: list[Property[Any]] = [Property("name", str)]
    __relations = [Relation("parent", None, "subfolders", mandatory=False)]


class Shelf(DataObject):
    """Holds books; a book cannot exist without its shelf."""

    __properties: list[Property[Any]] = [Property("label", str)]


class Book(DataObject):
    """On a shelf (mandatory), maybe lent to an owner (optional)."""

    __properties: list[Property[Any]] = [Property("title", str)]
    __relations = [Relation("shelf", Shelf, "books"),
                   Relation("borrower", Owner, "borrowed", mandatory=False)]


class Team(DataObject):
    """One side of a many-to-many."""

    __properties: list[Property[Any]] = [Property("name", str)]


class Player(DataObject):
    """The other side of a many-to-many."""

    __properties: list[Property[Any]] = [Property("name", str)]


class Membership(DataObject):
    """The junction of Team and Player, with a property of its own."""

    __properties: list[Property[Any]] = [Property("captain", bool, default=False)]
    __relations = [Relation("team", Team, "memberships"),
                   Relation("player", Player, "memberships")]


class Cabinet(DataObject):
    """The target of relations a subclass hybrid inherits."""

    __properties: list[Property[Any]] = [Property("name", str)]


class Device(DataObject):
    """Declares relations that its subclass hybrid BladeServer inherits (and stores under its own name)."""

    __properties: list[Property[Any]] = [Property("name", str)]
    __relations = [Relation("site", Cabinet, "occupants"),
                   Relation("cabinet", Cabinet, "devices", mandatory=False),
                   Relation("keeper", Owner, "device", onetoone=True, mandatory=False)]


class BladeServer(Device):
    """Another hybrid (stored as ``bladeserver``) holding Device's relations too."""

    __properties: list[Property[Any]] = [Property("cores", int, default=1)]
