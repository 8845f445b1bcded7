"""Hybrids declared by annotation (the typed API), and the same model in the list form.

``TBackendType``/``TBackend`` are annotated ``TypedObject`` hybrids; ``LBackendType``/``LBackend``
declare the same fields in ``__properties``/``__relations``/``__dynamics``. ``tests/test_typed_meta.py``
checks both build the same ``_meta`` and runs mypy on this file (the ``reveal_type`` lines, under
``TYPE_CHECKING``, never run).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from dal import DataObject, Dynamic, Property, Relation, TypedObject


class TBackendType(TypedObject, hybrid_name="tbackendtype"):
    """A kind of backend."""

    name: str = Property(doc="Display name.")
    code: str = Property(unique=True, indexed=True, doc="Short code.")


class TBackend(TypedObject, hybrid_name="tbackend"):
    """A configured storage backend."""

    name: str = Property(unique=True, doc="Name of the Backend.")
    status: Literal["NEW", "RUNNING", "STOPPED"] = Property(default="NEW", indexed=True)
    tags: list[str] = Property(default=[], mandatory=False)
    size: int | None = Property(mandatory=False)
    backend_type: TBackendType | None = Relation(foreign_key="backends")
    parent: TBackend | None = Relation(foreign_key="children", mandatory=False)
    available: bool = Dynamic(timeout=60)

    def _available(self) -> bool:
        return self.status == "RUNNING"


class LBackendType(DataObject, hybrid_name="lbackendtype"):
    """A kind of backend."""

    __properties: list[Property[Any]] = [Property("name", str, doc="Display name."),
                                         Property("code", str, unique=True, indexed=True, doc="Short code.")]


class LBackend(DataObject, hybrid_name="lbackend"):
    """A configured storage backend."""

    __properties: list[Property[Any]] = [
        Property("name", str, unique=True, doc="Name of the Backend."),
        Property("status", ["NEW", "RUNNING", "STOPPED"], default="NEW", indexed=True),
        Property("tags", list[str], default=[], mandatory=False),
        Property("size", int, mandatory=False)]
    __relations = [Relation("backend_type", LBackendType, "backends"),
                   Relation("parent", None, "children", mandatory=False)]
    __dynamics = [Dynamic("available", bool, 60)]

    def _available(self) -> bool:
        return bool(self._data["status"] == "RUNNING")


class MixedBackend(LBackend, hybrid_name="mixedbackend"):
    """A list-form parent extended by annotation: the two forms mix in one hierarchy."""

    region: str = Property(mandatory=False, indexed=True)


if TYPE_CHECKING:
    from typing_extensions import reveal_type

    guid = "0e5c1f6a-1b2c-4a1b-8c9d-0123456789ab"
    reveal_type(TBackend(guid).name)  # expect: builtins.str
    reveal_type(TBackend(guid).backend_type)  # expect: tests.typed_example.TBackendType | None
    reveal_type(TBackend(guid).available)  # expect: builtins.bool
    reveal_type(TBackend.get(guid))  # expect: tests.typed_example.TBackend
    reveal_type(TBackend.get_by(name="x"))  # expect: tests.typed_example.TBackend
    running = TBackend.where(TBackend.status == "RUNNING")
    reveal_type(running.first())  # expect: tests.typed_example.TBackend | None
    TBackend(name="x", status="NEW")
    TBackend(data={"name": "x"})
    TBackend(nmae="x")  # error: Unexpected keyword argument "nmae"
    TBackend(size="big")  # error: Argument "size" to "TBackend" has incompatible type "str"
