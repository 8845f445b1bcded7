"""The change tokens of a commit counter (:mod:`dal.backends.tokens`), against a brute-force model.

SQLite and Redis both count commits with one counter and report, at each look, whether another
client committed since the last: a local cache serves its entries only while the token stands, so a
missed foreign commit would serve a stale value, and an own commit taken for a foreign one would
needlessly empty the cache.
"""

from __future__ import annotations

import os

from harness import exit_code_of
from hypothesis import example, given
from hypothesis import strategies as st

from dal.backends.tokens import OWN_LIMIT, ChangeTokens

EVENTS = st.lists(st.sampled_from(["ours", "theirs", "look"]), max_size=60)


def look(tokens: ChangeTokens, counter: int) -> int:
    """One look, read at once: its ticket, then the counter."""
    return tokens.token(counter, tokens.ticket())


@given(EVENTS)
def test_a_look_moves_the_token_exactly_when_another_client_committed(events: list[str]) -> None:
    tokens = ChangeTokens()
    counter = 0
    last = look(tokens, counter)  # the first look always reports a change: nothing was known before
    assert last == 1
    foreign = False
    for event in events:
        if event == "look":
            token = look(tokens, counter)
            assert (token != last) == foreign, (events, token, last)
            last, foreign = token, False
        else:
            counter += 1
            if event == "ours":
                tokens.committed(counter)
            else:
                foreign = True


HISTORY = st.lists(st.one_of(st.sampled_from(["ours", "theirs", "start"]), st.integers(0, 5)), max_size=80)


@given(HISTORY)
@example(["start", "theirs", "start", 1, 0])  # the earlier look, applied last, is given the newer token
@example(["start", "start", "theirs", "start", 2, 0, 0])
def test_looks_applied_out_of_order_never_hide_a_foreign_commit(history: list[str | int]) -> None:
    """Threads start looks (a ticket, then the counter, at once) in one order and reach the lock in
    another (an integer: the pending look applied next). A look that began after another client's
    commit returns a token no look returned before that commit; with only our own commits, the
    token never moves. (A look that reads after a look with a later ticket: the test below.)"""
    tokens = ChangeTokens()
    counter = 0
    base = look(tokens, counter)
    returned: list[int] = [base]  # every token handed out so far, in time order
    before_commit: list[int] = []  # per foreign commit: the highest token handed out before it
    pending: list[tuple[int, int, int]] = []  # ticket, counter read, foreign commits before it
    for event in history:
        if event in ("ours", "theirs"):
            counter += 1
            if event == "ours":
                tokens.committed(counter)
            else:
                before_commit.append(max(returned))
        elif event == "start":
            pending.append((tokens.ticket(), counter, len(before_commit)))
        elif pending:
            ticket, read, foreign_before = pending.pop(int(event) % len(pending))
            token = tokens.token(read, ticket)
            if foreign_before:
                assert token > before_commit[foreign_before - 1], history
            elif not before_commit:
                assert token == base, history  # ours only so far (a later foreign one may show)
            returned.append(token)


def test_a_look_that_began_before_one_applied_changes_nothing() -> None:
    """Two threads: the one with the older ticket read less and reached the lock second."""
    tokens = ChangeTokens()
    first = look(tokens, 10)
    tokens.committed(11)
    early, late = tokens.ticket(), tokens.ticket()
    assert tokens.token(11, late) == first  # our own commit
    assert tokens.token(10, early) == first  # read before the look at 11, locked after it
    assert look(tokens, 11) == first
    tokens.committed(12)
    assert look(tokens, 13) != first  # 13 is another client's


def test_a_look_that_read_after_a_later_ticket_reports_a_needless_change_never_a_missed_one() -> None:
    """Thread A takes its ticket, thread B takes one and reads 10, our commit makes 11, A reads 11
    and applies, then B applies its 10: lower than the last counter, so a change (as for emptied
    data). The safe direction: a local cache flushed for nothing, no stale read."""
    tokens = ChangeTokens()
    first = look(tokens, 10)
    a, b = tokens.ticket(), tokens.ticket()
    tokens.committed(11)
    assert tokens.token(11, a) == first
    assert tokens.token(10, b) != first


def test_a_commit_answered_after_a_look_that_saw_it_is_not_counted_twice() -> None:
    tokens = ChangeTokens()
    first = look(tokens, 5)
    # another client's commit 6 seen, ours (7) seen by the look before its answer was recorded
    assert look(tokens, 7) != first
    second = tokens.changes
    tokens.committed(7)
    assert look(tokens, 7) == second
    assert tokens.own == 0  # a revision at or below a look is dropped: the record stays small


def test_an_overflowing_record_reports_a_change_rather_than_miss_one() -> None:
    tokens = ChangeTokens()
    before = look(tokens, 0)
    for revision in range(1, OWN_LIMIT + 2):
        tokens.committed(revision)
    assert tokens.own <= OWN_LIMIT
    assert look(tokens, OWN_LIMIT + 1) != before  # forgotten: it cannot tell ours from theirs


def test_a_counter_that_went_back_is_a_change() -> None:
    """An emptied database (Redis FLUSHDB, a replaced SQLite file) starts its counter again: a look
    that began after the last one and reads less sees data that is not what was cached."""
    tokens = ChangeTokens()
    look(tokens, 10)
    before = tokens.changes
    tokens.committed(11)
    assert look(tokens, 3) != before
    assert tokens.own == 0
    after = tokens.changes
    assert look(tokens, 3) == after  # from there on, counted as before


def test_a_forked_child_never_inherits_a_held_lock() -> None:
    tokens = ChangeTokens()
    look(tokens, 1)
    assert tokens._lock.acquire(timeout=5)  # as another thread of the parent would, at fork() time
    try:
        pid = os.fork()
        if pid == 0:
            os._exit(0 if look(tokens, 2) == 2 else 1)
    finally:
        tokens._lock.release()
    assert exit_code_of(pid, "the child hung on the lock it inherited") == 0
