"""save_new: create and save a new object on etcd + memcached, vs one raw etcd transaction.

Each dal operation builds a ``BenchMachine`` from fresh values (a new unique name) and
saves it: one etcd transaction (asserted over the run through ``context.stats['commits']``)
holding the document, the unique key and the index entry, guarded by "document absent",
"unique key absent" and "the hybrid's schema record is the one the save planned from"
(``m/schema/BenchMachine``, ``dal/objects/views.py``), then one pipelined memcached ``delete``
of the query-result versions its values touch (so cached queries see it at once). The raw side
serializes the same values with ``json.dumps`` and sends pyetcd a transaction of the same
shape: the same three compares (mod revision 0 of the document and of the unique key, the
schema record's mod revision, read untimed before the run) and the same three puts. It leaves
out what dal's transaction also carries: the journal record (a compare that its key is new, its
put and the delete of the previous record, ``dal/cache/journal.py``) and the failure branch
(reads of what each check looked at, run only when one fails).
"""

from __future__ import annotations

import json
import uuid

import pyetcd

from bench.benchmarks.common import compare_saves, schema_check
from bench.env import ETCD, MEMCACHED, Environment, Settings
from bench.hybrids import BenchMachine, machine_data
from bench.report import Result
from bench.timing import Operation
from dal import configure
from dal.config import Context
from dal.keys import encode_value
from dal.objects.schema import ensure_recorded

NAME = "save_new"
SERVERS = (ETCD, MEMCACHED)
TARGET = 0.9  # issue 16 (was 0.7)
FULL_OPS = 400


def run(env: Environment, settings: Settings) -> Result:
    etcd, memcached = env.need_etcd(), env.need_memcached()
    context = configure(etcd.url, memcached.url, namespace=env.namespace())
    # the first save into an empty hybrid also records its schema (once per store): not what is measured
    ensure_recorded(context, BenchMachine._meta)
    raw = pyetcd.client(host=etcd.host, port=etcd.port, timeout=5)

    def dal_save(index: int) -> object:
        machine = BenchMachine(data=machine_data(index, "dal"))
        machine.save()
        return machine

    try:
        measurement, saves = compare_saves(NAME, dal_save, raw_saver(raw, context), settings, FULL_OPS,
                                           context.stats)
    finally:
        raw.close()
    return Result(NAME, measurement, TARGET, {"saves": saves, "commits": saves})


def raw_saver(raw: pyetcd.Etcd3Client, context: Context) -> Operation:
    """Return the raw save: ``json.dumps`` and one pyetcd transaction shaped like dal's commit."""
    txn = raw.transactions
    # raw keys laid out like dal's, so both sides send the same amount of bytes; the compare on the
    # schema record reads dal's real record, which the raw side's objects would be planned from too
    root = f"{context.keys.root}raw/"
    hybrid = BenchMachine._meta.name
    schema_key, schema_revision = schema_check(context, hybrid)

    def raw_save(index: int) -> object:
        data = machine_data(index, "raw")
        guid = str(uuid.uuid4())
        doc_key = f"{root}o/{hybrid}/{guid}"
        unique_key = f"{root}u/{hybrid}/name/{encode_value(data['name'])}"
        index_key = f"{root}i/{hybrid}/status/{encode_value(data['status'])}/{guid}"
        document = json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()
        succeeded, _ = raw.transaction(
            compare=[txn.mod(doc_key) == 0, txn.mod(unique_key) == 0, txn.mod(schema_key) == schema_revision],
            success=[txn.put(doc_key, document), txn.put(unique_key, guid), txn.put(index_key, b"")],
            failure=[])
        if not succeeded:
            raise AssertionError(f"{NAME}: the raw transaction for {guid} failed its compares: its keys or "
                                 "the schema record changed after it was read; nothing else may write to "
                                 "the benchmark's namespace while it runs (run it again on its own)")
        return succeeded

    return raw_save
