"""The ERD generator (``dal.tools.erd``) and ``dal erd``.

Golden files under ``tests/golden/`` hold the expected Mermaid and DOT of the sample model
(``sample.*``) and of the small model declared below (``small.*``), compared byte for byte.
After an intended change, regenerate them and review the diff:

    DAL_UPDATE_GOLDEN=1 pytest tests/test_erd.py

and redraw the manual's picture with ``dal erd -o docs/erd.svg``.
"""

from __future__ import annotations

import builtins
import datetime as dt
import difflib
import errno
import io
import os
import random
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from test_cli import run_dal

import dal.hybrids
from dal import DataObject, Dynamic, Mirror, Property, Relation
from dal.cli import main
from dal.exceptions import ConfigurationError, DalError
from dal.testing.fixtures import services_required
from dal.tools import erd

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("DAL_UPDATE_GOLDEN") == "1"
SVG = "{http://www.w3.org/2000/svg}"
SAMPLE = [getattr(dal.hybrids, name) for name in dal.hybrids.__all__]


# --- a small model with every shape the diagram draws ----------------------------------------


class ErdSite(DataObject):
    """A site; sites nest (a self relation)."""

    __properties: list[Property[Any]] = [Property("name", str, unique=True, indexed=True),
                                         Property("tier", [1, 2, 3], default=2),
                                         Property("opened", dt.date, mandatory=False)]
    __relations = [Relation("parent", None, "children", mandatory=False)]


class ErdAddress(DataObject, hybrid_name="erd_address"):
    """At most one per site (one-to-one); stored under a name of its own."""

    __properties: list[Property[Any]] = [Property("lines", list[str], default=[]),
                                         Property("code", int | str, mandatory=False)]
    __relations = [Relation("site", ErdSite, "address", onetoone=True)]


class ErdRack(DataObject):
    """Names its site by string; one dynamic never cached, one locked."""

    __properties: list[Property[Any]] = [Property("label", str), Property("units", int, default=42)]
    __relations = [Relation("site", "ErdSite", "racks")]
    __dynamics = [Dynamic("free_units", int, 0), Dynamic("power", float, 30, locked=True)]

    def _free_units(self) -> int:
        return 0

    def _power(self) -> float:
        return 0.0


class ErdDevice(DataObject):
    """Optional unique serial; a device may name its backup device."""

    __properties: list[Property[Any]] = [Property("serial", str, unique=True, mandatory=False),
                                         Property("meta", dict, default={}, mandatory=False)]
    __relations = [Relation("backup", None, "backed_up", mandatory=False)]


class ErdServer(ErdDevice):
    """Inherits the backup relation, whose reverse accessor stays with ErdDevice."""

    __properties: list[Property[Any]] = [Property("cores", int, default=1)]


class ErdPlacement(DataObject):
    """The many-to-many junction of racks and devices, with a property of its own."""

    __properties: list[Property[Any]] = [Property("slot", int)]
    __relations = [Relation("rack", ErdRack, "placements"), Relation("device", ErdDevice, "placements")]


SMALL: list[type[DataObject]] = [ErdSite, ErdAddress, ErdRack, ErdDevice, ErdServer, ErdPlacement]


def check_golden(name: str, actual: str) -> None:
    path = GOLDEN / name
    if UPDATE:
        path.write_bytes(actual.encode())
    assert path.exists(), f"{path} is missing; create it with DAL_UPDATE_GOLDEN=1 pytest tests/test_erd.py"
    expected = path.read_bytes().decode()
    diff = "".join(difflib.unified_diff(expected.splitlines(True), actual.splitlines(True), name, "actual"))
    assert actual == expected, f"differs from {path} (DAL_UPDATE_GOLDEN=1 to accept):\n{diff}"


@pytest.fixture
def graphviz() -> str:
    found = shutil.which("dot")
    if found is None:
        if services_required():
            pytest.fail("graphviz's dot is required (DAL_REQUIRE_SERVICES=1); apt-get install graphviz")
        pytest.skip("graphviz's dot is not installed (apt-get install graphviz)")
    return found


# --- the library ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("model", "name"), [(SAMPLE, "sample"), (SMALL, "small")])
def test_mermaid_and_dot_match_the_golden_files(model: list[type[DataObject]], name: str) -> None:
    check_golden(f"{name}.mmd", erd.render_mermaid(model))
    check_golden(f"{name}.dot", erd.render_dot(model))


