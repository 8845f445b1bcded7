"""How typed values order: ``LT``/``GT``/``LE``/``GE`` on stored JSON, and ``DataList.sort()``.

A stored value is JSON, and the text of some types orders unlike their values: a datetime's or a
time's text misorders offsets, a Decimal's text misorders numbers (``'10' < '9'``) and a
timedelta's ISO 8601 duration misorders lengths (``'PT10S' < 'PT9S'``). :func:`orderable` gives
the parser that turns such a stored value back into one that orders as its type does, used by the
ordering operators per document; every other value is compared as :func:`comparable` makes it (a
boolean never against a number); :func:`sortable` ranks the Python values ``sort()`` reads.
"""

from __future__ import annotations

import datetime as dt
import enum
import functools
import math
import operator as operator_module
import sys
import typing
import unicodedata
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import natsort
from pydantic import AwareDatetime, FutureDatetime, NaiveDatetime, PastDatetime

from dal.objects.dataobject import DataObject
from dal.validators import Validator
from dal.values import canonical

#: parses a stored (JSON) value into one that orders as its type does; raises TypeError or
#: ValueError for a value it cannot read (data of an older model), which then matches nothing
Parse = Callable[[Any], Any]

#: the comparison of each ordering operator, by its name (``LT``, ``GT``, ``LE``, ``GE``)
COMPARE: dict[str, Callable[[Any, Any], Any]] = {
    "LT": operator_module.lt, "GT": operator_module.gt, "LE": operator_module.le, "GE": operator_module.ge}

_DATETIMES = (dt.datetime, AwareDatetime, NaiveDatetime, PastDatetime, FutureDatetime)


class _Truth:
    """A boolean as the ordering operators see it: ordered among booleans only. Against a number it is
    neither equal nor ordered (``True`` is not ``1``), so comparing them raises TypeError and matches
    nothing, as a string against a number does."""

    __slots__ = ("value",)

    def __init__(self, value: bool) -> None:
        self.value = value

    def __eq__(self, other: object) -> bool:
        return self.value is other.value if isinstance(other, _Truth) else NotImplemented

    def __lt__(self, other: object) -> bool:
        return self.value < other.value if isinstance(other, _Truth) else NotImplemented

    def __le__(self, other: object) -> bool:
        return self.value <= other.value if isinstance(other, _Truth) else NotImplemented

    def __gt__(self, other: object) -> bool:
        return self.value > other.value if isinstance(other, _Truth) else NotImplemented

    def __ge__(self, other: object) -> bool:
        return self.value >= other.value if isinstance(other, _Truth) else NotImplemented


#: the types :func:`comparable` changes (a boolean, or a container that may hold one)
CONVERTED = frozenset({bool, list, tuple, dict})


def comparable(value: Any) -> Any:
    """Return a stored (JSON) value as ``LT``/``GT``/``LE``/``GE`` compare it: every boolean in it, at any
    depth of a list or a dict, ordered among booleans only, as :func:`sortable` ranks them apart from
    numbers; so a boolean and a number (``True`` and ``1``, ``[True]`` and ``[1]``) never order
    against each other, and match nothing as other mixed types do (a TypeError on comparing)."""
    kind = type(value)
    if kind is bool:
        return _Truth(value)
    if kind is list or kind is tuple:
        return kind(comparable(item) for item in value)
    if kind is dict:
        return {key: comparable(item) for key, item in value.items()}
    return value


def orderable(declared: Any, validator: Validator | None) -> Parse | None:
    """Return the parser of a stored value of type ``declared`` whose JSON text orders unlike its
    values (datetimes, times, Decimals, timedeltas), or ``None`` when the stored value orders as it
    is (numbers, strings, dates: their ISO text orders as they do)."""
    if typing.get_origin(declared) is typing.Annotated:
        declared = typing.get_args(declared)[0]
    if not isinstance(declared, type):
        return None
    if issubclass(declared, _DATETIMES):
        return dt.datetime.fromisoformat
    if issubclass(declared, dt.time):
        return dt.time.fromisoformat
    if issubclass(declared, Decimal):
        return _decimal
    if issubclass(declared, dt.timedelta) and validator is not None:
        # pydantic stores a timedelta as an ISO 8601 duration ('PT10S', '-P1DT5S'): its own
        # validator reads every form it writes, exactly
        return _through(validator)
    return None


def _decimal(stored: Any) -> Decimal:
    """Read a stored Decimal (its exact text); NaN, which has no order, is refused on assignment."""
    if not isinstance(stored, str):
        raise TypeError(f"a Decimal is stored as text, not {stored!r}")
    try:
        value = Decimal(stored)
    except ArithmeticError:  # decimal.InvalidOperation: not a number's text
        raise ValueError(f"{stored!r} is not a Decimal's text") from None
    if value.is_nan():
        raise ValueError("NaN has no order")
    return value


def _through(validator: Validator) -> Parse:
    def parse(stored: Any) -> Any:
        if not isinstance(stored, str):  # pydantic would read a number as seconds: not what it wrote
            raise TypeError(f"a timedelta is stored as an ISO 8601 duration, not {stored!r}")
        return validator.from_json(stored)  # a ValidationError is a ValueError

    return parse


