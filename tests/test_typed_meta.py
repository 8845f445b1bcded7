"""Annotated declarations build the same ``_meta`` as the lists, mix with them, and type-check (mypy)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typed_example
from typed_example import LBackend, LBackendType, MixedBackend, TBackend, TBackendType

from dal import DataObject, Dynamic, Property, Relation, TypedObject
from dal.exceptions import ConfigurationError, InvalidValueError
from dal.model.meta import HybridMeta
from dal.objects.schema import describe
from dal.structures import Property as SpecProperty
from dal.structures import Relation as SpecRelation

ROOT = Path(__file__).resolve().parent.parent
#: the annotated hybrids' names, as the list-form twins spell them
TWINS = {"TBackendType": "LBackendType", "TBackend": "LBackend", "tbackendtype": "lbackendtype",
         "tbackend": "lbackend"}


def view(meta: HybridMeta) -> dict[str, Any]:
    """Return everything the specs of a hybrid say, with the annotated hybrids renamed to their twins."""
    def named(value: Any) -> Any:
        text = value.__name__ if isinstance(value, type) else value
        return TWINS.get(text, text) if isinstance(text, str) else text

    return {
        "properties": [(type(p), p.name, p.validator.label, p.mandatory, p.default, p.unique, p.indexed,
                        p.doc, p.validator.owner.split(".")[1]) for p in meta.properties.values()],
        "relations": [(type(r), r.name, named(r.target), named(r.foreign_type), r.foreign_key, r.mandatory,
                       r.onetoone, r.doc) for r in meta.relations.values()],
        "dynamics": [(type(d), d.name, d.validator.label, d.timeout, d.locked, d.doc, d.lock_timeout)
                     for d in meta.dynamics.values()],
        "reverse": sorted(meta.reverse),
        "fields": meta.fields(),
        "defaults": dict(meta.stored_defaults),
    }


def renamed(described: dict[str, Any]) -> str:
    text = repr(described)
    for old, new in TWINS.items():
        text = text.replace(f"'{old}'", f"'{new}'")
    return text


@pytest.mark.parametrize(("typed", "listed"), [(TBackendType, LBackendType), (TBackend, LBackend)])
def test_annotated_and_listed_hybrids_build_the_same_meta(typed: type[DataObject],
                                                          listed: type[DataObject]) -> None:
    assert view(typed._meta) == view(listed._meta)
    # what migrations, `dal check` and the schema fingerprint read of a model
    assert renamed(describe(typed._meta)) == renamed(describe(listed._meta))
    for spec in (*typed._meta.properties.values(), *typed._meta.relations.values()):
        assert type(spec) in (SpecProperty, SpecRelation)  # the specs of dal.structures, as the lists hold
        assert vars(typed)[spec.name] is spec  # the spec itself is the descriptor, as in the list form


def test_the_forms_mix_in_one_hierarchy() -> None:
    meta = MixedBackend._meta
    assert list(meta.properties) == [*LBackend._meta.properties, "region"]
    assert meta.properties["region"].indexed and not meta.properties["region"].mandatory
    assert list(meta.relations) == ["backend_type", "parent"] and list(meta.dynamics) == ["available"]
    assert isinstance(TBackend(name="x"), DataObject) and issubclass(TBackend, TypedObject)


def test_the_exported_names_take_both_forms() -> None:
    listed = Property("x", str)
    assert type(listed) is SpecProperty and isinstance(listed, Property)
    assert isinstance(Relation("r", None, "rs"), Relation) and isinstance(Dynamic("d", int, 1), Dynamic)
    assert Property[int] is not None  # subscriptable, as annotations of the lists write it


def test_mistakes_in_annotated_declarations_are_refused() -> None:
    with pytest.raises(InvalidValueError, match="takes default, doc, indexed, mandatory, unique, not uniqe"):
        Property(uniqe=True)
    with pytest.raises(InvalidValueError, match="needs foreign_key="):
        Relation()
    with pytest.raises(InvalidValueError, match="needs timeout="):
        Dynamic()
    with pytest.raises(ConfigurationError, match="name declared without an annotation"):
        type("NoAnnotation", (DataObject,), {"name": Property(), "__module__": __name__})
    with pytest.raises(ConfigurationError, match="declared both in a list and by annotation"):
        type("Twice", (DataObject,), {"_Twice__properties": [Property("name", str)], "name": Property(),
                                      "__annotations__": {"name": str}, "__module__": __name__})


def markers(source: list[str]) -> list[tuple[int, str, str]]:
    """Return (line number, ``expect`` or ``error``, what follows) of each marked line of the example."""
    found = ((number, re.search(r"# (expect|error): (.*)$", text)) for number, text in enumerate(source, 1))
    return [(number, marker[1], marker[2]) for number, marker in found if marker is not None]


def test_mypy_sees_the_fields_and_the_keyword_constructor() -> None:
    """mypy --strict on tests/typed_example.py: each reveal_type as `# expect:` says, each `# error:` said."""
    source = Path(typed_example.__file__).read_text().splitlines()
    command = [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "tests/typed_example.py"]
    run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    reported: dict[int, list[str]] = {}
    for line in run.stdout.splitlines():
        found = re.match(r"tests/typed_example\.py:(\d+): (?:note|error): (.*)", line)
        if found:
            reported.setdefault(int(found[1]), []).append(found[2])
    expected = 0
    for number, kind, text in markers(source):
        expected += 1
        said = " ".join(reported.pop(number, []))
        if kind == "expect":
            wanted = text.replace("tests.typed_example.", "typed_example.").replace("builtins.", "")
            assert f'Revealed type is "{wanted}"' in said, (number, said)
        else:
            assert text in said, (number, said)
    assert expected == 8
    assert not reported, f"mypy reported more than expected: {reported}\n{run.stdout}"


def test_pyright_sees_the_same_types() -> None:
    """pyright (installed with the test tools) on the same file: every reveal and every error as mypy."""
    source = Path(typed_example.__file__).read_text().splitlines()
    command = [sys.executable, "-m", "pyright", "tests/typed_example.py"]
    run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert "Type of" in run.stdout, f"pyright did not run:\n{run.stdout}\n{run.stderr}"
    reported: dict[int, list[str]] = {}
    for line in run.stdout.splitlines():
        found = re.match(r"\s*\S*typed_example\.py:(\d+):\d+ - (information|error): (.*)", line)
        if found:
            reported.setdefault(int(found[1]), []).append(f"{found[2]}: {found[3]}")
    expected = 0
    for number, kind, text in markers(source):
        expected += 1
        said = " ".join(reported.pop(number, []))
        if kind == "expect":
            wanted = re.sub(r"\b(tests\.typed_example|builtins)\.", "", text)
            assert said.startswith("information: ") and said.endswith(f'is "{wanted}"'), (number, said)
        else:  # pyright words its errors differently from mypy: an error on that line is what counts
            assert said.startswith("error: "), (number, said)
    assert expected == 8
    assert not reported, f"pyright reported more than expected: {reported}\n{run.stdout}"
