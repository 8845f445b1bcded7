"""Running the numbered migration steps of ``dal migrate``: each exactly once, resumable."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING

from dal.backends.base import Check, Delete, DeletePrefix, Entry, Exists, Op, Put, Revision
from dal.model.registry import family
from dal.objects import schema
from dal.objects.transaction import Document, encode
from dal.tools.migrate.migrations import Migration, MigrationError, Operation, Step
from dal.tools.migrate.run import ATTEMPTS, CompleteKeys, MigrationRun, decode_doc, step_document
from dal.values import same

if TYPE_CHECKING:
    from dal.model.meta import HybridMeta


class StepRunner(MigrationRun):
    """The steps of a run: each object rewritten in one commit that also moves the step's cursor."""

    def _done_steps(self) -> set[int]:
        prefix = self.keys.migration_steps()
        return {int(key[len(prefix):]) for key, _ in self._scan(prefix)}

    def _run_step(self, declared: Migration, step: Step) -> None:
        changed = 0
        for meta in step.hybrids():
            changed += self._run_step_on(step, meta)
        key = self.keys.migration_step(step.number)
        record = json.dumps({"number": step.number, "description": declared.description,
                             "completed": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
                            sort_keys=True).encode()
        result = self._commit([Revision(key, 0)],
                              [Put(key, record), DeletePrefix(self.keys.migration_cursors(step.number))])
        if not result:
            raise MigrationError(f"step {step.number} was recorded as done by another dal migrate run "
                                 "meanwhile; run only one dal migrate at a time")
        self.report.steps.append(step.number)
        self.say(f"step {step.number} ({declared.description}): {changed} object{'s' * (changed != 1)} "
                 "rewritten")

    def _run_step_on(self, step: Step, meta: HybridMeta) -> int:
        operations = step.operations_for(meta)
        cursor_key = self.keys.migration_cursor(step.number, meta.name)
        cursor = self.context.persistent.get(cursor_key)
        cursor_rev = cursor.revision if cursor is not None else 0
        start = cursor.value.decode() if cursor is not None else None
        # each kind of key on its own: an index complete follows the step though its unique keys are not
        ready = CompleteKeys.of(schema.read_record(self.context, meta.name), meta)
        prefix = self.keys.docs(meta.name)
        changed = 0
        with self.progress(self._count(prefix, start), f"step {step.number} {meta.name}") as meter:
            for doc_key, entry in self._scan(prefix, start):
                cursor_rev, wrote = self._step_object(step, operations, meta, ready, doc_key, entry,
                                                      cursor_key, cursor_rev)
                if wrote:
                    changed += 1
                    self._changed(meta.name, doc_key.rsplit("/", 1)[1], by_step=True)
                meter.advance()
        return changed

    def _step_object(self, step: Step, operations: list[Operation], meta: HybridMeta, ready: CompleteKeys,
                     doc_key: str, entry: Entry, cursor_key: str, cursor_rev: int) -> tuple[int, bool]:
        guid = doc_key.rsplit("/", 1)[1]
        current: Entry | None = entry
        for _ in range(ATTEMPTS):
            if current is None:
                return cursor_rev, False  # deleted meanwhile
            before = decode_doc(meta, guid, current.value)
            after, old_links = step_document(step.number, operations, meta, guid, before)
            if after is None:
                return cursor_rev, False
            # the cursor (absent: rev 0) alone does not tell a step not begun from one another run
            # finished meanwhile, which deletes its cursors: the step must not be recorded done either
            checks: list[Check] = [Revision(doc_key, current.revision), Revision(cursor_key, cursor_rev),
                                   Revision(self.keys.migration_step(step.number), 0)]
            ops: list[Op] = [Put(doc_key, encode(after))]
            ops += [Delete(self.keys.link(link.target, link.target_guid, meta.name, link.relation, guid))
                    for link in old_links]
            extra_checks, extra_ops = self._key_changes(meta, guid, before, after, ready)
            result = self._commit_result(checks + extra_checks,
                                         ops + extra_ops + [Put(cursor_key, doc_key.encode())],
                                         self._invalidation(meta, guid, before, after))
            if result.ok:
                return result.revision, True
            if 2 in result.failed:
                raise MigrationError(f"step {step.number}: another dal migrate ran this step meanwhile "
                                     "and recorded it done; run only one dal migrate at a time")
            if 1 in result.failed:
                raise MigrationError(
                    f"step {step.number}: another dal migrate is running this step; let it finish")
            if 0 not in result.failed:
                raise self._refused(step, meta, guid, after, checks + extra_checks, result.failed)
            current = result.current.get(doc_key)
        raise MigrationError(f"step {step.number}: {meta.cls.__name__} {guid} kept changing; run dal migrate "
                             "again")

    def _refused(self, step: Step, meta: HybridMeta, guid: str, after: Document, checks: list[Check],
                 failed: tuple[int, ...]) -> MigrationError:
        return MigrationError(f"step {step.number} cannot rewrite {meta.cls.__name__} {guid}: "
                              f"{self._explain(checks, failed, after)}; fix that object and run dal migrate "
                              "again (steps resume where they stopped)")

    def _explain(self, checks: list[Check], failed: tuple[int, ...], after: Document) -> str:
        """Say why the checks at ``failed`` refuse a rewrite to ``after``."""
        reasons = []
        for index in failed:
            check = checks[index]
            if isinstance(check, Exists):
                target, guid = check.key.rsplit("/", 2)[-2:]
                reasons.append(f"it would link to {target} {guid}, which is not stored")
            elif isinstance(check, Revision) and check.key.startswith(f"{self.keys.root}u/"):
                field_name = check.key.rsplit("/", 2)[-2]
                reasons.append(f"another object already holds the unique {field_name} "
                               f"{after.get(field_name)!r}")
            elif isinstance(check, Revision) and check.key.startswith(f"{self.keys.root}r/"):
                source, relation, target = check.key[len(self.keys.root) + 2:].split("/", 2)
                reasons.append(f"another {source} already points at {target} through the one-to-one "
                               f"{relation}")
        return "; ".join(reasons) or "a check failed"

    def _simulate_step(self, step: Step, earlier: list[Step], held: dict[str, bool]) -> None:
        """(Dry runs) Evaluate the checks each rewrite by ``step`` would commit with, in the run's order.

        The run rewrites, step by step and hybrid by hybrid, each document in key order; a rewrite
        fails when a unique value or one-to-one target it takes is held (by a stored key, or by an
        earlier rewrite of the run) or a target it links to is not stored. ``held`` carries the
        keys earlier rewrites wrote or deleted (only ``u/`` and ``r/`` keys: the ones checked).
        """
        checked = (f"{self.keys.root}u/", f"{self.keys.root}r/")
        for meta in step.hybrids():
            if not meta.unique and not meta.relations:
                continue  # a rewrite of it commits with no check another object's keys could fail
            operations = step.operations_for(meta)
            # an earlier step a stopped run left midway has already rewritten the documents up to its cursor
            before_ops = [(s.number, ops, self._step_cursor(s.number, meta)) for s in earlier
                          if (ops := s.operations_for(meta))]
            ready = CompleteKeys.of(schema.read_record(self.context, meta.name), meta)
            prefix = self.keys.docs(meta.name)
            for batch in self._batches(prefix, self._step_cursor(step.number, meta) or None):
                rewrites = []
                for doc_key, entry in batch:
                    guid = doc_key[len(prefix):]
                    before = decode_doc(meta, guid, entry.value)
                    for number, ops, done in before_ops:  # as the earlier steps left it
                        if doc_key > done:
                            before = step_document(number, ops, meta, guid, before)[0] or before
                    after, _ = step_document(step.number, operations, meta, guid, before)
                    if after is not None:
                        rewrites.append((guid, after, *self._key_changes(meta, guid, before, after, ready)))
                unknown = {check.key for _, _, checks, _ in rewrites for check in checks
                           if isinstance(check, (Exists, Revision))} - held.keys()
                stored = self.context.persistent.get_many(sorted(unknown)) if unknown else {}
                held.update((key, key in stored) for key in unknown)
                for guid, after, checks, writes in rewrites:
                    # _key_changes checks only Exists (a target stored) and Revision(key, 0) (a key free)
                    failed = tuple(index for index, check in enumerate(checks)
                                   if isinstance(check, (Exists, Revision))
                                   and held[check.key] != isinstance(check, Exists))
                    if failed:
                        raise self._refused(step, meta, guid, after, checks, failed)
                    held.update((op.key, isinstance(op, Put)) for op in writes
                                if isinstance(op, (Put, Delete)) and op.key.startswith(checked))

    def _key_changes(self, meta: HybridMeta, guid: str, before: Document, after: Document,
                     ready: CompleteKeys) -> tuple[list[Check], list[Op]]:
        """Keep the complete keys (each kind as ``ready`` lists it) and the links right when a step
        changes a document."""
        keys = self.keys
        checks: list[Check] = []
        ops: list[Op] = []
        for prop in meta.indexed:
            old, new = before.get(prop.name), after.get(prop.name)
            if prop.name in ready.indexed and not same(old, new):
                ops += [Delete(keys.index(meta.name, prop.name, old, guid)),
                        Put(keys.index(meta.name, prop.name, new, guid), b"")]
        for prop in meta.unique:
            old, new = before.get(prop.name), after.get(prop.name)
            if prop.name not in ready.unique or same(old, new):
                continue
            if old is not None:
                ops.append(Delete(keys.unique(meta.name, prop.name, old)))
            if new is not None:
                checks.append(Revision(keys.unique(meta.name, prop.name, new), 0))
                ops.append(Put(keys.unique(meta.name, prop.name, new), guid.encode()))
        for relation in meta.relations.values():
            old, new = before.get(relation.guid_field), after.get(relation.guid_field)
            if relation.target is None or same(old, new):
                continue
            target = relation.target._meta.name
            keyed = relation.onetoone and relation.name in ready.onetoone  # its one-to-one keys are complete
            if old is not None:
                ops.append(Delete(keys.link(target, old, meta.name, relation.name, guid)))
                if keyed:
                    ops.append(Delete(keys.onetoone(meta.name, relation.name, old)))
            if new is not None:
                if new != guid or target != meta.name:  # only the object itself needs no check
                    checks.append(Exists(keys.doc(target, new)))
                ops.append(Put(keys.link(target, new, meta.name, relation.name, guid), b""))
                if keyed:
                    checks += [Revision(keys.onetoone(member.owner._meta.name, member.name, new), 0)
                               for member in family(relation) if member.owner is not None]
                    ops.append(Put(keys.onetoone(meta.name, relation.name, new), guid.encode()))
        return checks, ops

