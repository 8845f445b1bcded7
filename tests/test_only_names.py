"""A class name two hybrids share selects neither: ``--only`` and ``--hybrid`` refuse it.

Two modules may each declare an ``Item`` (logical names ``item_a`` and ``item_b``). Picking
one of them for ``dal dump --only Item`` would dump, load, copy, draw or invalidate another
hybrid's objects than the user meant, without a word; the name is refused with the logical
names to pass instead. A logical name is always exact.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from test_cli import run_dal

from dal import DataObject, Property
from dal.exceptions import DalError
from dal.model.registry import hybrids
from dal.tools import erd
from dal.tools.cache.listing import registered
from dal.tools.transfer.dump import select_hybrids


def _hybrid(module: str, logical: str) -> type[DataObject]:
    fields = {"__module__": module, "_OnlyItem__properties": [Property("name", str)]}
    return type(DataObject)("OnlyItem", (DataObject,), fields, hybrid_name=logical)


ITEM_A = _hybrid("only_names_a", "only_item_a")
ITEM_B = _hybrid("only_names_b", "only_item_b")


class OnlyAlone(DataObject):
    __properties = [Property("name", str)]


SHARED = r"'OnlyItem' is the class name of 2 hybrids \(only_item_a, only_item_b\); name the one you mean"


def test_the_registry_refuses_a_shared_class_name() -> None:
    with pytest.raises(LookupError, match=SHARED):
        hybrids.get("OnlyItem")
    assert hybrids.get("only_item_a") is ITEM_A and hybrids.get("only_item_b") is ITEM_B
    assert hybrids.get("OnlyAlone") is OnlyAlone and hybrids.get("onlyalone") is OnlyAlone


def test_a_class_registered_again_does_not_share_its_name_with_itself() -> None:
    hybrids.register(OnlyAlone)  # as a reloaded module's class would be: the same class, again
    assert hybrids.get("OnlyAlone") is OnlyAlone


def test_every_selection_refuses_a_shared_class_name() -> None:
    with pytest.raises(DalError, match=SHARED):
        select_hybrids(["OnlyItem"])  # dump, load and copy --only
    with pytest.raises(DalError, match=SHARED):
        registered("OnlyItem")  # cache --hybrid, cache queue
    with pytest.raises(DalError, match=SHARED):
        erd.select([ITEM_A, ITEM_B, OnlyAlone], ["OnlyAlone", "OnlyItem"])
    assert select_hybrids(["only_item_b"]) == [ITEM_B._meta]
    assert erd.select([ITEM_A, ITEM_B, OnlyAlone], ["only_item_b", "OnlyAlone"]) == [ITEM_B, OnlyAlone]


def test_an_unknown_name_names_each_hybrid_of_a_shared_class_name_by_its_logical_name() -> None:
    with pytest.raises(DalError, match=r"known: OnlyAlone, only_item_a, only_item_b$"):
        erd.select([ITEM_A, ITEM_B, OnlyAlone], ["Nope"])


MODULES = {
    "m_a.py": """
        from dal import DataObject, Property
        class Item(DataObject, hybrid_name="item_a"):
            __properties = [Property("name", str)]
    """,
    "m_b.py": """
        from dal import DataObject, Property
        class Item(DataObject, hybrid_name="item_b"):
            __properties = [Property("name", str)]
    """,
}


@pytest.fixture
def two_items(tmp_path: Path) -> Path:
    for name, text in MODULES.items():
        (tmp_path / name).write_text(textwrap.dedent(text))
    (tmp_path / "dal.sqlite3").touch()  # an existing, empty store: the read-only commands open it
    return tmp_path


@pytest.mark.parametrize("command", [
    ["erd", "--only", "Item"],
    ["dump", "--only", "Item"],
    ["copy", "sqlite:///dal.sqlite3", "sqlite:///copy.sqlite3", "--only", "Item"],
    ["cache", "ls", "--hybrid", "Item"],
    ["cache", "rm", "--hybrid", "Item"],
], ids=["erd", "dump", "copy", "cache-ls", "cache-rm"])
def test_the_commands_refuse_a_shared_class_name(two_items: Path, command: list[str]) -> None:
    result = run_dal(*command, "--hybrids", "m_a,m_b", "--persistent", "sqlite:///dal.sqlite3",
                     cwd=two_items)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.startswith("error: ") and "Traceback" not in result.stderr
    assert "'Item' is the class name of 2 hybrids (item_a, item_b)" in result.stderr, result.stderr
    assert "by its logical name (item_a or item_b)" in result.stderr
    assert not (two_items / "copy.sqlite3").exists()


def test_the_commands_take_a_logical_name(two_items: Path) -> None:
    drawn = run_dal("erd", "--hybrids", "m_a,m_b", "--only", "item_b", cwd=two_items)
    assert drawn.returncode == 0, drawn.stderr
    assert "%% Item: stored as 'item_b'" in drawn.stdout and "item_a" not in drawn.stdout
    dumped = run_dal("dump", "--hybrids", "m_a,m_b", "--persistent", "sqlite:///dal.sqlite3",
                     "--only", "item_a", cwd=two_items)
    assert dumped.returncode == 0, dumped.stderr
    assert '"counts": {"item_a": 0}' in dumped.stdout


# --- the store options each cache action takes again --------------------------------------------


def test_cache_actions_show_the_store_options_as_the_top_level_does(tmp_path: Path) -> None:
    result = run_dal("cache", "ls", "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for option in ("--persistent URL", "--volatile URL", "--namespace NAME", "--hybrids MODULE[,MODULE]"):
        assert option in result.stdout
    assert "--namespace URL" not in result.stdout
