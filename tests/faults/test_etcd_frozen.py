"""One frozen member of a healthy 3-member etcd cluster: requests go on through the others.

A frozen (SIGSTOPped) member accepts requests and answers none. Each send waits a share of the
store's timeout and one that gets no answer goes to the next member, when resending it is safe
(reads, and commits whose checks a first send that applied would make fail).
"""

from __future__ import annotations

import time
import uuid

import pytest

from dal import DataObject, Property, configure
from dal.backends.base import Put, Revision
from dal.backends.etcd import EtcdStore
from dal.backends.etcd.transport import ENDPOINT_RETRY_AFTER
from dal.testing.cluster import EtcdCluster

pytestmark = pytest.mark.etcd

TIMEOUT = 3.0


class FrozenThing(DataObject):
    name: str = Property()


def test_a_frozen_member_is_passed_over_within_the_timeout(etcd_cluster: EtcdCluster) -> None:
    namespace = f"t{uuid.uuid4().hex[:8]}"
    context = configure(f"{etcd_cluster.url}?timeout={TIMEOUT:g}", "memory://", namespace=namespace)
    thing = FrozenThing(name="a")
    thing.save()
    store = context.persistent
    assert isinstance(store, EtcdStore)
    in_use = store._client.endpoint_in_use.netloc
    victim = next(m for m in etcd_cluster.members if f"{m.host}:{m.client_port}" == in_use)
    etcd_cluster.pause(victim)  # the member this store sends to
    took: dict[str, float] = {}
    try:
        key = f"{namespace}/created"
        started = time.monotonic()
        assert store.commit([Revision(key, 0)], [Put(key, b"v")]).ok
        took["guarded commit"] = time.monotonic() - started
        # past the time a failed member is passed over, the store may try the frozen one again
        time.sleep(ENDPOINT_RETRY_AFTER)
        store._client._current_endpoint_label = in_use
        started = time.monotonic()
        assert store.get(f"{namespace}/nothing") is None
        took["read"] = time.monotonic() - started
        time.sleep(ENDPOINT_RETRY_AFTER)
        store._client._current_endpoint_label = in_use
        started = time.monotonic()
        thing.name = "b"
        thing.save()
        took["save"] = time.monotonic() - started
    finally:
        etcd_cluster.resume(victim)
    print(f"with one member frozen: {took}")
    assert all(seconds < TIMEOUT for seconds in took.values()), took
    assert FrozenThing(thing.guid).name == "b"
