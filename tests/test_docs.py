"""Every code block of the README runs as written.

- ```` ```python ```` blocks run in order, in one fresh process per ``## `` section of the README
  (a section's examples build on each other: the quick start's hybrids are used by the relation,
  dynamic and query examples after it). Each section runs twice, in the same directory and
  namespace, so every example also runs again over the data it left. They run on the embedded
  default (``sqlite:///dal.sqlite3`` in a temporary directory, ``memory://``), in a fresh
  namespace (``DAL_NAMESPACE``).
- ```` ```sh ```` blocks run in order, each with ``bash -e -o pipefail``, in one temporary
  directory in which ``dal demo`` ran first (as after ``make demo``), with the ``dal`` script of
  this interpreter's environment on ``PATH`` and no ``DAL_*`` variable set. Every command must
  succeed.
- A block right after ``<!-- not run: REASON -->`` is skipped: for commands that need what the
  suite does not have at hand (a server at a fixed address, an installation with pip). The
  reason is required.
- Other blocks (output, JSON, Mermaid, a block without a language) are not code.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from dal.testing.fixtures import services_required

README = Path(__file__).resolve().parent.parent / "README.md"
FENCE = re.compile(r"^(?P<indent>\s*)```(?P<language>[\w-]*)\s*$")
NOT_RUN = re.compile(r"^\s*<!--\s*not run:\s*(?P<reason>\S.*?)\s*-->\s*$")
CODE = ("python", "sh")
BIN = Path(sys.executable).parent

#: runs the python blocks of one section, each compiled at its README line so tracebacks point there
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
    #: README line of the block's first line of code
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


def readme_blocks(language: str) -> list[Block]:
    return [block for block in blocks(README.read_text(encoding="utf-8")) if block.language == language]


def environment(**extra: str) -> dict[str, str]:
    """Return this process's environment without DAL_* settings, with the dal script first on PATH."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("DAL_")}
    env["PATH"] = os.pathsep.join([str(BIN), env.get("PATH", "")])
    env.update(extra)
    return env


def test_the_readme_parser_finds_blocks_sections_and_markers() -> None:
    text = ("## One\n```python\nx = 1\n```\n\n<!-- not run: needs a server -->\n\n```sh\ndal copy a b\n```\n"
            "## Two\n- item:\n\n  ```python\n  y = 2\n  ```\n```\noutput\n```\n")
    assert blocks(text) == [Block("python", "One", 3, "x = 1\n", ""),
                            Block("sh", "One", 9, "dal copy a b\n", "needs a server"),
                            Block("python", "Two", 15, "y = 2\n", ""),
                            Block("", "Two", 18, "output\n", "")]


def test_every_block_is_code_we_run_or_says_why_not() -> None:
    found = blocks(README.read_text(encoding="utf-8"))
    assert {"python", "sh"} <= {block.language for block in found}
    for block in found:
        assert block.language in (*CODE, "", "json", "mermaid", "console", "text"), \
            f"README.md:{block.line}: a ```{block.language} block is neither run nor known not to be code"
        assert not block.not_run or block.language in CODE, f"README.md:{block.line}: only code is marked"


SECTIONS = list(dict.fromkeys(block.section for block in readme_blocks("python") if not block.not_run))


@pytest.mark.parametrize("section", SECTIONS)
def test_python_examples_run_as_written_and_run_again(section: str, tmp_path: Path) -> None:
    run = [{"line": block.line, "code": block.code} for block in readme_blocks("python")
           if block.section == section and not block.not_run]
    (tmp_path / "blocks.json").write_text(json.dumps(run))
    workdir = tmp_path / "work"
    workdir.mkdir()
    env = environment(DAL_NAMESPACE=f"readme{uuid.uuid4().hex[:8]}")
    for attempt in ("first", "second"):
        done = subprocess.run([sys.executable, "-c", DRIVER, str(tmp_path / "blocks.json"), str(README)],
                              cwd=workdir, env=env, capture_output=True, text=True, timeout=300, check=False)
        assert done.returncode == 0, (f"the python examples of README section {section!r} failed on the "
                                      f"{attempt} run:\n{done.stderr[-4000:]}")


def test_shell_examples_run_as_written(tmp_path: Path) -> None:
    if shutil.which("dot") is None:  # `dal erd --format svg` draws with Graphviz
        if services_required():
            pytest.fail("graphviz's dot is required (DAL_REQUIRE_SERVICES=1); apt-get install graphviz")
        pytest.skip("graphviz's dot is not installed")
    env = environment()
    demo = subprocess.run(["dal", "demo", "--erd", ""], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300, check=False)
    assert demo.returncode == 0, demo.stderr
    ran = 0
    for block in readme_blocks("sh"):
        if block.not_run:
            continue
        done = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", block.code], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=300, check=False)
        assert done.returncode == 0, (f"README.md:{block.line}: the block failed (exit {done.returncode}):\n"
                                      f"{block.code}\nstdout:\n{done.stdout[-3000:]}\nstderr:\n{done.stderr[-3000:]}")
        ran += 1
    assert ran >= 5
