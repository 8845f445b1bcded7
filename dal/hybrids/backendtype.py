"""``BackendType``: a kind of storage backend (ALBA, Ceph, ...)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dal.objects.dataobject import DataObject
from dal.structures import Property

if TYPE_CHECKING:
    from dal.hybrids.backend import Backend
    from dal.query.datalist import DataList


class BackendType(DataObject):
    """A kind of backend."""

    name: str
    code: str
    has_plugin: bool
    backends: DataList[Backend]
    backends_guids: list[str]

    __properties: list[Property[Any]] = [Property("name", str, doc="Display name."),
                    Property("code", str, unique=True, indexed=True, doc="Short code."),
                    Property("has_plugin", bool, default=False, doc="Whether a plugin hybrid details it.")]
    __relations: list[object] = []
    __dynamics: list[object] = []
