"""The compiled filter answers as the tree walk does: ``predicate(c)(v) == satisfies(c, v)`` for odd values.

The brute-force model is :func:`dal.query.grammar.satisfies` (itself checked against Python's own
evaluation by tests/test_query_oracle.py); conditions are built directly, with any stored JSON
value: containers, mixed bool/int/float, unicode, ``/``, empty values, None.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from dal.query.filters import predicate
from dal.query.grammar import Condition, Operator, satisfies

SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-3, 3),
                    st.sampled_from([0.0, -0.0, 1.0, 2.5, -1.5]),
                    st.sampled_from(["", "a", "A", "ä", "Ä", "straße", "STRASSE", "a/b", "1", "True", "ﬁ"]))
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(["k", "K", "a/b"]), inner, max_size=2)),
    max_leaves=6)


def condition(operator: Operator, value: Any, sensitive: bool) -> Condition:
    # the field is never read by satisfies() or predicate(): only operator, value and sensitivity
    return Condition(None, operator, value, sensitive)  # type: ignore[arg-type]


@settings(max_examples=600, deadline=None)
@given(st.sampled_from(list(Operator)), VALUES, st.lists(VALUES, max_size=4), VALUES, st.booleans())
def test_a_compiled_condition_answers_as_the_tree_walk(operator: Operator, value: Any, values: list[Any],
                                                       actual: Any, sensitive: bool) -> None:
    query_value = tuple(values) if operator is Operator.IN else value
    walked = condition(operator, query_value, sensitive)
    assert predicate(walked)(actual) is satisfies(walked, actual)


def test_type_identity_holds_in_compiled_equality_and_membership() -> None:
    """The cases the fast paths reduce to a type check and a set lookup."""
    def check(operator: Operator, value: Any, actual: Any, expected: bool) -> None:
        built = condition(operator, value, True)
        assert predicate(built)(actual) is expected is satisfies(built, actual), (operator, value, actual)

    check(Operator.EQUALS, 1, True, False)
    check(Operator.EQUALS, 1, 1.0, False)
    check(Operator.EQUALS, 0.0, -0.0, True)
    check(Operator.IN, (1, "a"), True, False)
    check(Operator.IN, (True,), 1, False)
    check(Operator.IN, (1.0, None), None, True)
    check(Operator.IN, ([1],), [1], True)
    check(Operator.IN, (1,), [1], False)
    check(Operator.NOT_EQUALS, "a", "a", False)
    check(Operator.GE, "b", 3, False)


def test_a_boolean_never_orders_against_a_number() -> None:
    """True is not 1 for LT/GT/LE/GE either (sort() ranks booleans apart): at any depth, no match, as a
    string against a number; booleans still order among themselves, numbers among numbers."""
    def check(operator: Operator, value: Any, actual: Any, expected: bool) -> None:
        built = condition(operator, value, True)
        assert predicate(built)(actual) is expected is satisfies(built, actual), (operator, value, actual)

    for operator in (Operator.LT, Operator.GT, Operator.LE, Operator.GE):
        for bound, stored in [(2, True), (True, 1), (2.5, True), (False, 0), (True, 1.0), ([1], [True]),
                              ([True, 2], [1, 3]), ({"k": 1}, {"k": True}),
                              ([{"k": 1}, 1], [{"k": True}, 2])]:
            check(operator, bound, stored, False)
    check(Operator.GE, True, True, True)
    check(Operator.GT, False, True, True)
    check(Operator.LT, False, True, False)
    check(Operator.LE, 1.0, 1, True)
    check(Operator.LT, [False, 5], [True, 0], False)
    check(Operator.GT, [False, 5], [True, 0], True)
    check(Operator.LE, [1, 2.5], [1.0], True)
