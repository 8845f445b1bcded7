"""The voting core of quorum reads (``dal.quorum``), against the confd table and brute-force models."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pymemcache.client.murmur3 import murmur3_32 as pymemcache_murmur3_32

from dal.backends.memcached.client import Rendezvous
from dal.exceptions import ConfigurationError
from dal.quorum import Kind, Outcome, murmur3_32, needed_replies, replicas_for, vote

TABLE = {1: 1, 2: 2, 3: 2, 4: 3, 5: 3, 6: 4, 7: 4, 8: 5}


@pytest.mark.parametrize(("n", "needed"), sorted(TABLE.items()))
def test_needed_replies_is_confds_table(n: int, needed: int) -> None:
    assert needed_replies(n) == needed


def test_needed_replies_is_half_plus_one_beyond() -> None:
    for n in range(5, 1000):
        assert needed_replies(n) == n // 2 + 1
        assert needed_replies(n) > n / 2  # a majority: two quorums always share a replica
    assert all(needed_replies(n) <= needed_replies(n + 1) for n in range(1, 1000))


@pytest.mark.parametrize("bad", [0, -1, 2.0, "3", None, True])
def test_needed_replies_refuses_what_is_not_a_count(bad: object) -> None:
    with pytest.raises(ConfigurationError, match="whole number of at least 1"):
        needed_replies(bad)  # type: ignore[arg-type]


# -- vote --------------------------------------------------------------------------------------

def model(asked: list[str], replies: dict[str, bytes | None], needed: int) -> Outcome:
    """Brute force: try every candidate answer and count the asked servers that gave it."""
    distinct = list(dict.fromkeys(asked))
    answered = [server for server in distinct if server in replies]
    candidates: list[bytes | None] = [None, *{v for v in replies.values() if v is not None}]
    agreeing = {candidate: [s for s in answered if replies[s] == candidate] for candidate in candidates}
    unanimous = [c for c, who in agreeing.items() if who and len(who) == len(answered)]
    unasked = len([server for server in replies if server not in distinct])
    missing = tuple(server for server in distinct if server not in replies)
    if answered and not unanimous:
        return Outcome(Kind.DISAGREE, None, len(answered), unasked, tuple(distinct))
    if len(answered) < needed:
        return Outcome(Kind.SHORT, None, len(answered), unasked, tuple(distinct))
    (agreed,) = unanimous
    assert len(agreeing[agreed]) >= needed  # agreement is counted, not replies
    kind = Kind.MISS if agreed is None else Kind.HIT
    return Outcome(kind, agreed, len(answered), unasked, missing)


SERVERS = [f"10.0.0.{i}:11211" for i in range(1, 9)]
ENTRIES = st.sampled_from([b"S" + b"\x01" * 32 + b"rev 1", b"S" + b"\x02" * 32 + b"rev 2", b""])


#: the servers asked, the replies, the agreement needed
Ballot = tuple[list[str], dict[str, bytes | None], int]


@st.composite
def ballots(draw: st.DrawFn) -> Ballot:
    n = draw(st.integers(1, 6))
    asked = draw(st.lists(st.sampled_from(SERVERS[:6]), min_size=n, max_size=n, unique=True))
    # answering servers: some of the asked (a miss, or one of a few entries), some never asked
    answers = st.one_of(st.none(), ENTRIES)
    replies = draw(st.dictionaries(st.sampled_from(SERVERS), answers, max_size=8))
    needed = draw(st.sampled_from([needed_replies(n), draw(st.integers(1, n))]))
    return asked, replies, needed


@settings(max_examples=500)
@given(ballots())
def test_vote_agrees_with_the_brute_force_model(ballot: Ballot) -> None:
    asked, replies, needed = ballot
    assert vote(asked, replies, needed) == model(asked, replies, needed)


@settings(max_examples=300)
@given(ballots())
def test_a_hit_is_always_agreed_by_a_quorum_of_asked_servers(ballot: Ballot) -> None:
    asked, replies, needed = ballot
    outcome = vote(asked, replies, needed)
    agreeing = [server for server in asked if server in replies and replies[server] == outcome.value]
    if outcome.kind in (Kind.HIT, Kind.MISS):
        assert len(agreeing) >= needed and outcome.replies == len(agreeing)
        assert set(outcome.repair) == set(asked) - set(replies)
    else:
        assert outcome.value is None and outcome.repair == tuple(asked)


A, B, C, D, E = SERVERS[:5]
V1, V2 = b"revision 1", b"revision 2"


@pytest.mark.parametrize(("replies", "kind", "value", "repair"), [
    ({A: V1, B: V1, C: V1}, Kind.HIT, V1, ()),
    ({A: V1, B: V1}, Kind.HIT, V1, (C,)),  # a dead replica, or a tampered entry left out
    ({A: None, B: None, C: None}, Kind.MISS, None, ()),
    ({A: None, C: None}, Kind.MISS, None, (B,)),
    ({A: V1}, Kind.SHORT, None, (A, B, C)),
    ({}, Kind.SHORT, None, (A, B, C)),
    ({A: V1, B: V1, C: None}, Kind.DISAGREE, None, (A, B, C)),  # a value and a miss
    ({A: V1, B: V1, C: V2}, Kind.DISAGREE, None, (A, B, C)),  # two revisions
    ({A: V1, C: V2}, Kind.DISAGREE, None, (A, B, C)),
], ids=["all", "two-of-three", "all-miss", "two-misses", "one", "none", "value-and-miss",
        "two-revisions-outvoted-still-disagree", "two-disagreeing"])
def test_vote_on_three_replicas(replies: dict[str, bytes | None], kind: Kind, value: bytes | None,
                                repair: tuple[str, ...]) -> None:
    outcome = vote([A, B, C], replies, needed_replies(3))
    assert (outcome.kind, outcome.value, outcome.repair) == (kind, value, repair)
    assert outcome.replies == len(replies) and outcome.unasked == 0


def test_replies_from_servers_not_asked_count_for_nothing() -> None:
    # confd's flaw: a reply from a peer it never asked made up its quorum
    outcome = vote([A, B, C], {A: V1, D: V1, E: V1}, 2)
    assert (outcome.kind, outcome.replies, outcome.unasked) == (Kind.SHORT, 1, 2)
    outcome = vote([A, B, C], {A: V1, B: V1, D: V2}, 2)
    assert (outcome.kind, outcome.value, outcome.unasked, outcome.repair) == (Kind.HIT, V1, 1, (C,))


def test_a_server_asked_twice_counts_once() -> None:
    outcome = vote([A, A, B], {A: V1}, 2)
    assert (outcome.kind, outcome.replies, outcome.repair) == (Kind.SHORT, 1, (A, B))


@pytest.mark.parametrize("needed", [0, 4, -1, True, 1.5])
def test_vote_refuses_a_quorum_it_cannot_reach(needed: object) -> None:
    with pytest.raises(ConfigurationError, match="between 1 and the 3 servers asked"):
        vote([A, B, C], {A: V1}, needed)  # type: ignore[arg-type]


# -- replicas_for ------------------------------------------------------------------------------

KEYS = st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=60)


@given(st.text(max_size=40), st.integers(0, 2**32 - 1))
def test_murmur3_is_pymemcaches(data: str, seed: int) -> None:
    assert murmur3_32(data, seed) == pymemcache_murmur3_32(data, seed)


@settings(max_examples=300)
@given(KEYS, st.integers(1, 8), st.data())
def test_replicas_are_distinct_stable_and_ordered_by_rendezvous(
        key: str, n: int, data: st.DataObject) -> None:
    servers = SERVERS[:n]
    count = data.draw(st.integers(1, n))
    chosen = replicas_for(key, servers, count)
    assert len(chosen) == len(set(chosen)) == count and set(chosen) <= set(servers)
    assert replicas_for(key, list(reversed(servers)), count) == chosen  # the order given does not matter
    assert replicas_for(key, servers, n)[:count] == chosen  # fewer replicas are a prefix of more
    # the first replica is the server the memcached backend's rendezvous hashing picks today
    assert chosen[0] == Rendezvous(list(servers)).get_node(key)


@settings(max_examples=300)
@given(KEYS, st.integers(2, 8), st.data())
def test_removing_a_server_moves_only_the_keys_it_held(key: str, n: int, data: st.DataObject) -> None:
    servers = SERVERS[:n]
    count = data.draw(st.integers(1, n - 1))
    gone = data.draw(st.sampled_from(servers))
    before = replicas_for(key, servers, count)
    after = replicas_for(key, [server for server in servers if server != gone], count)
    if gone not in before:
        assert after == before
    else:  # the others stay, in their order, and one server takes the place of the one gone
        assert [server for server in before if server != gone] == [s for s in after if s in before]
        assert len(set(after) - set(before)) == 1


def test_replicas_spread_keys_over_the_servers() -> None:
    counts = dict.fromkeys(SERVERS[:4], 0)
    for i in range(4000):
        for server in replicas_for(f"dal:obj:{i}", SERVERS[:4], 2):
            counts[server] += 1
    assert all(1600 < held < 2400 for held in counts.values()), counts


@pytest.mark.parametrize(("servers", "count", "message"), [
    ([A, B], 3, r"between 1 and the number of servers \(2\), not 3"),
    ([A, B], 0, "not 0"),
    ([], 1, r"servers \(0\)"),
    ([A, B], True, "not True"),
    ([A, A, B], 2, "name one server twice"),
])
def test_replicas_for_refuses_a_count_it_cannot_place(
        servers: list[str], count: object, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        replicas_for("key", servers, count)  # type: ignore[arg-type]


def test_every_subset_of_three_servers_is_used() -> None:
    used = {tuple(sorted(replicas_for(f"k{i}", SERVERS[:5], 3))) for i in range(2000)}
    assert used == set(itertools.combinations(sorted(SERVERS[:5]), 3))


def test_a_tie_is_a_disagreement_and_so_is_a_majority_against_one() -> None:
    assert vote([A, B, C, D], {A: V1, B: V1, C: V2, D: V2}, 3).kind is Kind.DISAGREE
    assert vote([A, B, C, D, E], {A: V1, B: V1, C: V1, D: V1, E: None}, 3).kind is Kind.DISAGREE
