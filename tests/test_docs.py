"""Every code block of the README and of the manual (``docs/``) runs as written, and every link holds.

- ```` ```python ```` blocks run in order, in one fresh process per sequence: each ``## `` section
  of the README, and each page of ``docs/`` as a whole (a sequence's examples build on each
  other: the README's quick start declares the hybrids its section uses; a manual page that
  builds on them declares them in its first block). Each sequence runs twice, in the same
  directory and namespace, so every example also runs again over the data it left. They run
  on the embedded default (``sqlite:///dal.sqlite3`` in a temporary directory, ``memory://``),
  in a fresh namespace (``DAL_NAMESPACE``).
- ```` ```sh ```` blocks run in order, each with ``bash -e -o pipefail``, one temporary directory
  per file (the README, a page), in which ``dal demo`` ran first (as after ``make demo``), with
  the ``dal`` script of this interpreter's environment on ``PATH`` and no ``DAL_*`` variable
  set. Every command must succeed.
- A block right after ``<!-- not run: REASON -->`` is skipped: for commands that need what the
  suite does not have at hand (a server at a fixed address, an installation with pip). The
  reason is required.
- Other blocks are not code, and say what they are: ```` ```text ```` (output), ```` ```ini ````,
  ```` ```json ````, ```` ```mermaid ````. A block without a language is refused.
- Relative links (README and manual) point at files that exist, and their ``#anchors`` at
  headings that exist under both GitHub's and MkDocs' way of naming them, so a link works on
  GitHub and on the site; snippet includes (``--8<-- "FILE:SECTION"``) name sections that exist.
- Module paths (``dal/cache/seen.py``), dotted names (``dal.objects.schema.READY_TTL``), test
  files and tests (``tests/test_races.py::test_...``, ``::test_...`` naming one of the same
  file) named in code spans exist.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from markdown.extensions.toc import slugify

from dal.testing.fixtures import services_required

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
FENCE = re.compile(r"^(?P<indent>\s*)```(?P<language>[\w-]*)\s*$")
NOT_RUN = re.compile(r"^\s*<!--\s*not run:\s*(?P<reason>\S.*?)\s*-->\s*$")
CODE = ("python", "sh")
NOT_CODE = ("text", "ini", "json", "mermaid", "toml", "yaml")
BIN = Path(sys.executable).parent

#: runs the python blocks of one sequence, each compiled at its file line so tracebacks point there
DRIVER = """
import json, sys
globals_ = {"__name__": "__main__"}
for block in json.load(open(sys.argv[1])):
    exec(compile("\\n" * (block["line"] - 1) + block["code"], sys.argv[2], "exec"), globals_)
"""


@dataclass(frozen=True)
class Block:
    language: str
    section: str
    #: file line of the block's first line of code
    line: int
    code: str
    #: why it is not run, or "" when it is
    not_run: str


def blocks(text: str) -> list[Block]:
    """Return the fenced blocks of a Markdown text with their ``## `` section and skip markers."""
    found: list[Block] = []
    section = ""
    lines = text.splitlines()
    number = 0
    while number < len(lines):
        line = lines[number]
        opening = FENCE.match(line)
        if line.startswith("## "):
            section = line[3:].strip()
        if opening is None:
            number += 1
            continue
        indent, language = opening["indent"], opening["language"]
        before = next((lines[n] for n in range(number - 1, -1, -1) if lines[n].strip()), "")
        marker = NOT_RUN.match(before)
        body: list[str] = []
        number += 1
        while number < len(lines) and not closes(lines[number]):
            body.append(lines[number][len(indent):] if lines[number].startswith(indent) else lines[number])
            number += 1
        found.append(Block(language, section, number - len(body) + 1, "\n".join(body) + "\n",
                           marker["reason"] if marker else ""))
        number += 1  # the closing fence
    return found


def closes(line: str) -> bool:
    """Tell whether ``line`` is a closing fence (one without a language)."""
    fence = FENCE.match(line)
    return fence is not None and not fence["language"]


def pages() -> list[Path]:
    """Return the README and every page of the manual."""
    return [README, *sorted(DOCS.glob("*.md"))]


