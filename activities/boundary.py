"""The one place activities meet Temporal's failure model and the drill's log context.

Every activity is wrapped in `activity_boundary`: its log records (adapters' included) carry
the drill id, the activity and the attempt, and a domain error leaves as a typed,
non-retryable ApplicationError(type=code, details=[hint]).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeVar

import structlog
from temporalio import activity
from temporalio.exceptions import ApplicationError

from domain.errors import DrillError

F = TypeVar("F", bound=Callable)


def as_application_error(error: DrillError) -> ApplicationError:
    return ApplicationError(error.message, error.hint, type=str(error.code), non_retryable=True)


def activity_boundary(fn: F) -> F:
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        info = activity.info()
        with structlog.contextvars.bound_contextvars(
                drill_id=info.workflow_id, activity=info.activity_type, attempt=info.attempt):
            try:
                return fn(*args, **kwargs)
            except DrillError as error:
                raise as_application_error(error) from error

    return wrapper  # type: ignore[return-value]
