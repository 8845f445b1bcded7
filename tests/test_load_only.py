"""load --only and copy --only: a selected object pointing at one --only leaves out says to add its hybrid
to --only (or load it first), not to add to the dump an object the dump holds."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from test_transfer import CLI, dump_text, in_namespace, is_empty, numbered_guid, populate, run_dal
from test_transfer import sqlite_with_sample as sample_store

from dal.config import Context
from dal.exceptions import ObjectNotFoundError
from dal.tools.transfer.dump import parse_dump, read_dump, select_hybrids
from dal.tools.transfer.load import copy, load


def test_load_only_names_the_hybrid_to_add_to_only(local: Context) -> None:
    sample = populate()
    data = read_dump(io.StringIO(dump_text(local))).select(select_hybrids(["XServer"]))
    target = in_namespace(local, "only")
    with pytest.raises(ObjectNotFoundError) as refused:
        load(target, data)
    message = str(refused.value)
    server, rack = sample.servers[0].guid, sample.racks[0].guid
    assert f"XServer {server}.rack points at XRack {rack}, which --only leaves out" in message
    assert message.endswith("add XRack to --only (or load it first)")
    assert "add those objects to the dump" not in message and is_empty(target)


def test_copy_only_names_the_hybrid_to_add_to_only(local: Context) -> None:
    populate()
    target = in_namespace(local, "only")
    with pytest.raises(ObjectNotFoundError, match=r"add XRack to --only \(or copy it first\)$"):
        copy(local, target, only=select_hybrids(["XServer"]))
    assert is_empty(target)


def test_a_target_the_dump_lacks_still_says_to_add_it_to_the_dump(local: Context) -> None:
    rack, server, gone = numbered_guid(1), numbered_guid(2), numbered_guid(3)
    data = parse_dump({"format": "dal-dump", "version": 1, "namespace": "n", "hybrids": {
        "xrack": [{"guid": rack, "data": {"name": "r"}}],
        "xserver": [{"guid": server,
                     "data": {"hostname": "h", "rack_guid": rack, "spare_rack_guid": gone}}]}})
    with pytest.raises(ObjectNotFoundError) as refused:
        load(local, data.select(select_hybrids(["XServer"])))
    message = str(refused.value)
    assert f"points at XRack {rack}, which --only leaves out" in message
    assert f"points at XRack {gone}\n" in message
    assert message.endswith("add XRack to --only (or load it first); add those objects to the dump, or clear "
                            "the relations")


def test_cli_load_only_says_which_hybrid_to_add(tmp_path: Path) -> None:
    url, _ = sample_store(tmp_path)
    assert run_dal("dump", "--persistent", url, *CLI, "-o", "out.json", cwd=tmp_path).returncode == 0
    loaded = run_dal("load", "out.json", "--persistent", url, *CLI, "--namespace", "part",
                     "--only", "XServer", cwd=tmp_path)
    assert loaded.returncode == 2 and "add XRack to --only (or load it first)" in loaded.stderr, loaded.stderr
