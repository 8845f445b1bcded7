"""What a field's declared type says about the values a query compares with its stored ones.

Fields are declared the ways pydantic spells types: ``Optional[X]``, ``X | None``,
``Annotated[X, Field(...)]`` (``constr``, ``conlist`` and pydantic's other constrained types are
``Annotated``), nested in any order. A query treats each as its plain type ``X``.
"""

from __future__ import annotations

import typing
from enum import Enum
from typing import Any

from dal.exceptions import InvalidQueryError, InvalidValueError
from dal.model.declared import unoptional
from dal.validators import Validator
from dal.values import same


def bare(declared: Any) -> Any:
    """Return ``declared`` without its ``Optional`` and ``Annotated`` wrappers, however nested
    (``Annotated[datetime | None, Field(...)]`` is a ``datetime``)."""
    while True:
        plain = unoptional(declared)
        if typing.get_origin(plain) is typing.Annotated:
            plain = typing.get_args(plain)[0]
        if plain is declared:
            return declared
        declared = plain


def stringlike(declared: Any) -> bool:
    """Tell whether values of ``declared`` (bare) are stored as strings: ``str`` (or a subclass), a
    ``Literal`` of strings."""
    if isinstance(declared, type):
        return issubclass(declared, str)
    arguments = typing.get_args(declared)
    return typing.get_origin(declared) is typing.Literal and all(isinstance(item, str) for item in arguments)


def allowed_spelling(declared: Any, validator: Validator, value: str) -> str | None:
    """Return the allowed string of a string enum (a list of allowed values, a ``Literal``, an ``Enum``)
    that ``value`` spells in other case, compared case-insensitively; None when there is none."""
    if validator.enum is not None:
        allowed: Any = validator.enum
    elif typing.get_origin(declared) is typing.Literal:
        allowed = typing.get_args(declared)
    elif isinstance(declared, type) and issubclass(declared, Enum):
        allowed = [member.value for member in declared]
    else:
        return None
    folded = value.casefold()
    return next((item for item in allowed if isinstance(item, str) and item.casefold() == folded), None)


def element(label: str, kinds: list[Any], value: Any) -> list[Any]:
    """Return every JSON form ``value`` is stored in as an element of one of ``kinds`` it fits, each
    once (``3`` in a ``tuple[float, int]`` is ``3.0`` in its first place and ``3`` in its second,
    which dal's value identity tells apart); InvalidQueryError when it fits none."""
    fitted: list[Any] = []
    errors: list[InvalidValueError] = []
    for kind in kinds:
        check = Validator(f"{label} (an element)", kind)
        try:
            form = check.to_json(check(value))
        except InvalidValueError as exc:
            errors.append(exc)
            continue
        if not any(same(form, known) for known in fitted):
            fitted.append(form)
    if fitted:
        return fitted
    names = " or ".join(getattr(kind, "__name__", repr(kind)) for kind in kinds)
    raise InvalidQueryError(f"{label} holds {names} elements; CONTAINS takes one such element: "
                            f"{errors[0]}") from None
