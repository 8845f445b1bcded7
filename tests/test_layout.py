"""The layout shows the architecture: small modules, short functions, imports that point down.

The layers themselves are declared in ``.importlinter`` (see docs/architecture.md); running
``lint-imports`` here makes a cycle or an upward import fail the suite as well as ``make lint``.
"""

from __future__ import annotations

import ast
import configparser
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import dal

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "dal"
#: at most this many lines per module
MODULE_LINES = 400
#: at most this many lines per function or method, unless its docstring says why
FUNCTION_LINES = 60
#: the phrase a docstring uses to give that reason
REASON = "Long because"
#: annotation-only imports (``if TYPE_CHECKING:``) that point up the layers, each explained in
#: docs/architecture.md; ``.importlinter`` leaves annotation-only imports out of its contracts
UPWARD_ANNOTATIONS = {
    ("dal.structures", "dal.objects.dataobject"),
    ("dal.model.meta", "dal.objects.dataobject"),
    ("dal.model.registry", "dal.objects.dataobject"),
}

MODULES = sorted(PACKAGE.rglob("*.py"))


def _name(path: Path) -> str:
    return str(path.relative_to(ROOT))


def _functions(tree: ast.AST) -> Iterator[ast.FunctionDef | ast.AsyncFunctionDef]:
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node


@pytest.mark.parametrize("path", MODULES, ids=_name)
def test_module_is_small(path: Path) -> None:
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MODULE_LINES, (
        f"{_name(path)} has {lines} lines (at most {MODULE_LINES}): split it by what it holds")


@pytest.mark.parametrize("path", MODULES, ids=_name)
def test_functions_are_short(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    long = []
    for function in _functions(tree):
        assert function.end_lineno is not None
        first = min([function.lineno, *(d.lineno for d in function.decorator_list)])
        length = function.end_lineno - first + 1
        if length > FUNCTION_LINES and REASON not in (ast.get_docstring(function) or ""):
            long.append(f"{function.name} (line {function.lineno}, {length} lines)")
    assert not long, (
        f"{_name(path)}: {', '.join(long)} exceed {FUNCTION_LINES} lines; split them, or say why in the "
        f"docstring ({REASON!r} ...)")


def test_imports_follow_the_layers() -> None:
    """``lint-imports`` checks the contracts of ``.importlinter``: layers, the core below the tools, the
    backends independent of each other."""
    found = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    if found is None:
        pytest.fail("lint-imports is not installed next to this Python: pip install import-linter")
    result = subprocess.run([found, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr



def test_control_an_upward_import_fails_the_layers(tmp_path: Path) -> None:
    """The same check on a copy of the package with one upward import added (the key layout
    importing the query engine) fails, naming the contract it breaks."""
    found = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert found is not None, "lint-imports is not installed next to this Python"
    shutil.copytree(PACKAGE, tmp_path / "dal", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / ".importlinter", tmp_path / ".importlinter")
    keys = tmp_path / "dal" / "keys.py"
    upward = "\nimport dal.query.datalist  # noqa\n"
    keys.write_text(keys.read_text(encoding="utf-8") + upward, encoding="utf-8")
    result = subprocess.run([found, "--no-cache"], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                            env={"PATH": str(Path(sys.executable).parent), "PYTHONPATH": str(tmp_path)})
    assert result.returncode != 0, result.stdout
    assert "Every import points down the layers BROKEN" in result.stdout, result.stdout
    assert "dal.keys -> dal.query.datalist" in result.stdout, result.stdout


def _module(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layers() -> list[list[str]]:
    """Return the rows of the top layers contract, top first; each row lists its siblings."""
    config = configparser.ConfigParser()
    config.read(ROOT / ".importlinter")
    rows = config["importlinter:contract:layers"]["layers"].split("\n")
    return [[name.strip() for name in row.split("|")] for row in rows if row.strip()]


def _place(module: str, layers: list[list[str]]) -> tuple[int, str] | None:
    for row, siblings in enumerate(layers):
        for sibling in siblings:
            if module == sibling or module.startswith(sibling + "."):
                return row, sibling
    return None


def _annotation_imports(path: Path) -> Iterator[str]:
    """Yield the dal modules ``path`` imports under ``if TYPE_CHECKING:``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for inner in node.body:
                if isinstance(inner, ast.ImportFrom) and inner.module and inner.module.startswith("dal"):
                    yield inner.module
                elif isinstance(inner, ast.Import):
                    yield from (alias.name for alias in inner.names if alias.name.startswith("dal"))


def test_annotation_only_imports_point_down_but_the_listed_ones() -> None:
    layers = _layers()
    upward = set()
    for path in MODULES:
        source = _module(path)
        here = _place(source, layers)
        for target in _annotation_imports(path):
            there = _place(target, layers)
            if here is None or there is None:
                continue
            if there[0] < here[0] or (there[0] == here[0] and there[1] != here[1]):
                upward.add((source, target))
    assert upward == UPWARD_ANNOTATIONS, (
        "annotation-only imports pointing up the layers changed; use a Protocol in the lower layer, or "
        "list the import in docs/architecture.md and UPWARD_ANNOTATIONS with the reason")


def test_the_import_lines_of_the_public_contract_work() -> None:
    """The contract (api.md, "Imports") names these five lines word for word."""
    code = ("from dal import DataObject, DataList, Property, Relation, Dynamic, configure\n"
            "from dal.dataobject import DataObject\n"
            "from dal.structures import Property, Relation, Dynamic\n"
            "from dal.datalist import DataList\n"
            "from dal import exceptions\n")
    namespace: dict[str, object] = {}
    exec(code, namespace)  # the contract's own text
    assert namespace["DataObject"] is dal.DataObject and namespace["DataList"] is dal.DataList
