"""The ``dal`` command line, run as users run it: in a subprocess."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import pytest

from dal.testing.fixtures import services_required


def run_dal(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("DAL_")}
    environment.update(env or {})
    return subprocess.run([sys.executable, "-m", "dal", *args], cwd=cwd, env=environment,
                          capture_output=True, text=True, timeout=120, check=False)


def assert_demo_report(out: str, backends: int) -> None:
    """Assert the lines every demo run prints, whatever the stores (``backends``: its --count)."""
    made = re.search(r"2 backend types and (\d+) backends in (\d+) transactions: (\d+) saves \(.*\) "
                     r"and (\d+) schema records", out)
    assert made, out
    count, transactions, saves, records = (int(n) for n in made.groups())
    assert (count, saves) == (backends, backends + 2)
    assert transactions == saves + records and records >= 1  # the first save of a hybrid records it
    assert "3 nodes stored as release 1 of the model did" in out
    assert "node1.node_type='EXTRA', machine_id=None" in out  # read through the new model's defaults
    assert "served by node1 (master), node2 through a junction; one-to-one plugin found" in out
    assert "12 disks on 3 nodes; disk1.clones = [disk1-clone] (self relation parent)" in out
    assert "node1.capacity: 5 disks, 4 online" in out
    assert "1 cache miss, 1 cache hit" in out
    assert "status=RUNNING, tags=['gold']" in out
    assert "UniqueConstraintError: Backend.name" in out and "MissingMandatoryFieldsError" in out
    assert "LinkedObjectError: BackendType" in out
    assert "available = True read 3 times: 2 computed (it reads its plugin's own dynamic), " \
           "2 from cache" in out
    # queries: an index, a case-insensitive scan, a dotted path explained, natural order, a page
    assert f"1 of {backends} backends are RUNNING" in out
    assert "Disk where name IN ['disk2', 'disk10']: disk2, disk10 (index lookup on Disk)" in out
    assert "Disk where name CONTAINS 'CLONE' (case-insensitive): disk1-clone (scanned 13 documents)" in out
    assert "DataList of Backend where backend_type.code EQUALS 'alba'" in out
    assert "result cache: miss" in out and "unique lookup on BackendType: code EQUALS 'alba' -> 1" in out
    assert f"walked back through link keys: backend_type.code EQUALS 'alba' -> {(backends + 1) // 2}" in out
    assert "the same query again -> result cache: hit" in out and "query hits +1" in out
    assert "naturally: disk1 disk1-clone disk2 disk3 disk4 disk5 disk6 disk7 disk8 disk9 disk10 disk11 " \
           "disk12" in out
    assert "page 2 of 3 (5 a page): disk5 disk6 disk7 disk8 disk9" in out
    assert re.search(r"pool1\.disks 6, pool2\.disks 6 \(2 computed, then 2 from cache\); disk\d+ moved to "
                     r"pool2 -> 5 and 7: its save invalidated both cached lists \(2 recomputed\)", out), out
    deleted = backends - max(1, backends // 2)
    assert f"{deleted} backends deleted, {backends - deleted} left" in out
    # the migration brings release 1's nodes up to the declared model, then has nothing left to do
    assert "dry run: storagerouter: 3 objects; would fill defaults for machine_id (3), node_type (3); " \
           "would build index keys of machine_id" in out
    assert "run: 3 objects brought up to date" in out
    assert "run again: up to date: nothing to do (0 transactions)" in out
    # computed again after the migration (the record now lists machine_id: a result on its default no
    # longer depends on creates), through the index it built
    assert "a query on machine_id: before, scanned 3 documents; after, index lookup on StorageRouter" in out
    assert re.search(r"check +clean: \d+ documents of 7 hybrids", out), out
    assert "index entry deleted by hand: a query by name finds 0; check --repair found missing_index 1, " \
           "fixed 1; the query finds 1; checked again: clean" in out


def assert_erd(out: str, cwd: Path) -> None:
    if shutil.which("dot") is None:
        if services_required():
            pytest.fail("graphviz's dot is required (DAL_REQUIRE_SERVICES=1); apt-get install graphviz")
        assert "erd.svg not written: Graphviz's dot is not installed" in out
        return
    assert "wrote erd.svg: the 9 hybrids of the sample model" in out  # 7, and Cluster and VirtualMachine
    root = ElementTree.parse(cwd / "erd.svg").getroot()
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    assert "Disk" in ElementTree.tostring(root, encoding="unicode")


def test_demo_on_the_embedded_default(tmp_path: Path) -> None:
    result = run_dal("demo", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "persistent sqlite:///dal.sqlite3, volatile memory://" in out
    assert_demo_report(out, 20)
    assert "10 backends deleted, 10 left" in out
    assert_erd(out, tmp_path)
    assert (tmp_path / "dal.sqlite3").exists()
    again = run_dal("demo", cwd=tmp_path)  # the demo clears its own namespace and starts over
    assert again.returncode == 0, again.stderr
    assert_demo_report(again.stdout, 20)
    assert_erd(again.stdout, tmp_path)


def test_demo_without_graphviz_still_finishes(tmp_path: Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    result = run_dal("demo", "--count", "2", cwd=tmp_path, env={"PATH": str(empty)})
    assert result.returncode == 0, result.stderr
    assert "erd.svg not written: Graphviz's dot is not installed (apt-get install graphviz)" in result.stdout
    assert "cache     commits=" in result.stdout  # the report went on to its end
    assert not (tmp_path / "erd.svg").exists()


@pytest.mark.etcd
@pytest.mark.memcached
def test_demo_on_servers(tmp_path: Path, etcd_server: Any, memcached_server: Any) -> None:
    for _ in range(2):  # the second run clears the first one's data, and the shared cache keeps nothing stale
        result = run_dal("demo", "--count", "4", "--persistent", etcd_server.url,
                         "--volatile", memcached_server.url, "--namespace", "clidemo", cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert f"persistent {etcd_server.url}, volatile {memcached_server.url}" in result.stdout
        assert_demo_report(result.stdout, 4)
        assert "2 backends deleted, 2 left" in result.stdout
        assert_erd(result.stdout, tmp_path)


def test_demo_never_clears_a_namespace_it_did_not_write(tmp_path: Path) -> None:
    setup = run_dal("demo", "--count", "2", "--namespace", "mine", cwd=tmp_path)
    assert setup.returncode == 0, setup.stderr
    import dal
    from dal.hybrids import BackendType

    dal.configure(f"sqlite:///{tmp_path}/dal.sqlite3", "memory://", namespace="precious")
    kept = BackendType(data={"name": "kept", "code": "kept"})
    kept.save()
    refused = run_dal("demo", cwd=tmp_path, env={"DAL_NAMESPACE": "precious"})
    assert refused.returncode == 2 and "holds data the demo did not write" in refused.stderr
    assert BackendType(kept.guid).name == "kept"
    again = run_dal("demo", "--count", "2", "--namespace", "mine", cwd=tmp_path)
    assert again.returncode == 0, again.stderr


def test_password_is_not_printed(tmp_path: Path) -> None:
    result = run_dal("demo", "--persistent", "etcd://bob:hunter22@127.0.0.1:1?bogus=1", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("error: ")
    assert "hunter22" not in result.stderr + result.stdout


@pytest.mark.parametrize("args", [["demo", "--persistent", "nosuch://x"],
                                  ["erd", "--hybrids", "no.such.module"],  # the demo imports none
                                  ["demo", "--count", "0"]])
def test_bad_input_exits_2_with_error_on_stderr(tmp_path: Path, args: list[str]) -> None:
    result = run_dal(*args, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("error: "), result.stderr


def test_help_on_every_command(tmp_path: Path) -> None:
    from dal.cli import COMMAND_MODULES

    top = run_dal("--help", cwd=tmp_path)
    assert top.returncode == 0
    assert set(COMMAND_MODULES) == {"demo", "stats", "erd", "migrate", "dump", "load", "copy", "check",
                                    "refresh", "cache"}
    for name in COMMAND_MODULES:
        assert name in top.stdout
        shown = run_dal(name, "--help", cwd=tmp_path)
        assert shown.returncode == 0, (name, shown.stderr)
        assert f"usage: dal {name}" in shown.stdout and "--persistent URL" in shown.stdout
        assert "--hybrids" in shown.stdout


def test_dal_entry_point_is_the_same_program(tmp_path: Path) -> None:
    script = Path(sys.executable).with_name("dal")
    if not script.exists():
        pytest.skip("the dal console script is not installed beside this interpreter")
    result = subprocess.run([str(script), "demo", "--count", "2", "--persistent", "memory://"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0 and "2 backend types and 2 backends" in result.stdout


def test_stats_after_the_demo_on_the_embedded_default(tmp_path: Path) -> None:
    result = run_dal("stats", "--demo", "--count", "4", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "processes reporting: 1" in out
    row = next(line for line in out.splitlines() if line.strip().startswith("backend.available"))
    hits, misses, computed, waits = (int(n) for n in row.split()[1:5])
    assert (hits, misses, computed, waits) == (2, 1, 1, 0)
    assert "memory cache of this process:" in out
    # the demo's mirror section: its remote calls and the two failures it shows are counted
    heading = next(line for line in out.splitlines() if line.strip().startswith("mirrored"))
    assert heading.split()[1:] == ["calls", "bulk", "runs", "changed", "unchanged", "failed", "waits",
                                   "remote", "ms"]
    mirrored = next(line for line in out.splitlines() if line.strip().startswith("virtualmachine"))
    calls, bulk_runs, changed, unchanged, failed = (int(n) for n in mirrored.split()[1:6])
    assert (calls, bulk_runs, changed, unchanged, failed) == (5, 0, 7, 0, 2)


@pytest.mark.etcd
@pytest.mark.memcached
def test_stats_sum_what_every_process_published(
        tmp_path: Path, etcd_server: Any, memcached_server: Any) -> None:
    namespace = f"stats{os.getpid()}"
    script = (
        "import dal, sys\n"
        "from dal.hybrids import Backend, BackendType\n"
        f"dal.configure({etcd_server.url!r}, {memcached_server.url!r}, namespace={namespace!r})\n"
        "t = BackendType(data={'name': 'T', 'code': 'c' + sys.argv[1]}); t.save()\n"
        "b = Backend(data={'name': 'b' + sys.argv[1], 'backend_type': t, 'status': 'RUNNING'}); b.save()\n"
        "assert [Backend(b.guid).available for _ in range(3)] == [True] * 3\n"
    )
    for worker in ("1", "2"):
        done = subprocess.run([sys.executable, "-c", script, worker], capture_output=True, text=True,
                              timeout=60, check=False)
        assert done.returncode == 0, done.stderr
    result = run_dal("stats", "--persistent", etcd_server.url, "--volatile", memcached_server.url,
                     "--namespace", namespace, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "processes reporting: 3" in result.stdout  # the two workers and `dal stats` itself
    row = next(line for line in result.stdout.splitlines() if line.strip().startswith("backend.available"))
    hits, misses, computed = (int(n) for n in row.split()[1:4])
    assert (hits, misses, computed) == (4, 2, 2)


def test_the_other_commands_read_what_the_demo_wrote(tmp_path: Path) -> None:
    """After `make demo`, `dal check` and `dal dump` (no options) see the demo's data."""
    demo = run_dal("demo", "--count", "2", "--erd", "", cwd=tmp_path)
    assert demo.returncode == 0, demo.stderr
    assert "namespace 'dal'" in demo.stdout
    checked = run_dal("check", cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    documents = re.search(r"checked namespace 'dal' of sqlite:///dal.sqlite3: (\d+) documents",
                          checked.stdout)
    assert documents and int(documents.group(1)) > 0, checked.stdout
    assert "clean: no problems found" in checked.stdout
    dumped = run_dal("dump", "--only", "BackendType", cwd=tmp_path)
    assert dumped.returncode == 0, dumped.stderr
    assert '"code": "alba"' in dumped.stdout and '"code": "ceph"' in dumped.stdout


def test_the_dal_script_imports_hybrids_modules_from_the_working_directory(tmp_path: Path) -> None:
    """`dal erd --hybrids mymodule` finds ./mymodule.py through the console script, as `python -m dal`."""
    script = Path(sys.executable).with_name("dal")
    assert script.exists(), f"the dal console script is not installed beside {sys.executable}"
    (tmp_path / "mymodule.py").write_text(
        "from dal import DataObject, Property\n\n\n"
        "class Gadget(DataObject):\n"
        "    __properties = [Property('label', str)]\n")
    environment = {k: v for k, v in os.environ.items() if not k.startswith("DAL_") and k != "PYTHONPATH"}
    result = subprocess.run([str(script), "erd", "--hybrids", "mymodule"], cwd=tmp_path, env=environment,
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert "\"Gadget\" {" in result.stdout and "str label" in result.stdout


# --- a mistyped SQLite path -------------------------------------------------------------------


@pytest.mark.parametrize("where", ["nonexistent/dir/x.db", "x.db"])
@pytest.mark.parametrize("args", [["check"], ["dump"], ["stats"], ["copy", "SQLITE", "memory://"],
                                  ["refresh", "--once"]])
def test_read_only_commands_refuse_a_missing_sqlite_file(tmp_path: Path, where: str, args: list[str]) -> None:
    url = f"sqlite:///{tmp_path / where}"
    command = [url if arg == "SQLITE" else arg for arg in args]
    if "SQLITE" not in args:
        command += ["--persistent", url]
    result = run_dal(*command, cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.startswith("error: ") and "does not exist" in result.stderr, result.stderr
    assert "clean" not in result.stdout
    assert not (tmp_path / "nonexistent").exists() and not (tmp_path / "x.db").exists()


@pytest.mark.parametrize("store", ["memory://", "fakeredis://x"])
def test_copy_and_load_refuse_a_store_that_lives_in_their_process_only(tmp_path: Path, store: str) -> None:
    """What they wrote there would be gone when the command exits, after it said "verified"."""
    made = run_dal("migrate", "--persistent", "sqlite:///made.db", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    dumped = run_dal("dump", "--persistent", "sqlite:///made.db", "-o", "backup.json", cwd=tmp_path)
    assert dumped.returncode == 0, dumped.stderr
    for args in (["copy", "sqlite:///made.db", store], ["load", "backup.json", "--persistent", store]):
        result = run_dal(*args, cwd=tmp_path)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        assert "lives in this process only" in result.stderr, result.stderr
        assert "verified" not in result.stdout
    moved = run_dal("load", "backup.json", cwd=tmp_path, env={"DAL_PERSISTENT_URL": store})
    assert moved.returncode == 2 and "lives in this process only" in moved.stderr, moved.stderr


def test_read_only_commands_refuse_the_missing_default_file(tmp_path: Path) -> None:
    result = run_dal("check", cwd=tmp_path)
    assert result.returncode == 2 and "dal.sqlite3 does not exist" in result.stderr, result.stderr
    assert not (tmp_path / "dal.sqlite3").exists()


def test_read_only_commands_read_an_existing_sqlite_file(tmp_path: Path) -> None:
    made = run_dal("migrate", "--persistent", "sqlite:///made.db", cwd=tmp_path)  # creates the file
    assert made.returncode == 0, made.stderr
    assert (tmp_path / "made.db").is_file()
    for args in (["check"], ["dump"], ["stats"]):
        result = run_dal(*args, "--persistent", "sqlite:///made.db", cwd=tmp_path)
        assert result.returncode == 0, (args, result.stderr)
    copied = run_dal("copy", "sqlite:///made.db", "sqlite:///copy.db", cwd=tmp_path)
    assert copied.returncode == 0, copied.stderr
    assert (tmp_path / "copy.db").is_file()  # a copy's destination may be created


def test_creating_commands_refuse_a_missing_directory(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such" / "x.db"
    result = run_dal("migrate", "--persistent", f"sqlite:///{missing}", cwd=tmp_path)
    assert result.returncode == 2 and "does not exist; create it" in result.stderr, result.stderr
    assert not (tmp_path / "no").exists()


def test_a_password_with_a_slash_is_never_printed(tmp_path: Path) -> None:
    for args in (["check", "--persistent", "etcd://root:s3cr/ET9@127.0.0.1:2379"],
                 ["dump", "--persistent", "etcd://127.0.0.1:2379?timeout=5;password=s3crET9"],
                 ["copy", "etcd://root:s3cr?ET9@127.0.0.1:2379", "memory://"]):
        result = run_dal(*args, cwd=tmp_path)
        assert result.returncode == 2 and result.stderr.startswith("error: "), result.stderr
        assert "s3cr" not in result.stdout + result.stderr and "ET9" not in result.stdout + result.stderr


#: the loader the prefetchers below run: unlocked, so that only the queue's claims keep two processes
#: from computing one dynamic; each process's first loader waits (30 s at most) until the other
#: process runs one too, so that both have listed the queue and claim while the first items are computed
TOTE_HYBRIDS = """import os, time
from dal import DataObject, Dynamic, Property


class Tote(DataObject):
    __properties = [Property('name', str)]
    __dynamics = [Dynamic('load', int, 600, locked=False)]

    def _load(self):
        calls = os.environ['DAL_TEST_CALLS']
        with open(calls + '.pids', 'a') as pids:
            pids.write(f'{os.getpid()}\\n')
        deadline = time.monotonic() + 30
        while len(set(open(calls + '.pids').read().split())) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        with open(calls, 'a') as called:
            called.write(self.guid + '\\n')
        return len(self.name)
"""


@pytest.mark.memcached
def test_cache_queue_and_prefetch_across_processes_run_each_loader_once(
        tmp_path: Path, memcached_server: Any) -> None:
    """`dal cache`: queue 50 dynamics, prefetch them in two concurrent processes of 4 workers each;
    every loader ran once (counted in a file both append to), though each process listed the whole
    queue before either computed one (TOTE_HYBRIDS); ls, rm, prune and clean report."""
    (tmp_path / "cli_cache_hybrids.py").write_text(TOTE_HYBRIDS)
    stores = {"DAL_PERSISTENT_URL": f"sqlite:///{tmp_path / 'c.sqlite3'}", "DAL_NAMESPACE": "clicache",
              "DAL_VOLATILE_URL": memcached_server.url, "DAL_HYBRIDS": "cli_cache_hybrids",
              "DAL_TEST_CALLS": str(tmp_path / "calls")}
    script = ("import dal, cli_cache_hybrids as h\ndal.configure()\n"
              "[h.Tote(data={'name': f't{i}'}).save() for i in range(50)]\n")
    subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env={**os.environ, **stores}, check=True)
    queued = run_dal("cache", "queue", "tote.load", cwd=tmp_path, env=stores)
    assert queued.returncode == 0 and "queued 50 dynamics" in queued.stdout, queued.stderr
    again = run_dal("cache", "queue", "tote.load", "--where", "name=t1", cwd=tmp_path, env=stores)
    assert "queued 0 dynamics" in again.stdout
    environment = {k: v for k, v in os.environ.items() if not k.startswith("DAL_")} | stores
    runs = [subprocess.Popen([sys.executable, "-m", "dal", "cache", "prefetch", "--workers", "4"],
                             cwd=tmp_path, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
            for _ in range(2)]
    outputs = [run.communicate(timeout=120) for run in runs]
    assert all(run.returncode == 0 for run in runs), outputs
    assert "prefetch [" in outputs[0][1] or "prefetch [" in outputs[1][1]  # the progress bar
    calls = (tmp_path / "calls").read_text().split()
    assert len(calls) == 50 and len(set(calls)) == 50, calls  # each loader ran once, across both processes
    assert len(set((tmp_path / "calls.pids").read_text().split())) == 2  # both computed: they overlapped
    listed = run_dal("cache", "queue", "--list", cwd=tmp_path, env=stores)
    assert "0 queued" in listed.stdout
    ls = run_dal("cache", "ls", "--kind", "dynamic", "--sort", "size", "--limit", "3",
                 cwd=tmp_path, env=stores)
    assert ls.returncode == 0 and ls.stdout.count("dynamic  tote") == 3, ls.stdout + ls.stderr
    # (the journal's sweeps may redeliver the creating process's invalidations meanwhile: count first)
    listed_all = run_dal("cache", "ls", "--kind", "dynamic", "--hybrid", "tote", cwd=tmp_path, env=stores)
    count = int(re.findall(r"(\d+) entries, \d+ bytes", listed_all.stdout)[-1])
    assert count >= 45
    removed = run_dal("cache", "rm", "--hybrid", "tote", "--dynamic", "load", cwd=tmp_path, env=stores)
    assert f"deleted {count} entries" in removed.stdout, removed.stdout + removed.stderr
    pruned = run_dal("cache", "prune", "--max-size", "0", cwd=tmp_path, env=stores)
    assert re.search(r"pruned \d+ entries, \d+ bytes; \d+ bytes cached", pruned.stdout), pruned.stdout
    left = run_dal("cache", "ls", "--kind", "object", cwd=tmp_path, env=stores)
    assert "0 entries, 0 bytes" in left.stdout  # only published statistics remain, never pruned
    cleaned = run_dal("cache", "clean", "--stall-time", "5", cwd=tmp_path, env=stores)
    assert "cleaned 0 stalled locks and leases" in cleaned.stdout
    bad = run_dal("cache", "rm", cwd=tmp_path, env=stores)
    assert bad.returncode == 2 and "say what to delete" in bad.stderr
