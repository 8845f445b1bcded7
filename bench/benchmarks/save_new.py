"""save_new: create and save a new object on etcd + memcached, vs one raw etcd transaction.

Each dal operation builds a ``BenchMachine`` from fresh values (a new unique name) and
saves it: one etcd transaction (asserted over the run through ``context.stats['commits']``)
holding the document, the unique key and the index entry, guarded by "document absent" and
"unique key absent", then one pipelined memcached ``delete`` of the query-result versions
its values touch (so cached queries see it at once). The raw side serializes the
same values with ``json.dumps`` and sends pyetcd a transaction of the same shape: the same
two compares (mod revision 0) and the same three puts.
"""

from __future__ import annotations

import json
import uuid

import pyetcd

from bench.benchmarks.common import compare_saves
from bench.env import ETCD, MEMCACHED, Environment, Settings
from bench.hybrids import BenchMachine, machine_data
from bench.report import Result
from dal import configure
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
    txn = raw.transactions
    # raw keys laid out like dal's, so both sides send the same amount of bytes
    root = f"{context.keys.root}raw/"
    hybrid = BenchMachine._meta.name

    def dal_save(index: int) -> object:
        machine = BenchMachine(data=machine_data(index, "dal"))
        machine.save()
        return machine

    def raw_save(index: int) -> object:
        data = machine_data(index, "raw")
        guid = str(uuid.uuid4())
        doc_key = f"{root}o/{hybrid}/{guid}"
        unique_key = f"{root}u/{hybrid}/name/{encode_value(data['name'])}"
        index_key = f"{root}i/{hybrid}/status/{encode_value(data['status'])}/{guid}"
        document = json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()
        succeeded, _ = raw.transaction(
            compare=[txn.mod(doc_key) == 0, txn.mod(unique_key) == 0],
            success=[txn.put(doc_key, document), txn.put(unique_key, guid), txn.put(index_key, b"")],
            failure=[])
        if not succeeded:
            raise AssertionError(f"{NAME}: raw transaction for {guid} failed its compares")
        return succeeded

    measurement, saves = compare_saves(NAME, dal_save, raw_save, settings, FULL_OPS, context.stats)
    raw.close()
    return Result(NAME, measurement, TARGET, {"saves": saves, "commits": saves})
