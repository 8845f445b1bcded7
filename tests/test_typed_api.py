"""Keyword construction, lookups (get, get_by, first, count, exists) and pydantic models, on store pairs."""

from __future__ import annotations

import uuid
from typing import Any

import pydantic
import pytest
from conftest import round_trips
from typed_example import LBackend, LBackendType, TBackend, TBackendType

from dal import DataList, DataObject
from dal.config import Context
from dal.exceptions import InvalidQueryError, InvalidValueError, ObjectNotFoundError


def test_keywords_build_a_new_object_validated_like_assignments(context: Context) -> None:
    kind = TBackendType(name="ALBA", code="alba")
    backend = TBackend(name="prod-1", status="RUNNING", tags=["gold"], backend_type=kind)
    assert (backend.name, backend.status, backend.tags, backend.backend_type_guid) == \
        ("prod-1", "RUNNING", ["gold"], kind.guid)
    same = TBackend(data={"name": "prod-1", "status": "RUNNING"}, tags=["gold"])  # data= and keywords mix
    assert (same.name, same.status, same.tags) == ("prod-1", "RUNNING", ["gold"])
    with pytest.raises(InvalidValueError, match=r"TBackend\.status must be one of"):
        TBackend(name="x", status="LOST")
    with pytest.raises(InvalidValueError, match="not both"):
        TBackend(str(uuid.uuid4()), name="x")


def test_an_unknown_keyword_names_the_known_fields_and_builds_nothing(
        monkeypatch: pytest.MonkeyPatch) -> None:
    assigned: list[str] = []
    real = DataObject.__setattr__

    def spy(self: DataObject, name: str, value: Any) -> None:
        assigned.append(name)
        real(self, name, value)

    monkeypatch.setattr(DataObject, "__setattr__", spy)
    with pytest.raises(InvalidValueError) as raised:
        LBackend(name="x", nmae="y")
    assert isinstance(raised.value, TypeError)  # as Python's own error for a bad keyword
    assert "no property or relation 'nmae'" in str(raised.value)
    known = "known: backend_type, backend_type_guid, name, parent, parent_guid, size, status, tags"
    assert known in str(raised.value)
    assert assigned == []  # checked before any assignment


@pytest.mark.parametrize("hybrid", [LBackend, TBackend], ids=["list", "annotated"])
def test_get_and_get_by_read_one_unique_key(context: Context, monkeypatch: pytest.MonkeyPatch,
                                            hybrid: type[Any]) -> None:
    kind_cls = LBackendType if hybrid is LBackend else TBackendType
    kind = kind_cls(name="ALBA", code="alba")
    kind.save()
    backend = hybrid(name="prod-1", backend_type=kind)
    backend.save()
    assert hybrid.get(backend.guid) == backend
    context.invalidate(context.keys.cached_doc(hybrid._meta.name, backend.guid))
    calls = round_trips(context, monkeypatch)
    found = hybrid.get_by(name="prod-1")
    assert found == backend and found.name == "prod-1"
    # the unique key, then the document: no scan of any kind
    assert calls["persistent.get"] + calls["persistent.get_many"] <= 3
    assert not (calls["persistent.scan"] or calls["persistent.scan_keys"])
    assert kind_cls.get_by(code="alba") == kind
    with pytest.raises(ObjectNotFoundError, match=r"no .*Backend with name 'prod-2'"):
        hybrid.get_by(name="prod-2")
    with pytest.raises(ObjectNotFoundError):
        hybrid.get(str(uuid.uuid4()))


def test_get_by_refuses_what_is_not_one_unique_property(context: Context) -> None:
    with pytest.raises(InvalidQueryError, match=r"status is not unique.*TBackend.where\(TBackend.status"):
        TBackend.get_by(status="NEW")
    with pytest.raises(InvalidQueryError, match="nothing is not a property"):
        TBackend.get_by(nothing=1)
    with pytest.raises(InvalidQueryError, match="takes one unique property=value, not 2"):
        TBackend.get_by(name="x", status="NEW")
    with pytest.raises(InvalidValueError, match="unset value is not unique"):
        TBackend.get_by(name=None)


def test_first_count_exists(context: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    kind = TBackendType(name="ALBA", code="alba")
    kind.save()
    for number in range(3):
        TBackend(name=f"b{number}", status="RUNNING" if number else "NEW", backend_type=kind).save()
    built: list[int] = []
    real = TBackend._load_many.__func__  # type: ignore[attr-defined]

    def counting(cls: type[TBackend], guids: list[str], *args: Any, **kwargs: Any) -> Any:
        built.append(len(guids))
        return real(cls, guids, *args, **kwargs)

    monkeypatch.setattr(TBackend, "_load_many", classmethod(counting))
    running = TBackend.where(TBackend.status == "RUNNING")
    assert running.count() == 2 and running.exists() and not TBackend.where(TBackend.name == "zz").exists()
    assert built == []  # count() and exists() build no object
    first = running.first()
    assert first is not None and first.status == "RUNNING" and built == [1]
    assert TBackend.where(TBackend.name == "zz").first() is None
    assert DataList(TBackend).count() == 3


def test_pydantic_models(context: Context) -> None:
    model = TBackend.model()
    assert model is TBackend.model() and issubclass(model, pydantic.BaseModel)  # built once per class
    assert list(model.model_fields) == ["guid", "name", "status", "tags", "size", "backend_type_guid",
                                        "parent_guid"]
    schema = model.model_json_schema()
    assert schema["title"] == "TBackend" and set(schema["required"]) == {"guid", "name", "backend_type_guid"}
    assert schema["properties"]["status"]["enum"] == ["NEW", "RUNNING", "STOPPED"]
    kind = TBackendType(name="ALBA", code="alba")
    kind.save()
    backend = TBackend(name="prod-1", backend_type=kind, tags=["a"])
    as_model = backend.to_model()
    assert as_model.model_dump() == {"guid": backend.guid, "name": "prod-1", "status": "NEW", "tags": ["a"],
                                     "size": None, "backend_type_guid": kind.guid, "parent_guid": None}
    new = TBackend.from_model(as_model)  # not stored yet: a new object with that guid
    assert new.guid == backend.guid and new.name == "prod-1" and new.backend_type == kind
    new.save()
    changed = model.model_validate({**as_model.model_dump(), "status": "RUNNING"})
    stored = TBackend.from_model(changed)  # stored: loaded, the model's values assigned
    assert stored.status == "RUNNING" and stored.updated_on_datastore() is False
    stored.save()
    assert TBackend.get(backend.guid).status == "RUNNING"
    with pytest.raises(pydantic.ValidationError):
        model.model_validate({**as_model.model_dump(), "status": "LOST"})