def name(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def sequences() -> dict[str, tuple[Path, list[Block]]]:
    """Return the python sequences: one per ``## `` section of the README, one per page of docs/."""
    found: dict[str, tuple[Path, list[Block]]] = {}
    for path in pages():
        for block in blocks(path.read_text(encoding="utf-8")):
            if block.language != "python" or block.not_run:
                continue
            key = f"{name(path)}: {block.section}" if path == README else name(path)
            found.setdefault(key, (path, []))[1].append(block)
    return found


def environment(**extra: str) -> dict[str, str]:
    """Return this process's environment without DAL_* settings, with the dal script first on PATH."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("DAL_")}
    env["PATH"] = os.pathsep.join([str(BIN), env.get("PATH", "")])
    env.update(extra)
    return env


def run_python(path: Path, run: list[Block], tmp_path: Path) -> None:
    """Run ``run`` in order in a fresh process, twice in one directory and namespace; fail on an error."""
    (tmp_path / "blocks.json").write_text(json.dumps([{"line": block.line, "code": block.code}
                                                      for block in run]))
    workdir = tmp_path / "work"
    workdir.mkdir()
    env = environment(DAL_NAMESPACE=f"docs{uuid.uuid4().hex[:8]}")
    for attempt in ("first", "second"):
        done = subprocess.run([sys.executable, "-c", DRIVER, str(tmp_path / "blocks.json"), str(path)],
                              cwd=workdir, env=env, capture_output=True, text=True, timeout=300, check=False)
        assert done.returncode == 0, (f"the python examples of {path.name} (from line {run[0].line}) "
                                      f"failed on the {attempt} run:\n{done.stderr[-4000:]}")


def run_shell(path: Path, run: list[Block], workdir: Path) -> None:
    """Run each block with ``bash -e -o pipefail`` in ``workdir``, in order; fail on the first that fails."""
    env = environment()
    for block in run:
        done = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", block.code], cwd=workdir, env=env,
                              capture_output=True, text=True, timeout=300, check=False)
        assert done.returncode == 0, (f"{path.name}:{block.line}: the block failed (exit {done.returncode}):"
                                      f"\n{block.code}\nstdout:\n{done.stdout[-3000:]}"
                                      f"\nstderr:\n{done.stderr[-3000:]}")


def test_the_parser_finds_blocks_sections_and_markers() -> None:
    text = ("## One\n```python\nx = 1\n```\n\n<!-- not run: needs a server -->\n\n```sh\ndal copy a b\n```\n"
            "## Two\n- item:\n\n  ```python\n  y = 2\n  ```\n```text\noutput\n```\n")
    assert blocks(text) == [Block("python", "One", 3, "x = 1\n", ""),
                            Block("sh", "One", 9, "dal copy a b\n", "needs a server"),
                            Block("python", "Two", 15, "y = 2\n", ""),
                            Block("text", "Two", 18, "output\n", "")]


def test_a_failing_python_block_fails_its_page(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("# Page\n\n```python\nx = 1\n```\n\ntext\n\n```python\nassert x == 2, 'wrong'\n```\n")
    with pytest.raises(AssertionError, match=r"(?s)failed on the first run.*page\.md\", line 10.*wrong"):
        run_python(page, blocks(page.read_text()), tmp_path)


def test_a_python_block_that_fails_only_when_run_again_fails_its_page(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("```python\nfrom pathlib import Path\nPath('once').touch(exist_ok=False)\n```\n")
    with pytest.raises(AssertionError, match="failed on the second run"):
        run_python(page, blocks(page.read_text()), tmp_path)


def test_a_failing_shell_block_fails_its_page_and_a_skipped_one_does_not(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("<!-- not run: the runner's own test -->\n```sh\nfalse\n```\n```sh\ntrue\n```\n")
    run_shell(page, [block for block in blocks(page.read_text()) if not block.not_run], tmp_path)
    page.write_text("```sh\ntrue\n```\n\n```sh\ntrue | false\n```\n")
    with pytest.raises(AssertionError, match=r"page\.md:6: the block failed \(exit 1\)"):
        run_shell(page, blocks(page.read_text()), tmp_path)


@pytest.mark.parametrize("path", pages(), ids=name)
def test_every_block_is_code_we_run_or_says_what_it_is(path: Path) -> None:
    for block in blocks(path.read_text(encoding="utf-8")):
        assert block.language in (*CODE, *NOT_CODE), (
            f"{name(path)}:{block.line}: a ```{block.language} block is neither run nor known not to be code "
            f"(name its language: one of {', '.join(CODE + NOT_CODE)})")
        assert not block.not_run or block.language in CODE, f"{name(path)}:{block.line}: only code is marked"


def test_the_readme_and_the_manual_have_code_to_run() -> None:
    found = [block for path in pages() for block in blocks(path.read_text(encoding="utf-8"))]
    assert {"python", "sh"} <= {block.language for block in found if not block.not_run}
    assert any(key.startswith("README.md: ") for key in sequences())
    assert any(key.startswith("docs/") for key in sequences())


SEQUENCES = sequences()


@pytest.mark.parametrize("sequence", list(SEQUENCES))
def test_python_examples_run_as_written_and_run_again(sequence: str, tmp_path: Path) -> None:
    path, run = SEQUENCES[sequence]
    run_python(path, run, tmp_path)


SHELL_PAGES = [path for path in pages()
               if any(block.language == "sh" and not block.not_run for block in blocks(path.read_text()))]


@pytest.mark.parametrize("path", SHELL_PAGES, ids=name)
def test_shell_examples_run_as_written(path: Path, tmp_path: Path) -> None:
    if shutil.which("dot") is None:  # `dal erd --format svg` draws with Graphviz
        if services_required():
            pytest.fail("graphviz's dot is required (DAL_REQUIRE_SERVICES=1); apt-get install graphviz")
        pytest.skip("graphviz's dot is not installed")
    demo = subprocess.run(["dal", "demo", "--erd", ""], cwd=tmp_path, env=environment(), capture_output=True,
                          text=True, timeout=300, check=False)
    assert demo.returncode == 0, demo.stderr
    run_shell(path, [block for block in blocks(path.read_text(encoding="utf-8"))
                     if block.language == "sh" and not block.not_run], tmp_path)


# -- links, anchors and the names the manual cites ------------------------------------------------

LINK = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\((?P<target>[^)\s]+)\)")
HEADING = re.compile(r"^#{1,6} +(?P<title>.+?) *#*$", re.MULTILINE)
SNIPPET = re.compile(r'^--8<-- "(?P<file>[^":]+)(?::(?P<section>[\w-]+))?"$', re.MULTILINE)
SPAN = re.compile(r"`(?P<code>[^`]+)`")


def prose(text: str) -> str:
    """Return ``text`` with its fenced blocks blanked out (their lines kept empty, so lines still count)."""
    lines, inside = text.splitlines(), False
    for number, line in enumerate(lines):
        fence = FENCE.match(line)
        if fence is not None and (not inside or not fence["language"]):
            inside = not inside
            lines[number] = ""
        elif inside:
            lines[number] = ""
    return "\n".join(lines)


def github_slug(title: str) -> str:
    """Return the anchor GitHub gives a heading: lowercase, punctuation dropped, each space a dash."""
    return re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")


def plain(title: str) -> str:
    """Return a heading's text as rendered: code spans and links reduced to their text."""
    return re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", title).replace("`", "")


def anchors(path: Path) -> set[str]:
    """Return the anchors that work on both GitHub and the site: headings both name alike, API objects."""
    text = prose(path.read_text(encoding="utf-8"))
    found = {github_slug(plain(m["title"])) for m in HEADING.finditer(text)
             if github_slug(plain(m["title"])) == slugify(plain(m["title"]), "-")}
    return found | set(re.findall(r"^::: ([\w.]+)", text, re.MULTILINE))


def links(path: Path) -> Iterator[tuple[str, str]]:
    """Yield the relative link targets of a Markdown file (outside code), as (file part, anchor)."""
    text = SPAN.sub("", prose(path.read_text(encoding="utf-8")))
    for match in LINK.finditer(text):
        target = match["target"]
        if re.match(r"^[a-z]+:", target):
            continue
        file, _, anchor = target.partition("#")
        yield file, anchor


def check_links(path: Path) -> None:
    """Fail unless every relative link of ``path`` points at a file, and its anchor at a heading there."""
    for file, anchor in links(path):
        target = (path.parent / file).resolve() if file else path
        assert target.exists(), f"{path.name}: the link {file!r} points at nothing"
        if anchor:
            assert anchor in anchors(target), (
                f"{path.name}: the link {file}#{anchor} names no heading of {target.name} that GitHub and "
                f"MkDocs both name so (known: {sorted(anchors(target))})")


@pytest.mark.parametrize("path", pages(), ids=name)
def test_every_relative_link_points_at_a_file_and_heading_that_exist(path: Path) -> None:
    check_links(path)


def test_a_broken_link_or_anchor_fails(tmp_path: Path) -> None:
    page, other = tmp_path / "page.md", tmp_path / "other.md"
    other.write_text("# Other\n\n## How a save works\n\n## `dal dump [-o FILE]`\n")
    page.write_text("[ok](other.md#how-a-save-works), [code](`x.md`), [web](https://example.com/x.md)\n")
    check_links(page)
    # dal-dump--o-file is GitHub's anchor of that heading, not MkDocs' (dal-dump-o-file)
    for broken, says in [("[gone](missing.md)", "points at nothing"),
                         ("[typo](other.md#how-a-save-work)", "names no heading"),
                         ("[differs](other.md#dal-dump--o-file)", "names no heading"),
                         ("[here](#nowhere)", "names no heading")]:
        page.write_text(f"# Page\n\n{broken}\n")
        with pytest.raises(AssertionError, match=says):
            check_links(page)


@pytest.mark.parametrize("path", sorted(DOCS.glob("*.md")), ids=name)
def test_every_snippet_names_a_section_that_exists(path: Path) -> None:
    for match in SNIPPET.finditer(path.read_text(encoding="utf-8")):
        source = ROOT / match["file"]
        assert source.exists(), f"{name(path)}: --8<-- names {match['file']}, which does not exist"
        if match["section"]:
            text = source.read_text(encoding="utf-8")
            for end in ("start", "end"):
                assert f"--8<-- [{end}:{match['section']}]" in text, (
                    f"{name(path)}: {match['file']} has no {end} marker of section {match['section']!r}")


def resolves(dotted: str) -> bool:
    """Tell whether ``dal.a.b.c`` names a module, or an attribute of the longest module prefix."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj: object = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attribute in parts[cut:]:
            if not hasattr(obj, attribute):
                return False
            obj = getattr(obj, attribute)
        return True
    return False


@pytest.mark.parametrize("path", pages(), ids=name)
def test_every_module_test_and_name_cited_exists(path: Path) -> None:
    last_file: Path | None = None
    for span in SPAN.finditer(prose(path.read_text(encoding="utf-8"))):
        code = " ".join(span["code"].split())
        cited = re.match(r"^(?P<path>(?:dal|tests)/[\w/.]*?)(?:::(?P<test>\w+))?$", code)
        if cited:
            file = ROOT / cited["path"]
            assert file.exists(), f"{name(path)}: `{code}` names {cited['path']}, which does not exist"
            if file.suffix == ".py":
                last_file = file
        test = cited["test"] if cited else (code[2:] if re.fullmatch(r"::\w+", code) else None)
        if test:
            assert last_file is not None, f"{name(path)}: `{code}` follows no test file"
            assert re.search(rf"^\s*def {test}\(", last_file.read_text(), re.MULTILINE), (
                f"{name(path)}: `{code}`: {name(last_file)} has no test {test}")
        dotted = re.match(r"^dal(?:\.\w+)+", code)
        if dotted and dotted[0] != "dal.sqlite3":  # the embedded default's file, not a module
            assert resolves(dotted[0]), f"{name(path)}: `{code}` names {dotted[0]}, which does not exist"


def test_every_readme_block_that_declares_hybrids_chooses_its_namespace() -> None:
    """A reader runs a README example on its own, after `dal demo`: one writing into the default namespace
    would leave the demo's namespace with data `dal check` and the next `dal demo` refuse."""
    for block in blocks(README.read_text(encoding="utf-8")):
        if block.language == "python" and re.search(r"class \w+\((DataObject|TypedObject)\)", block.code):
            assert re.search(r"configure\([^)]*namespace=", block.code), (
                f"README.md:{block.line}: this example declares hybrids but does not configure() a namespace "
                "of its own, so it writes into the demo's")
