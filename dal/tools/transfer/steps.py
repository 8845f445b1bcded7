"""The migration steps a namespace went through, carried by dumps and copies with its documents.

``dal migrate`` runs each numbered step once per store: it records a finished step at
``m/steps/<number>`` and, while a step runs, the last document it rewrote in each hybrid at
``m/cursor/<number>/<hybrid>``. Documents moved without those records would go through their
steps again on the new store (a ``size * 1024`` applied twice). So a dump carries them in its
``"steps"`` field (a dump written before dal carried them has none, and loads as it did: no step
recorded), a copy reads them from its source, and a load writes them in the commit of its first
batch: the destination never holds documents of the dump without the record of their steps.

A destination that records other steps than the dump is refused before anything is written:
its documents and the dump's would need different steps. It takes the dump's steps only when
it holds no document the load does not write: when it holds none at all and no step records
either, or, with ``replace``, when the load overwrites every document it holds.

Schema records (``m/schema/<hybrid>``) are not carried: they say which of the destination's
own keys are complete, and a load builds every key of what it writes (it records a hybrid it
loads into while empty, as a save does; ``dal migrate`` records the others).
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from dal.backends.base import Check, Delete, Op, PrefixEmpty, PrefixUnchanged, Put, Revision
from dal.backends.paging import scan_all, scan_batches
from dal.config import Context
from dal.exceptions import BackendError, DalError
from dal.structures import GUID_RULE, is_guid

#: keys read per round trip when looking over the destination's documents
READ_BATCH = 500


class MigrationStepsError(DalError):
    """The destination records other migration steps than the data loaded into it went through."""


@dataclass(frozen=True)
class Steps:
    """What ``dal migrate`` recorded of a namespace's numbered steps."""

    #: finished steps: number -> its record (``number``, ``description``, ``completed``)
    done: dict[int, dict[str, Any]] = field(default_factory=dict)
    #: steps a stopped (or running) ``dal migrate`` left midway: (number, hybrid) -> the guid of the
    #: last document it rewrote there (those after it are still to do)
    midway: dict[tuple[int, str], str] = field(default_factory=dict)

    def select(self, names: Collection[str]) -> Steps:
        """Return these steps as they concern the hybrids ``names`` (finished ones concern every hybrid)."""
        return Steps(self.done, {at: guid for at, guid in self.midway.items() if at[1] in names})

    def same(self, other: Steps) -> bool:
        """Tell whether both name the same steps done and midway (records written at other times too)."""
        return self.done.keys() == other.done.keys() and self.midway == other.midway

    def to_json(self) -> dict[str, Any]:
        return {"done": [self.done[number] for number in sorted(self.done)],
                "midway": [{"number": number, "hybrid": hybrid, "after": guid}
                           for (number, hybrid), guid in sorted(self.midway.items())]}

    def describe(self) -> str:
        numbers = sorted(self.done)
        parts = [f"step{'s' * (len(numbers) > 1)} {', '.join(map(str, numbers))} done"] if numbers else []
        parts += [f"step {number} midway in {hybrid}" for number, hybrid in sorted(self.midway)]
        return "; ".join(parts) or "no migration step"


def read_steps(context: Context, only: Collection[str] | None = None) -> Steps:
    """Return the steps the namespace of ``context`` records (midway: in the hybrids ``only`` names)."""
    steps = stored_steps(context)[0]
    return steps if only is None else steps.select(only)


def settled(context: Context, before: Steps, only: Collection[str] | None = None) -> Steps:
    """Return the steps recorded now, the ones read ``before`` the documents; refuse them changed."""
    after = read_steps(context, only)
    if after != before:
        raise BackendError(f"dal migrate ran meanwhile in namespace {context.namespace!r} (before: "
                           f"{before.describe()}; now: {after.describe()}), so the documents read may be "
                           "from before or after a step; read them again once it has finished")
    return after


def stored_steps(context: Context) -> tuple[Steps, dict[str, int]]:
    """Return the steps the namespace records and the revision of every key recording them."""
    keys = context.keys
    revisions: dict[str, int] = {}
    done: dict[int, dict[str, Any]] = {}
    midway: dict[tuple[int, str], str] = {}
    prefix = keys.migration_steps()
    for key, entry in scan_all(context.persistent, prefix):
        revisions[key] = entry.revision
        number = _number(key[len(prefix):], key)
        try:
            record = json.loads(entry.value)
        except ValueError:
            record = None
        done[number] = {**(record if isinstance(record, dict) else {}), "number": number}
    prefix = keys.migration_cursors()
    for key, entry in scan_all(context.persistent, prefix):
        revisions[key] = entry.revision
        number_text, _, hybrid = key[len(prefix):].partition("/")
        number = _number(number_text, key)
        value = entry.value.decode(errors="replace")
        guid = value[len(keys.docs(hybrid)):]
        if not hybrid or not value.startswith(keys.docs(hybrid)) or not is_guid(guid):
            raise BackendError(f"{key} holds {value!r}, not the key of a {hybrid} document: it was not "
                               "written by dal migrate; finish the step with dal migrate, or delete the key")
        midway[number, hybrid] = guid
    return Steps(done, midway), revisions


def _number(text: str, key: str) -> int:
    if not (text.isascii() and text.isdigit() and int(text) >= 1):
        raise BackendError(f"{key} is not a migration step's key dal migrate wrote (it names no step "
                           "number); delete it")
    return int(text)


