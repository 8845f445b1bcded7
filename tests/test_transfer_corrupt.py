"""``dal load`` of a corrupt dump: a typed error (exit 2) before anything is written, never a traceback."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from test_transfer import CLI, is_empty, run_dal

import dal
from dal.exceptions import InvalidValueError
from dal.tools.transfer.dump import read_dump

#: a number Python refuses to parse (longer than its int digit limit), and nesting deeper than its stack
HUGE = '{"format": "dal-dump", "version": 1, "namespace": "x", "hybrids": {}, "counts": {"xrack": 1%s}}' % (
    "0" * 5000)
DEEP = "[" * 100000


@pytest.mark.parametrize(("text", "says"), [(HUGE, "a number too long"), (DEEP, "nested too deeply")])
def test_read_dump_names_what_python_cannot_parse(text: str, says: str) -> None:
    with pytest.raises(InvalidValueError, match=f"the dump is not JSON dal can read \\({says}"):
        read_dump(io.StringIO(text))


@pytest.mark.parametrize("text", [HUGE, DEEP])
def test_cli_load_of_an_unparsable_dump_exits_2_writing_nothing(tmp_path: Path, text: str) -> None:
    (tmp_path / "bad.json").write_text(text)
    url = f"sqlite:///{tmp_path}/x.db"
    result = run_dal("load", "bad.json", "--persistent", url, *CLI, cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-500:]
    assert result.stderr.startswith("error: bad.json is not JSON dal can read")
    assert "Traceback" not in result.stderr
    assert is_empty(dal.configure(url, "memory://", namespace="dal"))
