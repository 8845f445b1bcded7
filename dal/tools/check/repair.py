"""Repairing what a check found: each fix one conditional commit, guarded by what it was derived from."""

from __future__ import annotations

from dal.backends.base import Delete
from dal.config import Context
from dal.tools.check.problems import Problem, Report


def apply_fixes(context: Context, report: Report) -> None:
    """Commit the fix of every repairable problem of ``report``, each on its own, conditionally.

    A fix whose data changed since the check (its revision checks fail) writes nothing and
    lands in ``report.conflicted``; the others in ``report.fixed``.
    """
    report.repaired = True
    fixable = [problem for problem in report.problems if problem.fix is not None]
    # stale keys go first, so a value they held is free before a missing key takes it
    fixable.sort(key=_puts_last)
    for problem in fixable:
        assert problem.fix is not None
        result = context.commit(problem.fix.checks, problem.fix.ops, problem.fix.invalidate)
        (report.fixed if result.ok else report.conflicted).append(problem)


def _puts_last(problem: Problem) -> bool:
    return problem.fix is not None and not any(isinstance(op, Delete) for op in problem.fix.ops)
