"""Activity logs: structlog, bound to the drill id (the workflow id) and the attempt."""

from __future__ import annotations

import structlog
from temporalio import activity


def drill_log() -> structlog.stdlib.BoundLogger:
    info = activity.info()
    return structlog.get_logger("pitrdrill.activity").bind(
        drill_id=info.workflow_id, activity=info.activity_type, attempt=info.attempt
    )
