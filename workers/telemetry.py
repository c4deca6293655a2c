"""structlog JSON logs (stdlib and Temporal's loggers included), bound to the drill id."""

from __future__ import annotations

import logging
import sys

import structlog
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

def _drill_id_from_temporal(_, __, event: dict) -> dict:
    """Temporal's loggers nest the workflow id; lift it so every record has `drill_id`."""
    for key in ("temporal_workflow", "temporal_activity"):
        context = event.get(key)
        if isinstance(context, dict) and "workflow_id" in context:
            event.setdefault("drill_id", context["workflow_id"])
    return event


_SHARED = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
]


def configure(level: int = logging.INFO) -> None:
    structlog.configure(
        processors=[*_SHARED, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*_SHARED, structlog.stdlib.ExtraAdder(), _drill_id_from_temporal],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.JSONRenderer(),
        ],
    ))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Python warnings (e.g. the workflow sandbox's) become JSON records too, not bare lines; the
    # SDK core's own logs are forwarded by workers.client.sdk_runtime().
    logging.captureWarnings(True)
    # The Temporal tracing interceptor (workers/client.py) creates spans on this provider. No
    # span processor or exporter is installed, so they are not sent anywhere yet.
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        trace.set_tracer_provider(TracerProvider())


def bind_drill(drill_id: str) -> None:
    structlog.contextvars.bind_contextvars(drill_id=drill_id)
