"""``BackendStorageRouter``: which nodes serve which backend, a many-to-many junction."""

from __future__ import annotations

from typing import Any

from dal.hybrids.backend import Backend
from dal.hybrids.storagerouter import StorageRouter
from dal.objects.dataobject import DataObject
from dal.structures import Property, Relation


class BackendStorageRouter(DataObject):
    """A node serving a backend; one of a backend's nodes is its master."""

    is_master: bool
    backend: Backend | None
    storagerouter: StorageRouter | None

    __properties: list[Property[Any]] = [
        Property("is_master", bool, default=False, doc="Whether this node coordinates the backend."),
    ]
    __relations = [Relation("backend", Backend, "storagerouters", doc="The backend served."),
                   Relation("storagerouter", StorageRouter, "backends", doc="The node serving it.")]
