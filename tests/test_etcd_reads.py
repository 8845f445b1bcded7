"""etcd reads against what dal did not write or configure: a key another client wrote that is not
UTF-8, and a server allowing fewer operations per transaction than the 128 reads are sent in."""

from __future__ import annotations

import io
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from etcd_flags import start_etcd_with
from pyetcd import etcdrpc
from test_commit_outcome import _RpcError

from dal import DataObject, Property, configure
from dal.backends import open_persistent
from dal.backends.base import Put, RefusedError
from dal.backends.etcd import EtcdStore
from dal.backends.etcd.transport import TOO_MANY_OPS
from dal.exceptions import BackendError
from dal.testing.servers import RunningServer
from dal.tools.check.integrity import check
from dal.tools.transfer.dump import dump

pytestmark = pytest.mark.etcd


class OddKeyThing(DataObject):
    name: str = Property()


def test_a_key_that_is_not_utf8_is_a_backend_error_naming_it_and_how_to_delete_it(
        etcd_server: RunningServer) -> None:
    namespace = f"odd{uuid.uuid4().hex[:8]}"
    context = configure(etcd_server.url, "memory://", namespace=namespace)
    OddKeyThing(name="a").save()
    docs = context.keys.docs("OddKeyThing")
    store = context.persistent
    assert isinstance(store, EtcdStore)
    # another etcd client writes a key of bytes under the namespace
    store._call("Put", etcdrpc.PutRequest(key=docs.encode() + b"\xff'\xfe", value=b"{}"))
    expected = rf"holds the key \$'{docs}\\xff\\x27\\xfe', which is not UTF-8 text: another client wrote it"
    for read in (lambda: store.scan(docs), lambda: store.scan_keys([docs]),
                 lambda: dump(context, io.StringIO()), lambda: check(context)):
        with pytest.raises(BackendError, match=expected) as raised:
            read()
        assert rf"etcdctl del $'{docs}\xff\x27\xfe'" in str(raised.value)
    store.commit([], [Put(f"{namespace}/z", b"")])  # the store is usable after
    store._call("DeleteRange", etcdrpc.DeleteRangeRequest(key=docs.encode() + b"\xff'\xfe"))
    assert check(context).clean


@pytest.fixture
def few_ops_etcd(tmp_path: Path) -> Iterator[RunningServer]:
    """An etcd that allows 50 operations per transaction (etcd's default is 128)."""
    server = start_etcd_with(tmp_path / "etcd", "--max-txn-ops", "50")
    try:
        yield server
    finally:
        server.stop()


def test_reads_of_more_keys_than_the_server_allows_per_transaction_are_sent_in_smaller_ones(
        few_ops_etcd: RunningServer) -> None:
    store = open_persistent(f"etcd://127.0.0.1:{few_ops_etcd.port}")
    assert isinstance(store, EtcdStore)
    keys = [f"few/k{index:03d}" for index in range(150)]
    for start in range(0, 150, 50):
        store.commit([], [Put(key, key.encode()) for key in keys[start:start + 50]])
    found = store.get_many(keys)
    assert {key: entry.value for key, entry in found.items()} == {key: key.encode() for key in keys}
    assert store._read_ops == 32  # 128 halved twice, and kept for the next reads
    assert store.scan_keys(keys) == {key: [key] for key in keys}
    assert store.scan_keys(["few/"]) == {"few/": keys}


def test_a_read_refused_for_its_operation_count_says_so_not_that_a_commit_is() -> None:
    store = open_persistent("etcd://127.0.0.1:1")
    assert isinstance(store, EtcdStore)
    refused = store._error(_RpcError(grpc.StatusCode.INVALID_ARGUMENT, TOO_MANY_OPS[1]), None,
                           time.monotonic() + 5, answered=True)
    assert isinstance(refused, RefusedError)
    assert str(refused).startswith("this read needs more operations in one etcd transaction than the server")
    assert "start etcd with a larger --max-txn-ops" in str(refused)
    assert "commit" not in str(refused) and "save fewer" not in str(refused)
