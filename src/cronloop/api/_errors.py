"""Validation errors placed at a field below the model that finds them.

A validator that raises ``ValueError`` reports the problem at its model's own location: a check
of ``successPolicy.n`` against the targets, made by the job spec, would say ``spec`` and leave
the reader to find the field. Raising a pydantic ``ValidationError`` instead puts each problem
at an explicit location relative to the model; pydantic-core adds the model's own location in
front, as for any nested error. :func:`with_problems` is for a model that adds its own
problems to those its fields already reported, so that all of them are reported at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, get_args

from pydantic import ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError
from pydantic_core.core_schema import ErrorType

__all__ = ["field_error", "problem", "with_problems"]

_KNOWN_TYPES: frozenset[str] = frozenset(get_args(ErrorType))

Loc = tuple[int | str, ...]


def problem(loc: Loc, message: str, value: Any) -> InitErrorDetails:
    """A ``value_error`` with ``message`` about ``value`` at ``loc`` (camelCase field names)."""
    return InitErrorDetails(type="value_error", loc=loc, input=value, ctx={"error": message})


def field_error(title: str, loc: Loc, message: str, value: Any) -> ValidationError:
    """The error to raise from a validator of ``title`` for one problem at ``loc`` below it."""
    return ValidationError.from_exception_data(title, [problem(loc, message, value)])


def with_problems(exc: ValidationError, problems: Sequence[InitErrorDetails]) -> ValidationError:
    """``exc``'s errors followed by ``problems``, as one error to raise in its place."""
    if not problems:
        return exc
    replayed: list[InitErrorDetails] = []
    for error in exc.errors():
        kind = error["type"]
        if kind in _KNOWN_TYPES:
            details = InitErrorDetails(type=kind, loc=error["loc"], input=error["input"])
            if "ctx" in error:
                details["ctx"] = error["ctx"]
        else:  # a PydanticCustomError: keep its type and its already formatted message
            custom = PydanticCustomError(kind, error["msg"])
            details = InitErrorDetails(type=custom, loc=error["loc"], input=error["input"])
        replayed.append(details)
    return ValidationError.from_exception_data(exc.title, [*replayed, *problems])
