"""The write path's shortcuts with stores (issue 16): deletes without a link scan, saved bytes,
etcd requests built in place.

- A hybrid that no declared relation targets is deleted without first scanning its links: the
  commit checks that none exists instead. A link written by another version of the model must
  still refuse the delete, as the scan did.
- A saved object keeps the bytes its commit wrote instead of encoding its document again.
- etcd transactions are built in place instead of from copied messages: the bytes sent are the
  ones the constructors built.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import pytest
from conftest import round_trips
from pyetcd import etcdrpc

from dal import DataObject, Property
from dal.backends.base import (
    Check,
    CommitResult,
    Delete,
    DeletePrefix,
    Exists,
    Op,
    PrefixEmpty,
    PrefixUnchanged,
    Put,
    Revision,
)
from dal.backends.etcd import prefix_range, write_requests
from dal.backends.etcd.store import EtcdStore, fold_ops
from dal.config import Context
from dal.exceptions import LinkedObjectError, ObjectNotFoundError


class WpGadget(DataObject):
    """No relation targets it: deleted without a link scan."""

    __properties: list[Property[Any]] = [
        Property("name", str, unique=True),
        Property("status", ["NEW", "OLD"], default="NEW", indexed=True),
        Property("tags", list, default=[], mandatory=False),
    ]


def test_a_delete_nothing_can_point_at_commits_once_without_a_scan(
        context: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    gadget = WpGadget(data={"name": "g1", "tags": ["a"]})
    gadget.save()
    calls = round_trips(context, monkeypatch)
    gadget.delete()
    assert calls["persistent.commit"] == 1
    assert calls["persistent.scan"] == 0
    monkeypatch.undo()
    with pytest.raises(ObjectNotFoundError):
        WpGadget(gadget.guid)
    WpGadget(data={"name": "g1"}).save()  # its unique key went with it


def test_a_link_another_model_wrote_still_refuses_the_delete(context: Context) -> None:
    gadget = WpGadget(data={"name": "g2"})
    gadget.save()
    # a relation to WpGadget declared only by another version of the model, in another process
    link = context.keys.link(WpGadget._meta.name, gadget.guid, "WpElsewhere", "gadget", str(uuid.uuid4()))
    assert context.persistent.commit([], [Put(link, b"")]).ok
    with pytest.raises(LinkedObjectError, match=r"1 WpElsewhere\.gadget"):
        gadget.delete()
    assert WpGadget(gadget.guid).name == "g2"  # nothing was deleted, the link is not left dangling
    assert context.persistent.commit([], [Delete(link)]).ok
    gadget.delete()
    with pytest.raises(ObjectNotFoundError):
        WpGadget(gadget.guid)


def test_a_saved_object_holds_the_bytes_its_commit_stored(context: Context) -> None:
    gadget = WpGadget(data={"name": "g3", "tags": ["é", 1.5]})
    gadget.save()
    doc_key = context.keys.doc(WpGadget._meta.name, gadget.guid)

    def stored() -> bytes:
        entry = context.persistent.get(doc_key)
        assert entry is not None
        return entry.value

    assert gadget._raw == stored()
    gadget.status = "OLD"
    gadget.save()
    assert gadget._raw == stored()
    assert WpGadget(gadget.guid).status == "OLD"


# --- etcd requests ------------------------------------------------------------------------


def constructed_writes(ops: Sequence[Op]) -> list[Any]:
    """The requests as they were built before: each message made, then copied into its parent."""
    puts, deletes, prefixes = fold_ops(ops)  # the folding is shared: the building is what changed
    requests = [etcdrpc.RequestOp(request_put=etcdrpc.PutRequest(key=key.encode(), value=value))
                for key, value in puts.items()]
    requests += [etcdrpc.RequestOp(request_delete_range=etcdrpc.DeleteRangeRequest(key=key.encode()))
                 for key in sorted(deletes)]
    for prefix in prefixes:
        start, end = prefix_range(prefix)
        for key in sorted(key for key in puts if key.startswith(prefix)):
            if start < key.encode():
                requests.append(etcdrpc.RequestOp(request_delete_range=etcdrpc.DeleteRangeRequest(
                    key=start, range_end=key.encode())))
            start = (key + "\0").encode()
        if end == b"\0" or start < end:
            requests.append(etcdrpc.RequestOp(request_delete_range=etcdrpc.DeleteRangeRequest(
                key=start, range_end=end)))
    return requests


def constructed_txn(checks: Sequence[Check], ops: Sequence[Op]) -> Any:
    compares: list[Any] = []
    failure: list[Any] = []
    reads: set[Any] = set()
    mod, version = etcdrpc.Compare.MOD, etcdrpc.Compare.VERSION
    for check in checks:
        if isinstance(check, Revision | Exists):
            key = check.key.encode()
            compares.append(etcdrpc.Compare(key=key, target=mod, result=etcdrpc.Compare.EQUAL,
                                            mod_revision=check.revision) if isinstance(check, Revision)
                            else etcdrpc.Compare(key=key, target=version, result=etcdrpc.Compare.GREATER,
                                                 version=0))
            read = etcdrpc.RangeRequest(key=key)
            if check.key not in reads:
                reads.add(check.key)
                failure.append(etcdrpc.RequestOp(request_range=read))
            continue
        start, end = prefix_range(check.prefix)
        after = check.revision if isinstance(check, PrefixUnchanged) else 0
        compares.append(etcdrpc.Compare(key=start, range_end=end, target=mod, result=etcdrpc.Compare.LESS,
                                        mod_revision=after + 1) if isinstance(check, PrefixUnchanged)
                        else etcdrpc.Compare(key=start, range_end=end, target=version,
                                             result=etcdrpc.Compare.EQUAL, version=0))
        if (check.prefix, after) not in reads:
            reads.add((check.prefix, after))
            failure.append(etcdrpc.RequestOp(request_range=etcdrpc.RangeRequest(
                key=start, range_end=end, limit=1, keys_only=True, min_mod_revision=after + 1)))
    return etcdrpc.TxnRequest(compare=compares, success=constructed_writes(ops), failure=failure)


COMMITS: list[tuple[list[Check], list[Op]]] = [
    ([Revision("n/o/H/g", 5), Exists("n/o/T/t"), PrefixEmpty("n/l/H/g/"), PrefixUnchanged("n/l/T/t/", 7),
      Revision("n/o/H/g", 5), PrefixUnchanged("n/l/T/t/", 7), Revision("n/x/1/k", 0)],
     [Put("n/o/H/g", b"{}"), Put("n/u/H/name/sx", b"g"), Put("n/i/H/s/sA/g", b""), Delete("n/i/H/s/sB/g"),
      DeletePrefix("n/p/"), Put("n/p/k", b"1"), Put("n/p/a", b""), Delete("n/o/H/g"), Put("n/q", b"2")]),
    ([], [Delete("k1"), Put("k1", b"x"), Delete("k2"), DeletePrefix(""), Put("zz", b"3")]),
    ([PrefixUnchanged("", 0), PrefixEmpty("a/\xff")], [DeletePrefix("a/\xff"), Put("a/\xffb", b"")]),
    ([Revision("only", 0)], []),
]


class _Recording(EtcdStore):
    """An EtcdStore that records the requests it would send and answers that they succeeded."""

    def __init__(self) -> None:  # no endpoints: nothing is sent
        self.sent: list[Any] = []

    def _call(self, method: str, request: Any, *, txn_size: tuple[int, int] | None = None,
              service: str = "kv", resend: bool = True, tries: Any = None) -> Any:
        self.sent.append(request)
        response = etcdrpc.TxnResponse(succeeded=True)
        response.header.revision = 9
        return response


@pytest.mark.parametrize(("checks", "ops"), COMMITS)
def test_etcd_requests_built_in_place_are_the_constructed_ones(checks: list[Check], ops: list[Op]) -> None:
    store = _Recording()
    assert store.commit(checks, ops) == CommitResult(ok=True, revision=9)
    assert store.sent[0].SerializeToString() == constructed_txn(checks, ops).SerializeToString()
    assert [request.SerializeToString() for request in write_requests(ops)] == \
        [request.SerializeToString() for request in constructed_writes(ops)]


def test_a_delete_that_fails_its_revision_check_leaves_nothing_of_its_object_cached(context: Context) -> None:
    """The cache lags behind another writer's change (its invalidation lost) and another version of
    the model linked to the object: the delete fails its revision check, then is refused; the stale
    cached copy must go with the conflict, so the next load reads the other writer's change."""
    gadget = WpGadget(data={"name": f"d{uuid.uuid4().hex[:6]}"})
    gadget.save()
    assert WpGadget(gadget.guid).status == "NEW" and WpGadget(gadget.guid).status == "NEW"  # cached
    doc_key = context.keys.doc(WpGadget._meta.name, gadget.guid)
    entry = context.persistent.get(doc_key)
    assert entry is not None
    link = context.keys.link(WpGadget._meta.name, gadget.guid, "WpElsewhere", "gadget", str(uuid.uuid4()))
    changed = entry.value.replace(b'"NEW"', b'"OLD"')
    assert context.persistent.commit([], [Put(doc_key, changed), Put(link, b"")]).ok
    stale = WpGadget(gadget.guid)
    assert stale.status == "NEW", "the premise: the cache lags"
    with pytest.raises(LinkedObjectError):
        stale.delete()
    assert WpGadget(gadget.guid).status == "OLD", "the stale cached copy survived the delete's conflict"
