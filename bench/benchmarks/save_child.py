"""save_child: save a new child linked to an existing parent on etcd + memcached, vs one raw etcd transaction.

Each dal operation builds a ``BenchVolume`` from fresh values with its mandatory ``pool``
relation set to an existing ``BenchPool`` and saves it: exactly one etcd transaction
(asserted over the run through ``context.stats['commits']``) holding the document and the
link key ``l/BenchPool/<pool>/BenchVolume/pool/<guid>``, guarded by "document absent" and
"pool document exists" (checked inside the transaction, so a concurrent delete of the pool
cannot leave a dangling link), then one pipelined memcached ``delete`` of the query-result
versions its values touch (the pool's cached reverse list among them). The raw side
serializes the same values with ``json.dumps`` and sends pyetcd a transaction of the same
shape: the same two compares (mod revision 0 of the document, version > 0 of the pool's
document) and the same two puts.
"""

from __future__ import annotations

import json
import uuid

import pyetcd

from bench.benchmarks.common import compare_saves
from bench.env import ETCD, MEMCACHED, Environment, Settings
from bench.hybrids import BenchPool, BenchVolume, volume_data
from bench.report import Result
from dal import configure

NAME = "save_child"
SERVERS = (ETCD, MEMCACHED)
TARGET = 0.7
FULL_OPS = 400


def run(env: Environment, settings: Settings) -> Result:
    etcd, memcached = env.need_etcd(), env.need_memcached()
    context = configure(etcd.url, memcached.url, namespace=env.namespace())
    pool = BenchPool(data={"name": "pool-0001", "backend": "ceph", "capacity_gb": 1 << 20})
    pool.save()
    raw = pyetcd.client(host=etcd.host, port=etcd.port, timeout=5)
    txn = raw.transactions
    # raw keys laid out like dal's, so both sides send the same amount of bytes; the compare
    # on the parent reads dal's real pool document, which exists
    root = f"{context.keys.root}raw/"
    child, parent = BenchVolume._meta.name, BenchPool._meta.name
    pool_key = context.keys.doc(parent, pool.guid)
    link_prefix = f"{root}l/{parent}/{pool.guid}/{child}/pool/"

    def dal_save(index: int) -> object:
        volume = BenchVolume(data={**volume_data(index, "dal"), "pool": pool})
        volume.save()
        return volume

    def raw_save(index: int) -> object:
        data = {**volume_data(index, "raw"), "pool_guid": pool.guid}
        guid = str(uuid.uuid4())
        doc_key = f"{root}o/{child}/{guid}"
        document = json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()
        succeeded, _ = raw.transaction(
            compare=[txn.mod(doc_key) == 0, txn.version(pool_key) > 0],
            success=[txn.put(doc_key, document), txn.put(link_prefix + guid, b"")],
            failure=[])
        if not succeeded:
            raise AssertionError(f"{NAME}: raw transaction for {guid} failed its compares")
        return succeeded

    measurement, saves = compare_saves(NAME, dal_save, raw_save, settings, FULL_OPS, context.stats)
    raw.close()
    linked = len(pool.volumes_guids)
    if linked != saves:
        raise AssertionError(f"{NAME}: {saves} saved volumes but {linked} links under the pool")
    return Result(NAME, measurement, TARGET, {"saves": saves, "commits": saves})