def ordering_test(operator: str, parse: Parse, bound: Any) -> Callable[[Any], bool]:
    """Return the test of whether a stored value stands to the stored ``bound`` as ``operator`` asks,
    both parsed first (the bound once); an unset value, or one ``parse`` cannot read or order,
    matches nothing."""
    compare = COMPARE[operator]
    try:
        parsed = parse(bound)
    except (TypeError, ValueError):  # cannot happen for a validated value: nothing matches it
        return lambda actual: False

    def test(actual: Any) -> bool:
        if actual is None:
            return False
        try:
            return bool(compare(parse(actual), parsed))
        except (TypeError, ValueError):  # naive against aware (no order), or data of an older model
            return False

    return test


# --- sorting -------------------------------------------------------------------------------

_natsort = natsort.natsort_keygen()
_DATES = (dt.datetime, dt.date, dt.time)


@functools.total_ordering
class _Long:
    """A run of more digits than ``int()`` converts (``sys.get_int_max_str_digits()``, 4,300 by
    default), leading zeros dropped: larger than every int of a natural key, so after them, and
    ordered among such runs by value (by length, then as text: its digits are ASCII)."""

    __slots__ = ("digits",)

    def __init__(self, digits: str) -> None:
        self.digits = digits

    def __eq__(self, other: object) -> bool:
        if isinstance(other, _Long):
            return self.digits == other.digits
        return False if isinstance(other, int) else NotImplemented

    def __lt__(self, other: object) -> bool:
        if isinstance(other, _Long):
            return (len(self.digits), self.digits) < (len(other.digits), other.digits)
        return False if isinstance(other, int) else NotImplemented

    __hash__ = None  # type: ignore[assignment]  # compared within keys, never hashed


def _natural(text: str) -> tuple[Any, ...]:
    """Return natsort's key of ``text`` (text, then number, then text...), each digit run a number.

    natsort leaves a digit run too long for ``int()`` as text, where it would meet another key's int
    (a TypeError): such a run becomes a :class:`_Long` in a number's place, so any two keys compare.
    """
    key = _natsort(text)
    limit = sys.get_int_max_str_digits()
    if not limit or len(text) <= limit:  # no run too long (normalizing text never adds digits)
        return key
    rebuilt: list[Any] = []
    for part in key:
        if part == "":  # natsort's separator before a number: put back below, where numbers stand
            continue
        if isinstance(part, str) and part.isdecimal():
            digits = "".join(str(unicodedata.decimal(char)) for char in part).lstrip("0") or "0"
            part = int(digits) if len(digits) <= limit else _Long(digits)
        if not isinstance(part, str) and (not rebuilt or not isinstance(rebuilt[-1], str)):
            rebuilt.append("")
        rebuilt.append(part)
    return tuple(rebuilt)


def sortable(value: Any) -> Any:
    """Return a key that orders any values without raising, types ranked apart.

    Unset first, then booleans, numbers (int, float and Decimal together, by value; NaN
    last), text in
    natural order (``disk2`` before ``disk10``, any digits Unicode knows, a run too long for an
    int too: see :func:`_natural`), dates and times (in
    time, see :func:`_chronological`) and timedeltas (by length), related objects (by guid),
    tuples (element by element, each element ranked so), and anything else by its canonical JSON
    text (or its repr); an Enum member ranks as its value. ``sort()`` hands a multi-key sort its
    keys as a tuple: the same order.
    """
    if value is None:
        return (0,)
    if isinstance(value, bool):
        return (1, value)
    if isinstance(value, (int, float, Decimal)):
        # a NaN orders with nothing (and a Decimal one raises on comparing): after every number
        return (2, 1) if _nan(value) else (2, 0, value)
    if isinstance(value, str):
        return (3, _natural(value))
    if isinstance(value, _DATES):
        return (4, type(value).__name__, *_chronological(value))
    if isinstance(value, dt.timedelta):
        return (4, "timedelta", 0, value)
    if isinstance(value, DataObject):
        return related(value.guid)
    if isinstance(value, tuple):  # a tuple-typed value (or a key function's several keys)
        return (6, tuple(sortable(item) for item in value))
    if isinstance(value, enum.Enum):  # by its value, as stored and as LT/GT compare it
        return sortable(value.value)
    try:
        return (7, canonical(value))
    except (TypeError, ValueError):
        return (8, type(value).__name__, repr(value))


def related(guid: str | None) -> Any:
    """Return the key of a related object known by its guid alone (``sort(key='<relation>')``): ranked
    as :func:`sortable` ranks the object, which need not be loaded (nor still be stored)."""
    return sortable(None) if guid is None else (5, guid)


def _nan(value: float | Decimal) -> bool:
    if isinstance(value, Decimal):
        return value.is_nan()
    return isinstance(value, float) and math.isnan(value)  # an int past a float's range is no NaN


def _chronological(value: dt.date | dt.time) -> tuple[int, Any]:
    """Order dates, datetimes and times in time: aware ones by their UTC instant (as a timedelta, which
    cannot overflow), after every naive one, since naive and aware values have no order between them."""
    offset = value.utcoffset() if isinstance(value, (dt.datetime, dt.time)) else None
    if offset is None:
        return (0, value)
    if isinstance(value, dt.datetime):
        return (1, value.replace(tzinfo=None) - dt.datetime.min - offset)
    assert isinstance(value, dt.time)
    return (1, dt.timedelta(hours=value.hour, minutes=value.minute, seconds=value.second,
                            microseconds=value.microsecond) - offset)
