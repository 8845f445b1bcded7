"""save_child: save a new child linked to an existing parent on etcd + memcached, vs one raw etcd transaction.

Each dal operation builds a ``BenchVolume`` from fresh values with its mandatory ``pool``
relation set to an existing ``BenchPool`` and saves it: exactly one etcd transaction
(asserted over the run through ``context.stats['commits']``) holding the document and the
link key ``l/BenchPool/<pool>/BenchVolume/pool/<guid>``, guarded by "document absent",
"pool document exists" (checked inside the transaction, so a concurrent delete of the pool
cannot leave a dangling link) and "the hybrid's schema record is the one the save planned from"
(``m/schema/BenchVolume``, ``dal/objects/views.py``; ``BenchVolume`` has nothing indexed or
unique, so no record is written and the check is that it is still absent), then one pipelined
memcached ``delete`` of the query-result versions its values touch (the pool's cached reverse
list among them). The raw side serializes the same values with ``json.dumps`` and sends pyetcd a
transaction of the same shape: the same three compares (mod revision 0 of the document, version
> 0 of the pool's document, the schema record's mod revision, read untimed before the run) and
the same two puts. It leaves out what dal's transaction also carries: the journal record (a
compare that its key is new, its put and the delete of the previous record,
``dal/cache/journal.py``) and the failure branch (reads of what each check looked at, run only
when one fails).
"""

from __future__ import annotations

import json
import uuid

import pyetcd

from bench.benchmarks.common import compare_saves, schema_check
from bench.env import ETCD, MEMCACHED, Environment, Settings
from bench.hybrids import BenchPool, BenchVolume, volume_data
from bench.report import Result
from bench.timing import Operation
from dal import configure
from dal.config import Context

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

    def dal_save(index: int) -> object:
        volume = BenchVolume(data={**volume_data(index, "dal"), "pool": pool})
        volume.save()
        return volume

    try:
        measurement, saves = compare_saves(NAME, dal_save, raw_saver(raw, context, pool.guid), settings,
                                           FULL_OPS, context.stats)
    finally:
        raw.close()
    linked = len(pool.volumes_guids)
    if linked != saves:
        raise AssertionError(f"{NAME}: {saves} saved volumes but {linked} links under the pool")
    return Result(NAME, measurement, TARGET, {"saves": saves, "commits": saves})


def raw_saver(raw: pyetcd.Etcd3Client, context: Context, pool_guid: str) -> Operation:
    """Return the raw save of a volume of the pool ``pool_guid``: ``json.dumps`` and one pyetcd
    transaction shaped like dal's commit."""
    txn = raw.transactions
    # raw keys laid out like dal's, so both sides send the same amount of bytes; the compares on
    # the parent and on the schema record read dal's real pool document, which exists, and record
    root = f"{context.keys.root}raw/"
    child, parent = BenchVolume._meta.name, BenchPool._meta.name
    pool_key = context.keys.doc(parent, pool_guid)
    link_prefix = f"{root}l/{parent}/{pool_guid}/{child}/pool/"
    schema_key, schema_revision = schema_check(context, child)

    def raw_save(index: int) -> object:
        data = {**volume_data(index, "raw"), "pool_guid": pool_guid}
        guid = str(uuid.uuid4())
        doc_key = f"{root}o/{child}/{guid}"
        document = json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()
        succeeded, _ = raw.transaction(
            compare=[txn.mod(doc_key) == 0, txn.version(pool_key) > 0,
                     txn.mod(schema_key) == schema_revision],
            success=[txn.put(doc_key, document), txn.put(link_prefix + guid, b"")],
            failure=[])
        if not succeeded:
            raise AssertionError(f"{NAME}: the raw transaction for {guid} failed its compares: the pool was "
                                 "deleted or the schema record changed after it was read; nothing else may "
                                 "write to the benchmark's namespace while it runs (run it again on its own)")
        return succeeded

    return raw_save
