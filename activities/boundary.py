"""The one place domain errors cross into Temporal: typed, non-retryable ApplicationErrors."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeVar

from temporalio.exceptions import ApplicationError

from domain.errors import DrillError

F = TypeVar("F", bound=Callable)


def domain_errors(fn: F) -> F:
    """Re-raise DrillError as ApplicationError(type=code, non_retryable=True, details=[hint])."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except DrillError as error:
            raise ApplicationError(
                error.message, error.hint, type=str(error.code), non_retryable=True
            ) from error

    return wrapper  # type: ignore[return-value]
