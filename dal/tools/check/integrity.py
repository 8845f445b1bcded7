"""Integrity of a namespace: documents against the model, and every derived key against its document.

A save writes a document and its unique keys, index entries and relation links in one
transaction, so they cannot drift apart through dal. They can through everything else: a
restored backup of part of a store, a hand edit, a model changed under old data, a bug.
:func:`check` reads the whole namespace and reports each disagreement as a
:class:`Problem`; with ``repair=True`` it fixes what is safe to fix, each fix one
conditional commit guarded by the revisions it was derived from, so a writer that changed
the same data meanwhile makes the fix fail instead of being overwritten.

What a document should own is computed exactly as :func:`dal.objects.transaction.plan_write`
computes it from a stored document, so a repaired namespace is what dal itself would have
written. :func:`~dal.model.validation.validate_document` checks each document, as ``dal load`` does.

The check is split by what it holds: :mod:`~dal.tools.check.problems` (what is reported),
:mod:`~dal.tools.check.state`, :mod:`~dal.tools.check.documents`, :mod:`~dal.tools.check.derived`
and :mod:`~dal.tools.check.metadata` (finding problems), :mod:`~dal.tools.check.repair` (fixing them).
"""

from __future__ import annotations

from collections.abc import Callable

from dal.backends.base import Entry
from dal.config import Context
from dal.tools.check.derived import DerivedKeyPasses
from dal.tools.check.documents import DocumentPass
from dal.tools.check.metadata import MetadataPass
from dal.tools.check.problems import MIGRATE, REPAIRABLE, Fix, Kind, Problem, Report
from dal.tools.check.repair import apply_fixes

__all__ = ["MIGRATE", "PHASES", "REPAIRABLE", "Fix", "Kind", "Problem", "Report", "apply_fixes", "check"]

#: the parts of a check, in order; ``progress`` is told each as it finishes
PHASES = ("documents", "unique keys", "index entries", "links", "one-to-one keys",
          "schema records and queued dynamics")


def check(context: Context, *, repair: bool = False,
          progress: Callable[[str], None] | None = None) -> Report:
    """Check the namespace of ``context``; with ``repair``, fix what is safe to (see :func:`apply_fixes`).

    ``progress``, if given, is called with each of :data:`PHASES` as it is done, then with
    ``"repair"`` after the fixes.
    """
    report = _Checker(context, progress or (lambda phase: None)).run()
    if repair:
        apply_fixes(context, report)
        if progress is not None:
            progress("repair")
    return report


class _Checker(DocumentPass, DerivedKeyPasses, MetadataPass):
    """One pass over documents, then unique keys, index entries, links, one-to-one keys, and the
    schema records and queued dynamics.

    Each pass reads its part of the namespace in key order.
    """

    def run(self) -> Report:
        # per pass: the area scanned, what each key is checked for, what is left over after it
        passes: tuple[tuple[str, Callable[[str, str, Entry], None], Callable[[], None]], ...] = (
            ("o", self.document, self.documents_read), ("u", self.unique_key, self.missing_unique),
            ("i", self.index_key, self.missing_index), ("l", self.link_key, self.missing_links),
            ("r", self.onetoone_key, self.missing_onetoone))
        for (letter, visit, finish), phase in zip(passes, PHASES[:-1], strict=True):
            for key, rest, entry in self.scan(letter):
                self.report.keys += letter != "o"  # documents are counted per hybrid instead
                visit(key, rest, entry)
            finish()
            self.progress(phase)
        self.metadata()  # after the documents: what names a hybrid with documents is left to a person
        self.progress(PHASES[-1])
        return self.report
