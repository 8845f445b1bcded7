"""``to_model()`` hands out a copy that holds only what ``save()`` would store, for any property name.

- The model shares nothing with the object: editing a nested model, a list of models, a dict or an
  ``Any`` value of the model leaves the object, and what its next ``save()`` writes, unchanged.
- A value changed in place that ``save()`` refuses (NaN in a list, a set where a list is declared,
  a nested model holding the wrong type) is refused by ``to_model()`` too, with the same typed
  ``InvalidValueError`` naming the field, instead of a JSON that silently alters it.
- A property named like one of pydantic's own ``model_*`` members (``model_config``, ``model_dump``)
  is the model's field ``<name>_`` under the alias ``<name>``: validated and dumped by its stored
  name, so ``to_model()``/``from_model()`` round-trip; other names pydantic only warns about
  (``json``, ``copy``, ``schema``) stay plain fields and print no warning.
"""

from __future__ import annotations

import warnings
from typing import Any

import pydantic
import pytest

from dal import Property, TypedObject
from dal.config import Context
from dal.exceptions import InvalidValueError


class Settings(pydantic.BaseModel):
    size: str = "small"


class Shared(TypedObject, hybrid_name="tmcshared"):
    name: str = Property()
    settings: Settings = Property(mandatory=False)
    history: list[Settings] = Property(default=[], mandatory=False)
    bag: dict = Property(default={}, mandatory=False)  # type: ignore[type-arg]
    rows: list = Property(default=[], mandatory=False)  # type: ignore[type-arg]
    anything: Any = Property(mandatory=False)


def _shared() -> Shared:
    obj = Shared(name="s", settings=Settings(), history=[Settings()], bag={"limits": [1]},
                 rows=[[1, 2]], anything={"deep": [1]})
    obj.save()
    return obj


def test_editing_the_model_leaves_the_object_and_its_next_save_unchanged(local: Context) -> None:
    obj = _shared()
    model: Any = obj.to_model()
    model.settings.size = "EDITED"
    model.history[0].size = "EDITED"
    model.bag["limits"].append(99)
    model.rows[0].append(99)
    model.anything["deep"].append(99)
    assert obj.settings == Settings() and obj.history == [Settings()]
    assert obj.bag == {"limits": [1]} and obj.rows == [[1, 2]] and obj.anything == {"deep": [1]}
    obj.save()
    fresh = Shared.get(obj.guid)
    assert fresh.settings == Settings() and fresh.history == [Settings()]
    assert fresh.bag == {"limits": [1]} and fresh.rows == [[1, 2]] and fresh.anything == {"deep": [1]}


@pytest.mark.parametrize("loaded", [True, False], ids=["loaded", "new"])
def test_editing_the_object_leaves_a_model_already_made_unchanged(local: Context, loaded: bool) -> None:
    obj = Shared.get(_shared().guid) if loaded else Shared(name="s", settings=Settings(), bag={"limits": [1]})
    model: Any = obj.to_model()
    obj.settings.size = "later"
    obj.bag["limits"].append(2)
    assert model.settings.size == "small" and model.bag == {"limits": [1]}


class Scored(TypedObject, hybrid_name="tmcscored"):
    name: str = Property()
    scores: list[float] = Property(default=[], mandatory=False)
    raw: list = Property(default=[], mandatory=False)  # type: ignore[type-arg]
    extra: dict = Property(default={}, mandatory=False)  # type: ignore[type-arg]
    settings: Settings = Property(mandatory=False)


@pytest.mark.parametrize(("field", "change"), [
    ("scores", lambda obj: obj.scores.append(float("nan"))),
    ("raw", lambda obj: obj.raw.append({1, 2})),
    ("raw", lambda obj: obj.raw.append(float("inf"))),
    ("extra", lambda obj: obj.extra.update({"x": [float("nan")]})),
    ("extra", lambda obj: obj.extra.update({1: "int key"})),
    # the type's own check of the model writes it, and pydantic warns that its serializer met an int
    pytest.param("settings", lambda obj: setattr(obj.settings, "size", 5), id="model-wrong-type",
                 marks=pytest.mark.filterwarnings("ignore:Pydantic serializer warnings")),
], ids=["nan-typed-list", "set-in-list", "inf-in-list", "nan-deep-in-dict", "int-key", "model-wrong-type"])
@pytest.mark.parametrize("loaded", [True, False], ids=["loaded", "new"])
def test_to_model_refuses_what_save_refuses_naming_the_field(local: Context, field: str, change: Any,
                                                             loaded: bool) -> None:
    obj = Scored(name="x", settings=Settings())
    if loaded:  # to_model() checks only what differs from the stored form, as save() does
        obj.save()
        obj = Scored.get(obj.guid)
    change(obj)
    with pytest.raises(InvalidValueError, match=field) as by_save:
        obj.save()
    with pytest.raises(InvalidValueError, match=rf"Scored\.to_model\(\).*{field}") as by_model:
        obj.to_model()
    assert "in place" in str(by_model.value) and type(by_model.value) is type(by_save.value)


class Run(TypedObject, hybrid_name="tmcrun"):
    name: str = Property()
    model_config: dict = Property(default={}, mandatory=False)  # type: ignore[type-arg,assignment]
    model_dump: str = Property(mandatory=False)  # type: ignore[assignment]
    model_fields_set: int = Property(mandatory=False)  # type: ignore[assignment]
    model_config_: str = Property(mandatory=False)  # the name <name>_ is taken: another is found


def test_a_name_pydantic_reserves_is_a_field_under_its_stored_name(local: Context) -> None:
    model = Run.model()
    schema = model.model_json_schema()
    assert list(schema["properties"]) == ["guid", "name", "model_config", "model_dump", "model_fields_set",
                                          "model_config_"]
    run = Run(name="r", model_config={"layers": 3}, model_dump="/tmp/d", model_fields_set=2,
              model_config_="c")
    run.save()
    as_model: Any = run.to_model()
    assert as_model.model_dump() == {"guid": run.guid, "name": "r", "model_config": {"layers": 3},
                                     "model_dump": "/tmp/d", "model_fields_set": 2, "model_config_": "c"}
    assert as_model.model_config__ == {"layers": 3} and as_model.model_dump_ == "/tmp/d"
    incoming = model.model_validate_json(as_model.model_dump_json())
    assert incoming == as_model
    changed = model.model_validate({**as_model.model_dump(), "model_config": {"layers": 4}})
    stored = Run.from_model(changed)
    assert stored.model_config == {"layers": 4} and stored.model_dump == "/tmp/d"
    assert stored.model_config_ == "c"
    stored.save()
    assert Run.get(run.guid).model_config == {"layers": 4}
    built = model(guid=run.guid, name="n", model_dump="p")  # keyword arguments take the stored names too
    assert Run.from_model(built).model_dump == "p"


class Legacy(TypedObject, hybrid_name="tmclegacy"):
    name: str = Property()
    json: str = Property(mandatory=False)
    copy: int = Property(mandatory=False)
    schema: list = Property(default=[], mandatory=False)  # type: ignore[type-arg]


def test_names_pydantic_only_warns_about_stay_plain_fields_without_a_warning(local: Context) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = Legacy.model()
        legacy = Legacy(name="l", json="{}", copy=1, schema=[1])
        as_model: Any = legacy.to_model()
    assert as_model.json == "{}" and as_model.copy == 1 and as_model.schema == [1]
    assert as_model.model_dump() == {"guid": legacy.guid, "name": "l", "json": "{}", "copy": 1, "schema": [1]}
    assert Legacy.from_model(model.model_validate_json(as_model.model_dump_json())).schema == [1]