def parse_steps(raw: Any, problems: list[str]) -> Steps:
    """Check a dump's ``"steps"`` and return them; add what is wrong to ``problems``."""
    shape = '"steps" must be {"done": [{"number": 1, ...}, ...], "midway": [{"number": 2, "hybrid": ..., ' \
            '"after": guid}, ...]}'
    if not isinstance(raw, dict) or set(raw) != {"done", "midway"} or not isinstance(raw["done"], list) \
            or not isinstance(raw["midway"], list):
        problems.append(f"{shape}, not {_short(raw)}")
        return Steps()
    done: dict[int, dict[str, Any]] = {}
    for position, record in enumerate(raw["done"]):
        number = record.get("number") if isinstance(record, dict) else None
        if not isinstance(number, int) or not _step_number(number):
            problems.append(f'steps.done[{position}] must be an object whose "number" is a step number (an '
                            f"int >= 1), not {_short(record)}")
        elif number in done:
            problems.append(f"steps.done[{position}]: step {number} appears twice")
        else:
            done[number] = record
    midway: dict[tuple[int, str], str] = {}
    for position, record in enumerate(raw["midway"]):
        where = f"steps.midway[{position}]"
        if not isinstance(record, dict) or set(record) != {"number", "hybrid", "after"} \
                or not _step_number(record["number"]) or not isinstance(record["hybrid"], str) \
                or not record["hybrid"] or "/" in record["hybrid"]:
            problems.append(f'{where} must be {{"number": step number, "hybrid": name, "after": guid}}, not '
                            f"{_short(record)}")
        elif not is_guid(record["after"]):
            problems.append(f"{where}: after {record['after']!r} must be {GUID_RULE}")
        elif record["number"] in done or (record["number"], record["hybrid"]) in midway:
            problems.append(f"{where}: step {record['number']} is done, or midway in {record['hybrid']}, "
                            "twice")
        else:
            midway[record["number"], record["hybrid"]] = record["after"]
    return Steps(done, midway)


def _step_number(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


# --- writing them where a load writes --------------------------------------------------------


def plan_steps(context: Context, steps: Steps | None, hybrids: Collection[str], written: Collection[str],
               replace: bool, source: str, command: str = "load") -> tuple[list[Check], list[Op]]:
    """Return the checks and operations that make the namespace record ``steps`` (none: they agree).

    ``hybrids``: those the load writes (the steps midway elsewhere are not its business);
    ``written``: the document keys it writes. Raise MigrationStepsError when the namespace
    records other steps and holds documents the load does not overwrite (or, without
    ``replace``, records any). The checks make the commit fail if the recorded steps, or the
    documents that allowed taking the dump's, changed since.
    """
    if steps is None:  # a dump written before dumps carried steps: nothing known, nothing written
        return [], []
    keys = context.keys
    steps = steps.select(hybrids)
    every, revisions = stored_steps(context)
    stored = every.select(hybrids)
    revisions = {key: revisions[key] for key in _records(context, stored)}
    if stored.same(steps):
        return [], []
    documents = f"{keys.root}o/"
    guard: Check
    if not revisions and not context.persistent.scan(documents, limit=1):
        guard = PrefixEmpty(documents)  # a fresh namespace: nothing there went through any step
    else:
        kept = _kept(context, documents, written) if replace else None
        if kept is None or kept[0]:
            raise MigrationStepsError(_mismatch(context, stored, steps, source, command,
                                                kept[0] if kept else None))
        guard = PrefixUnchanged(documents, kept[1])
    wanted = _records(context, steps)
    checks: list[Check] = [guard]
    checks += [Revision(key, revisions.get(key, 0)) for key in sorted(set(wanted) | set(revisions))]
    ops: list[Op] = [Delete(key) for key in sorted(set(revisions) - set(wanted))]
    ops += [Put(key, value) for key, value in sorted(wanted.items())]
    return checks, ops


def _records(context: Context, steps: Steps) -> dict[str, bytes]:
    """Return the keys and values recording ``steps``, as dal migrate writes them."""
    keys = context.keys
    records = {keys.migration_step(number): json.dumps(record, sort_keys=True).encode()
               for number, record in steps.done.items()}
    records.update({keys.migration_cursor(number, hybrid): keys.doc(hybrid, guid).encode()
                    for (number, hybrid), guid in steps.midway.items()})
    return records


def _kept(context: Context, prefix: str, written: Collection[str]) -> tuple[str, int]:
    """Return a stored document key the load does not write ('' for none), and the newest revision seen."""
    newest = 0
    for batch in scan_batches(context.persistent, prefix, READ_BATCH):
        for key, entry in batch:
            if key not in written:
                return key, newest
            newest = max(newest, entry.revision)
    return "", newest


def _mismatch(context: Context, stored: Steps, steps: Steps, source: str, command: str,
              kept: str | None) -> str:
    where = f"namespace {context.namespace!r} of {context.persistent_url}"
    if kept is None:
        advice = (f"{command} into an empty namespace, or pass --replace when the {command} overwrites every "
                  f"object stored there (the namespace then records the steps of {source})")
    else:
        advice = (f"{command} into an empty namespace: --replace records the steps of {source} only when the "
                  f"{command} overwrites every object stored there, and it does not write {kept}")
    return (f"{where} records {stored.describe()}, but the documents of {source} went through "
            f"{steps.describe()}: `dal migrate` would run a step again on some of them, or never on others "
            f"(nothing was written); {advice}")


def steps_changed(context: Context, command: str) -> DalError:
    """The error of a commit whose step checks failed: dal migrate, or another writer, came in between."""
    return MigrationStepsError(f"the migration steps or documents of namespace {context.namespace!r} changed "
                               f"while the {command} started writing (a dal migrate, or another writer?); "
                               f"{command} again when it has finished")
