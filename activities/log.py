"""Activity context helpers: structlog bound to the drill id, and resuming from a heartbeat."""

from __future__ import annotations

from typing import TypeVar

import structlog
from pydantic import BaseModel
from temporalio import activity

Progress = TypeVar("Progress", bound=BaseModel)


def drill_log() -> structlog.stdlib.BoundLogger:
    info = activity.info()
    return structlog.get_logger("pitrdrill.activity").bind(
        drill_id=info.workflow_id, activity=info.activity_type, attempt=info.attempt
    )


def resumed(progress: type[Progress]) -> Progress:
    """The progress the previous attempt last heartbeated, or a fresh one: a retry resumes."""
    details = activity.info().heartbeat_details
    return progress.model_validate(details[0]) if details else progress()
