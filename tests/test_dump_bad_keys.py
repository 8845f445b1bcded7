"""dal dump of a document stored under a key that is no guid: refused, not written for a load to refuse."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from test_transfer import CLI, G1, run_dal, sqlite_with_sample

import dal
from dal.backends.base import Put
from dal.config import Context
from dal.exceptions import BackendError, InvalidValueError
from dal.tools.transfer.dump import dump, parse_dump

#: the part after ``o/xrack/`` of keys a raw client may have written: no guid, or more than one
BAD_KEYS = ["not-a-guid", f"{G1}/extra"]


def store_beside_a_rack(context: Context, rest: str) -> str:
    """Store a copy of a rack's document under ``o/xrack/<rest>``; return that key."""
    rack = context.persistent.scan(context.keys.docs("xrack"), limit=1)[0][1]
    key = f"{context.keys.docs('xrack')}{rest}"
    assert context.persistent.commit([], [Put(key, rack.value)]).ok
    return key


@pytest.mark.parametrize("rest", BAD_KEYS)
def test_dump_refuses_a_document_under_a_key_that_is_no_guid(tmp_path: Path, rest: str) -> None:
    url, _ = sqlite_with_sample(tmp_path)
    context = dal.configure(url, "memory://", namespace="dal")
    key = store_beside_a_rack(context, rest)
    with pytest.raises(BackendError, match="dal check") as raised:
        dump(context, io.StringIO())
    assert key in str(raised.value)


@pytest.mark.parametrize("rest", BAD_KEYS)
def test_cli_dump_of_such_a_store_exits_2_leaving_no_file(tmp_path: Path, rest: str) -> None:
    url, _ = sqlite_with_sample(tmp_path)
    key = store_beside_a_rack(dal.configure(url, "memory://", namespace="dal"), rest)
    before = sorted(path.name for path in tmp_path.iterdir())
    result = run_dal("dump", "--persistent", url, *CLI, "-o", "out.json", cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-500:]
    assert result.stderr.startswith("error: ") and key in result.stderr and "dal check" in result.stderr
    assert "Traceback" not in result.stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == before  # no out.json, no temporary file


def test_a_refused_record_is_not_blamed_on_the_counts() -> None:
    """The counts count the records the file holds, refused ones too: a bad record is not a truncation."""
    raw = {"format": "dal-dump", "version": 1, "namespace": "x", "counts": {"xrack": 1},
           "hybrids": {"xrack": [{"guid": "not-a-guid", "data": {"name": "r"}}]}}
    with pytest.raises(InvalidValueError, match="guid 'not-a-guid' must be") as raised:
        parse_dump(json.loads(json.dumps(raw)))
    assert "counts" not in str(raised.value) and "1 problem;" in str(raised.value)