def test_output_does_not_depend_on_the_order_given() -> None:
    shuffled = SMALL[::-1]
    random.Random(4).shuffle(shuffled)
    assert erd.render_mermaid(shuffled) == erd.render_mermaid(SMALL)
    assert erd.render(shuffled, "dot") == erd.render_dot(SMALL)


def test_cardinalities_in_mermaid() -> None:
    text = erd.render_mermaid(SAMPLE)
    assert '    "BackendType" ||--o{ "Backend" : "backend_type / backends"' in text  # mandatory many-to-one
    assert '    "Pool" |o--o{ "Disk" : "pool / disks"' in text  # optional many-to-one
    assert '    "Backend" ||--o| "AlbaBackend" : "backend / alba_backend"' in text  # one-to-one
    assert '    "Disk" |o--o{ "Disk" : "parent / clones"' in text  # self relation
    assert '    "Backend" }o..o{ "StorageRouter" : "many-to-many via BackendStorageRouter"' in text
    small = erd.render_mermaid(SMALL)
    # an inherited relation: its reverse accessor stays with the class that declared it
    assert '    "ErdDevice" |o--o{ "ErdServer" : "backup"' in small
    assert '    "ErdDevice" }o..o{ "ErdRack" : "many-to-many via ErdPlacement"' in small


def test_fields_carry_their_marks() -> None:
    text = erd.render_mermaid(SAMPLE)
    assert "        str serial UK \"optional\"" in text
    assert "        str code UK \"mandatory; indexed\"" in text
    assert "        bool is_master \"mandatory; default False\"" in text  # the junction's own property
    assert ("        enum status \"mandatory; one of 'NEW', 'INSTALLING', 'RUNNING', 'STOPPED', 'FAILURE', "
            "'UNKNOWN'; default 'NEW'\"") in text
    assert "        Disk parent FK \"optional\"" in text
    assert "        dict usage \"dynamic; ttl 10s; locked\"" in text
    assert "        int disk_count \"dynamic; never cached\"" in text
    small = erd.render_mermaid(SMALL)
    assert '        int-or-str code "type int | str; optional"' in small
    assert "    %% ErdAddress: stored as 'erd_address'" in small


def test_junctions_are_mandatory_many_to_one_pairs() -> None:
    from dal.hybrids import AlbaBackend, BackendStorageRouter, Disk

    assert erd.is_junction(BackendStorageRouter) and erd.is_junction(ErdPlacement)
    # Disk has three many-to-one relations, but only one is mandatory and one is a self relation
    assert not erd.is_junction(Disk) and not erd.is_junction(AlbaBackend)
    entities = {entity.id: entity for entity in erd.diagram(SAMPLE).entities}
    assert [e for e, entity in entities.items() if entity.junction] == ["BackendStorageRouter"]


def test_only_draws_targets_of_selected_hybrids_as_bare_entities() -> None:
    from dal.hybrids import Disk

    model = erd.diagram(erd.select(SAMPLE, ["Disk", "pool"]))  # class or logical names
    entities = {entity.id: entity for entity in model.entities}
    assert set(entities) == {"Disk", "Pool", "StorageRouter", "Backend"}
    assert entities["StorageRouter"].external and not entities["StorageRouter"].attributes
    assert not entities["Disk"].external
    assert {(link.source, link.target) for link in model.links} == {
        ("Disk", "StorageRouter"), ("Disk", "Pool"), ("Disk", "Disk"), ("Pool", "Backend")}
    assert entities["Disk"].attributes[0].name == "guid" and erd.diagram([Disk]).links
    with pytest.raises(DalError, match=r"no hybrid named Nope.*known: AlbaBackend, Backend,"):
        erd.select(SAMPLE, ["Disk", "Nope"])


def test_hybrids_in_takes_a_modules_own_hybrids_only() -> None:
    assert set(erd.hybrids_in(["dal.hybrids"])) == set(SAMPLE)
    # this module imports dal.hybrids, but does not re-export it: those are not its hybrids
    assert erd.hybrids_in([ErdSite.__module__]) == sorted(SMALL, key=lambda cls: cls._meta.name)
    with pytest.raises(DalError, match=r"cannot import hybrids module 'no\.such'"):
        erd.hybrids_in(["no.such"])


