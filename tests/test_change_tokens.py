"""The change tokens of a commit counter (:mod:`dal.backends.tokens`), against a brute-force model.

SQLite and Redis both count commits with one counter and report, at each look, whether another
client committed since the last: a local cache serves its entries only while the token stands, so a
missed foreign commit would serve a stale value, and an own commit taken for a foreign one would
needlessly empty the cache.
"""

from __future__ import annotations

import os
import signal
import time

from hypothesis import given
from hypothesis import strategies as st

from dal.backends.tokens import OWN_LIMIT, ChangeTokens

EVENTS = st.lists(st.sampled_from(["ours", "theirs", "look"]), max_size=60)


@given(EVENTS, st.booleans())
def test_a_look_moves_the_token_exactly_when_another_client_committed(
        events: list[str], resets: bool) -> None:
    tokens = ChangeTokens(resets=resets)
    counter = 0
    last = tokens.token(counter)  # the first look always reports a change: nothing was known before
    assert last == 1
    foreign = False
    for event in events:
        if event == "look":
            token = tokens.token(counter)
            assert (token != last) == foreign, (events, token, last)
            last, foreign = token, False
        else:
            counter += 1
            if event == "ours":
                tokens.committed(counter)
            else:
                foreign = True


def test_a_commit_answered_after_a_look_that_saw_it_is_not_counted_twice() -> None:
    tokens = ChangeTokens(resets=True)
    first = tokens.token(5)
    # another client's commit 6 seen, ours (7) seen by the look before its answer was recorded
    assert tokens.token(7) != first
    second = tokens.changes
    tokens.committed(7)
    assert tokens.token(7) == second
    assert tokens.own == 0  # a revision at or below a look is dropped: the record stays small


def test_an_overflowing_record_reports_a_change_rather_than_miss_one() -> None:
    tokens = ChangeTokens(resets=True)
    before = tokens.token(0)
    for revision in range(1, OWN_LIMIT + 2):
        tokens.committed(revision)
    assert tokens.own <= OWN_LIMIT
    assert tokens.token(OWN_LIMIT + 1) != before  # forgotten: it cannot tell ours from theirs


def test_a_counter_that_went_back_is_a_change() -> None:
    """An emptied database (Redis FLUSHDB, a replaced SQLite file) starts its counter again."""
    tokens = ChangeTokens(resets=True)
    tokens.token(10)
    before = tokens.changes
    tokens.committed(11)
    assert tokens.token(3) != before
    assert tokens.own == 0


def test_a_look_that_reached_the_lock_late_is_no_change_where_the_counter_never_goes_back() -> None:
    """SQLite: two threads read the revision, then take the lock in the other order."""
    tokens = ChangeTokens(resets=False)
    first = tokens.token(10)
    tokens.committed(11)
    assert tokens.token(11) == first  # our own commit
    assert tokens.token(10) == first  # read before the look at 11, locked after it
    assert tokens.token(11) == first
    tokens.committed(12)
    assert tokens.token(13) != first  # 13 is another client's


def test_a_forked_child_never_inherits_a_held_lock() -> None:
    tokens = ChangeTokens(resets=False)
    tokens.token(1)
    assert tokens._lock.acquire(timeout=5)  # as another thread of the parent would, at fork() time
    try:
        pid = os.fork()
        if pid == 0:
            os._exit(0 if tokens.token(2) == 2 else 1)
    finally:
        tokens._lock.release()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            assert os.waitstatus_to_exitcode(status) == 0
            return
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    raise AssertionError("the child hung on the lock it inherited")
