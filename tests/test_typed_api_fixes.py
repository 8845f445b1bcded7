"""What the typed API let through, to type checkers or at run time, and now refuses or checks.

- A dynamic annotated ``ClassVar[T]`` (``available: ClassVar[bool] = Dynamic(timeout=60)``) is read as
  ``T``: type checkers then refuse it as a constructor keyword and as an assignment, as dal does at run
  time (a dynamic annotated ``bool`` stays, for them, a keyword and an assignable attribute: no field
  specifier can change that, so the ClassVar is the spelling that makes them see it). It was refused.
- ``Relation(foreign_key=..., foreign_type=Other)`` in a class body raises ``ConfigurationError`` (and is a
  type error): the annotation names the target; foreign_type silently won over it.
- A TypedObject's field named ``data`` raises ``ConfigurationError``: ``Cls(data=...)`` is the mapping
  of values, so type checkers refused the documented ``Cls(data={'data': ...})`` and passed
  ``Cls(data='x')``, which failed at run time.
- ``DataObject``, ``TypedObject`` or an ``abstract=True`` base used as a hybrid (built, its model, a
  lookup, a field read for a query) raises ``NotAHybridError``, a ``ConfigurationError`` (and an
  ``AttributeError``); it was a bare ``AttributeError`` on ``_meta`` or a misleading
  ``NotAConditionError``.
- What mypy says of ``<relation>_guid`` and of a relation path (``Store.kind.code``), and the spellings
  docs/typed-api.md gives for them, are checked here.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, ClassVar

import pytest

from dal import DataList, DataObject, Dynamic, Property, Relation, TypedObject
from dal.config import Context
from dal.exceptions import ConfigurationError, NotAHybridError

ROOT = Path(__file__).resolve().parent.parent

SNIPPET = '''\
from typing import Any, ClassVar, cast

from typing_extensions import reveal_type

from dal import Dynamic, Property, Relation, TypedObject


class Kind(TypedObject, hybrid_name="fxkind"):
    code: str = Property()


class Other(TypedObject, hybrid_name="fxother"):
    code: str = Property()


class Store(TypedObject, hybrid_name="fxstore"):
    name: str = Property()
    kind: Kind | None = Relation(foreign_key="stores")
    available: ClassVar[bool] = Dynamic(timeout=60)

    def _available(self) -> bool:
        return True


class Wrong(TypedObject, hybrid_name="fxwrong"):
    kind: Kind | None = Relation(foreign_key="wrongs", foreign_type=Other)  # error: No overload variant


def check(store: Store, guid: str) -> None:
    Store(name="x", available=True)  # error: Unexpected keyword argument "available"
    reveal_type(store.available)  # expect: bool
    store.available = False  # error: Cannot assign to class variable "available" via instance
    Store.where(Store.kind_guid == guid)  # error: "type[Store]" has no attribute "kind_guid"
    print(store.kind_guid)  # error: "Store" has no attribute "kind_guid"
    Store(name="x", kind_guid=guid)  # error: Unexpected keyword argument "kind_guid"
    Store.where(Store.kind.code == "alba")  # error: Item "None" of "Kind | None" has no attribute "code"
    Store(data={"name": "x", "kind_guid": guid})
    Store.where(cast(Any, Store).kind_guid == guid, cast(Any, Store.kind).code == "alba")
    Store.where(Store.kind.code == "alba")  # type: ignore[union-attr]
    reveal_type(cast("str | None", cast(Any, store).kind_guid))  # expect: str | None
'''


def markers() -> list[tuple[int, str, str]]:
    """Return (line, ``expect`` or ``error``, what follows) of each marked line of the snippet."""
    found = ((number, re.search(r"# (expect|error): (.*)$", text))
             for number, text in enumerate(SNIPPET.splitlines(), 1))
    return [(number, marker[1], marker[2]) for number, marker in found if marker is not None]


@pytest.fixture(scope="module")
def snippet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("typed") / "snippet.py"
    path.write_text(SNIPPET)
    return path


def by_line(output: str, pattern: str) -> dict[int, list[str]]:
    """Return, by line number of the snippet, the second group of each line of ``output`` that
    ``pattern`` matches (its first group: the line number)."""
    reported: dict[int, list[str]] = {}
    for line in output.splitlines():
        found = re.match(pattern, line)
        if found:
            reported.setdefault(int(found[1]), []).append(found[2])
    return reported


def test_mypy_refuses_what_dal_refuses_and_takes_the_documented_spellings(snippet: Path) -> None:
    """Each `# error:` line is an error with those words, each `# expect:` reveals that type, no other."""
    command = [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "--cache-dir", os.devnull,
               str(snippet)]
    run = subprocess.run(command, cwd=snippet.parent, capture_output=True, text=True, timeout=600,
                         env={**os.environ, "MYPYPATH": str(ROOT)})
    reported = by_line(run.stdout, r".*snippet\.py:(\d+): (?:note|error): (.*)")
    for number, kind, text in markers():
        said = " ".join(reported.pop(number, []))
        wanted = f'Revealed type is "{text}"' if kind == "expect" else text
        assert wanted in said, (number, said, run.stdout)
    assert not reported, f"mypy reported more than expected: {reported}\n{run.stdout}"


def test_pyright_refuses_the_same_lines(snippet: Path) -> None:
    """pyright words its errors its own way: an error on each `# error:` line, nothing elsewhere."""
    run = subprocess.run([sys.executable, "-m", "pyright", str(snippet)], cwd=ROOT, capture_output=True,
                         text=True, timeout=600)
    assert "Type of" in run.stdout, f"pyright did not run:\n{run.stdout}\n{run.stderr}"
    reported = by_line(run.stdout, r"\s*\S*snippet\.py:(\d+):\d+ - (information|error): (.*)")
    for number, kind, _ in markers():
        said = reported.pop(number, [])
        assert said and set(said) == {"information" if kind == "expect" else "error"}, (number, run.stdout)
    assert not reported, f"pyright reported more than expected: {reported}\n{run.stdout}"


# --- a dynamic annotated ClassVar -------------------------------------------------------------------


class FxStore(TypedObject, hybrid_name="fxtstore"):
    name: str = Property()


def test_a_dynamic_annotated_classvar_is_a_dynamic_of_its_type(local: Context) -> None:
    class FxUp(TypedObject, hybrid_name="fxtup"):
        name: str = Property()
        available: ClassVar[bool] = Dynamic(timeout=60, doc="Up?")
        plain: bool = Dynamic(timeout=60)

        def _available(self) -> bool:
            return self.name == "up"

        def _plain(self) -> bool:
            return True

    available, plain = FxUp._meta.dynamics["available"], FxUp._meta.dynamics["plain"]
    assert (available.validator.label, available.timeout, available.doc) == (plain.validator.label, 60, "Up?")
    store = FxUp(name="up")
    store.save()
    assert FxUp.get(store.guid).available is True
    with pytest.raises(AttributeError, match="dynamic"):
        store.available = False


def test_classvar_on_a_stored_field_is_refused() -> None:
    with pytest.raises(ConfigurationError, match=r"FxClassVar\.x: a Property is no ClassVar"):
        class FxClassVar(TypedObject, hybrid_name="fxclassvar"):
            x: ClassVar[int] = Property()
    with pytest.raises(ConfigurationError, match=r"FxClassVar2\.x: a Relation is no ClassVar"):
        class FxClassVar2(TypedObject, hybrid_name="fxclassvar"):
            x: ClassVar[FxStore] = Relation(foreign_key="fxcv")


# --- foreign_type in a class body -------------------------------------------------------------------


def test_foreign_type_in_a_class_body_is_refused() -> None:
    with pytest.raises(ConfigurationError, match=r"foreign_type=FxStore.*annotate the attribute"):
        class FxWrong(TypedObject, hybrid_name="fxtwrong"):
            store: FxStore | None = Relation(foreign_key="wrongs", foreign_type=FxStore)  # type: ignore[call-overload]


# --- a field named data -----------------------------------------------------------------------------


@pytest.mark.parametrize("abstract", [False, True])
def test_a_typed_field_named_data_is_refused(abstract: bool) -> None:
    options: dict[str, Any] = {"abstract": True} if abstract else {"hybrid_name": "fxtdoc"}
    with pytest.raises(ConfigurationError, match=r"FxDoc: a TypedObject's field may not be named 'data'.*"
                                                 r"rename the field"):
        class FxDoc(TypedObject, **options):
            data: str = Property()


def test_a_listed_field_named_data_still_takes_data_of_its_own() -> None:
    class FxListDoc(DataObject, hybrid_name="fxtlistdoc"):
        __properties: list[Property[Any]] = [Property("data", str)]

    assert FxListDoc(data={"data": "x"}).data == "x"


# --- not a hybrid -----------------------------------------------------------------------------------


class FxNamed(TypedObject, abstract=True):
    name: str = Property()
    kind: FxStore | None = Relation(foreign_key="fxnamed", mandatory=False)


class FxListNamed(DataObject, abstract=True):
    __properties: list[Property[Any]] = [Property("name", str)]


class FxTool(FxNamed, hybrid_name="fxttool"):
    pass


GUID = "0e5c1f6a-1b2c-4a1b-8c9d-0123456789ab"


@pytest.mark.parametrize("use", [
    lambda: FxNamed(name="x"), lambda: FxNamed(GUID), lambda: FxNamed.model(),
    lambda: FxNamed.get_by(name="x"), lambda: FxNamed.where(FxNamed.name == "x"),
    lambda: FxNamed.kind_guid, lambda: FxListNamed.where(FxListNamed.name == "x"),  # type: ignore[attr-defined]
    lambda: FxListNamed(data={"name": "x"}), lambda: FxNamed.where(FxTool.name == "x"),
    lambda: DataList(FxNamed, {"items": [("name", "EQUALS", "x")]})], ids=lambda use: "")
def test_an_abstract_base_used_as_a_hybrid_says_so(local: Context, use: Any) -> None:
    with pytest.raises(ConfigurationError, match=r"Fx(List)?Named is an abstract base \(abstract=True\), not "
                                                 r"a hybrid.*use a hybrid deriving from it"):
        use()


@pytest.mark.parametrize("base", [TypedObject, DataObject])
def test_the_bases_of_hybrids_used_as_hybrids_say_so(local: Context, base: type[DataObject]) -> None:
    with pytest.raises(ConfigurationError, match=f"{base.__name__} is .*, not a hybrid") as refused:
        base()
    with pytest.raises(ConfigurationError, match="not a hybrid"):
        base.model()
    # NotAHybridError: an AttributeError too, so code telling hybrids from the rest by
    # ``getattr(cls, '_meta', None)`` still can
    assert isinstance(refused.value, NotAHybridError) and isinstance(refused.value, AttributeError)


def test_a_hybrid_of_an_abstract_base_is_untouched() -> None:
    assert getattr(FxNamed, "_meta", None) is None and getattr(DataObject, "_meta", None) is None
    assert FxTool._meta.name == "fxttool" and FxTool(name="t").name == "t"
    assert FxTool.name.name == "name"  # the hybrid's field expression, not the base's refusal