def test_an_undeclared_target_is_a_clear_error() -> None:
    class ErdDangling(DataObject):
        __module__ = "erd_scratch"  # not this module's model: hybrids_in(this module) stays SMALL
        __relations = [Relation("ghost", "ErdNotYet", "danglings", mandatory=False)]

    with pytest.raises(ConfigurationError, match=r"ErdDangling\.ghost points at hybrid 'ErdNotYet'.*--hybr"):
        erd.render_mermaid([ErdDangling])

    class ErdNotYet(DataObject):
        """Declared late: the relation resolves, and the diagram draws."""

        __module__ = "erd_scratch"

    assert '    "ErdNotYet" |o--o{ "ErdDangling" : "ghost / danglings"' in erd.render_mermaid([ErdDangling])


def test_bad_arguments() -> None:
    with pytest.raises(DalError, match="no hybrids to draw"):
        erd.render_mermaid([])
    with pytest.raises(DalError, match="unknown ERD format 'pdf'"):
        erd.render(SMALL, "pdf")  # type: ignore[arg-type]
    with pytest.raises(DalError, match=r"cannot tell the format of 'x\.txt'"):
        erd.format_for("x.txt")
    assert [erd.format_for(f"a/b.{s}") for s in ("mmd", "DOT", "gv", "svg", "png")] == [
        "mermaid", "dot", "dot", "svg", "png"]


def test_svg_parses_names_every_hybrid_and_is_deterministic(graphviz: str) -> None:
    svg = erd.render_picture(SAMPLE, "svg")
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG}svg"
    texts = {text.text for text in root.iter(f"{SVG}text")}
    assert {cls.__name__ for cls in SAMPLE} <= texts
    assert b"Generated by graphviz" not in svg
    assert erd.render(SAMPLE, "svg") == svg


def test_png_is_a_png(graphviz: str) -> None:
    assert erd.render_picture(SMALL, "png").startswith(b"\x89PNG\r\n\x1a\n")


def test_golden_dot_files_are_valid_graphviz(graphviz: str, tmp_path: Path) -> None:
    import subprocess

    for name in ("sample.dot", "small.dot"):
        done = subprocess.run([graphviz, "-Tsvg", str(GOLDEN / name)], capture_output=True, timeout=60,
                              check=False)
        assert done.returncode == 0 and not done.stderr, done.stderr
        ET.fromstring(done.stdout)


def test_missing_graphviz_is_a_typed_error() -> None:
    with pytest.raises(erd.GraphvizNotFoundError, match="apt-get install graphviz"):
        erd.render_picture(SMALL, "svg", program="no-such-dot-program")


def test_the_committed_picture_shows_the_sample_model() -> None:
    picture = Path(__file__).parent.parent / "docs" / "erd.svg"
    texts = {text.text for text in ET.parse(picture).getroot().iter(f"{SVG}text")}
    missing = {cls.__name__ for cls in SAMPLE} - texts
    assert not missing, f"docs/erd.svg lacks {missing}; redraw it with `dal erd -o docs/erd.svg`"


# --- the command line ----------------------------------------------------------------------------


def test_cli_writes_mermaid_to_stdout_by_default(tmp_path: Path) -> None:
    result = run_dal("erd", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == (GOLDEN / "sample.mmd").read_text(encoding="utf-8")


SET_DEFAULTS = """
from dal import DataObject, Property


class Tagged(DataObject):
    __properties = [Property("tags", frozenset[str], default=frozenset({"alpha", "beta", "gamma", "delta"})),
                    Property("labels", set[str], default={"red", "green", "blue", "cyan"}),
                    Property("groups", list[set[str]], default=[{"x", "z", "y", "w"}])]
"""


def test_cli_set_defaults_read_the_same_whatever_the_hash_seed(tmp_path: Path) -> None:
    """A set's order follows the hash of its strings, which each process seeds anew: the diagram
    sorts the items, so the same model gives the same text (docs/erd.md, Deterministic output)."""
    (tmp_path / "setdefaults.py").write_text(SET_DEFAULTS)
    drawn = set()
    for seed in ("1", "2", "3", "4"):
        result = run_dal("erd", "--hybrids", "setdefaults", "--format", "dot", cwd=tmp_path,
                         env={"PYTHONHASHSEED": seed})
        assert result.returncode == 0, result.stderr
        drawn.add(result.stdout)
    assert len(drawn) == 1
    text = drawn.pop()
    assert "= frozenset({'alpha', 'beta', 'delta', 'gamma'})<" in text
    assert "= {'blue', 'cyan', 'green', 'red'}<" in text and "= [{'w', 'x', 'y', 'z'}]<" in text


def test_cli_draws_only_the_hybrids_modules_own_hybrids(tmp_path: Path) -> None:
    # `dal` itself imports the sample model; --hybrids must still draw just the named module's
    result = run_dal("erd", "--hybrids", ErdSite.__module__, "--format", "dot", cwd=tmp_path,
                     env={"PYTHONPATH": str(Path(__file__).parent)})
    assert result.returncode == 0, result.stderr
    assert result.stdout == (GOLDEN / "small.dot").read_text(encoding="utf-8")


def test_cli_infers_the_format_from_the_file_name(tmp_path: Path, graphviz: str) -> None:
    result = run_dal("erd", "-o", "model.dot", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "wrote model.dot (dot, 9 hybrids)\n"
    assert (tmp_path / "model.dot").read_bytes() == (GOLDEN / "sample.dot").read_bytes()
    picture = run_dal("erd", "-o", "model.png", cwd=tmp_path)
    assert picture.returncode == 0, picture.stderr
    assert (tmp_path / "model.png").read_bytes().startswith(b"\x89PNG")


def test_cli_pictures_default_to_erd_dot_format(tmp_path: Path, graphviz: str) -> None:
    result = run_dal("erd", "--format", "svg", "--only", "Disk,Pool", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "wrote erd.svg (svg, 2 hybrids)\n"
    texts = {t.text for t in ET.parse(tmp_path / "erd.svg").getroot().iter(f"{SVG}text")}
    assert {"Disk", "Pool", "StorageRouter", "Backend"} <= texts and "BackendType" not in texts
    to_stdout = run_dal("erd", "--format", "svg", "-o", "-", cwd=tmp_path)
    assert to_stdout.returncode == 0 and ET.fromstring(to_stdout.stdout).tag == f"{SVG}svg"


def test_cli_without_graphviz_says_how_to_install_it(tmp_path: Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    result = run_dal("erd", "--format", "svg", cwd=tmp_path, env={"PATH": str(empty)})
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and "apt-get install graphviz" in result.stderr
    assert not (tmp_path / "erd.svg").exists()
    text = run_dal("erd", "--format", "dot", cwd=tmp_path, env={"PATH": str(empty)})
    assert text.returncode == 0 and text.stdout.startswith("digraph erd {")


@pytest.mark.parametrize(("args", "message"), [
    (["-o", "diagram.txt"], "cannot tell the format of 'diagram.txt'"),
    (["--only", "Disk,Nope"], "no hybrid named Nope"),
    (["--hybrids", "json"], "declare no hybrids"),
    (["--hybrids", "no.such.module"], "no.such.module"),
    (["-o", "missing/dir/x.mmd"], "cannot write 'missing/dir/x.mmd'"),
])
def test_cli_bad_input_exits_2(tmp_path: Path, args: list[str], message: str) -> None:
    result = run_dal("erd", *args, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and message in result.stderr, result.stderr


class FillsUp(io.FileIO):
    """A file on a disk that is full after ``ROOM`` bytes: later writes fail with ENOSPC."""

    ROOM = 4096

    def write(self, data: Any) -> int:
        room = self.ROOM - self.tell()
        if len(data) > room:
            super().write(bytes(data)[:max(room, 0)])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return super().write(data)


def test_cli_a_failed_write_leaves_the_previous_diagram(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "model.dot"
    target.write_text("digraph previous {}\n")
    real_open = builtins.open

    def full_disk(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if "w" in mode and "b" in mode:  # every binary write, by whichever path the command takes
            return FillsUp(file, "w")
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", full_disk)
    monkeypatch.setattr(io, "open", full_disk)  # what Path.open calls
    code = main(["erd", "--hybrids", "dal.hybrids", "--format", "dot", "-o", str(target)])
    assert code == 2
    assert capsys.readouterr().err.startswith(f"error: cannot write {str(target)!r}: No space left on device")
    assert target.read_text() == "digraph previous {}\n"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["model.dot"]  # no temporary file left


def test_cli_help(tmp_path: Path) -> None:
    top = run_dal("--help", cwd=tmp_path)
    assert top.returncode == 0 and "erd" in top.stdout
    result = run_dal("erd", "--help", cwd=tmp_path)
    assert result.returncode == 0
    for option in ("--format {mermaid,dot,svg,png}", "-o FILE", "--only NAME[,NAME]", "--dot PROGRAM",
                   "--hybrids"):
        assert option in result.stdout


def test_cli_discovers_every_hybrid_module_of_a_package(tmp_path: Path) -> None:
    # one module per hybrid, and an __init__ that imports none of them: all are found
    package = tmp_path / "shop"
    (package / "models").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "models" / "__init__.py").write_text('"""Nothing imported here."""\n')
    (package / "models" / "customer.py").write_text(
        "from dal import DataObject, Property\n\n"
        "class Customer(DataObject, hybrid_name='shop_customer'):\n"
        "    __properties = [Property('name', str)]\n")
    (package / "models" / "order.py").write_text(
        "from dal import DataObject, Property, Relation\n"
        "from shop.models.customer import Customer\n\n"
        "class Order(DataObject, hybrid_name='shop_order'):\n"
        "    __properties = [Property('total', float, default=0.0)]\n"
        "    __relations = [Relation('customer', Customer, 'orders')]\n")
    result = run_dal("erd", "--hybrids", "shop.models", cwd=tmp_path, env={"PYTHONPATH": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    assert '"Customer" {' in result.stdout and '"Order" {' in result.stdout
    assert '"Customer" ||--o{ "Order" : "customer / orders"' in result.stdout
    assert '"Backend" {' not in result.stdout


# --- mirrored hybrids -----------------------------------------------------------------------------


class ErdMirroredVm(DataObject):
    """Mirrored from a remote API: the diagram says so, with its timeout."""

    __module__ = "erd_mirrored"  # not one of this module's own hybrids, which golden files draw

    __properties: list[Property[Any]] = [Property("hostname", str, unique=True)]
    __relations = [Relation("site", ErdSite, "mirrored_vms", mandatory=False)]
    __mirror = Mirror(600, refresh_every=300)

    def _refresh(self) -> dict[str, Any]:
        raise AssertionError("drawing a diagram never calls the remote")


class ErdMirroredDisk(DataObject):
    """Mirrored without a bulk period: only the timeout is shown."""

    __module__ = "erd_mirrored"

    __properties: list[Property[Any]] = [Property("size", int, mandatory=False)]
    __mirror = Mirror(90.5)

    def _refresh(self) -> dict[str, Any]:
        raise AssertionError("drawing a diagram never calls the remote")


MIRRORED: list[type[DataObject]] = [ErdSite, ErdMirroredVm, ErdMirroredDisk]


def test_mermaid_marks_mirrored_hybrids_with_their_timeout() -> None:
    text = erd.render_mermaid(MIRRORED)
    lines = text.splitlines()
    assert "    %% ErdMirroredVm: mirrored from a remote API, timeout 600s, refresh every 300s" in lines
    assert "    %% ErdMirroredDisk: mirrored from a remote API, timeout 90.5s" in lines
    # the mark sits just above the entity it describes, and only mirrored hybrids carry one
    assert lines[lines.index('    "ErdMirroredVm" {') - 1].endswith("refresh every 300s")
    assert sum("mirrored from a remote API" in line for line in lines) == 2
    assert "mirrored" not in erd.render_mermaid(SMALL)
    assert erd.render_mermaid(MIRRORED[::-1]) == text


def test_dot_marks_mirrored_hybrids_in_their_header() -> None:
    text = erd.render_dot(MIRRORED)
    vm = next(line for line in text.splitlines() if line.startswith('    "ErdMirroredVm" [label='))
    assert '<B>ErdMirroredVm</B><BR/><I>mirrored: timeout 600s, refresh every 300s</I>' in vm
    assert 'BGCOLOR="#d9ead3"' in vm
    site = next(line for line in text.splitlines() if line.startswith('    "ErdSite" [label='))
    assert "mirrored" not in site and 'BGCOLOR="#cfe2f3"' in site
    assert "<I>mirrored: timeout 90.5s</I>" in text
    assert erd.render_dot(MIRRORED[::-1]) == text


def test_svg_shows_the_mirror_mark(graphviz: str) -> None:
    svg = erd.render_picture(MIRRORED, "svg")
    texts = [text.text for text in ET.fromstring(svg).iter(f"{SVG}text")]
    assert "mirrored: timeout 600s, refresh every 300s" in texts
    assert "mirrored: timeout 90.5s" in texts
    assert erd.render_picture(MIRRORED, "svg") == svg
