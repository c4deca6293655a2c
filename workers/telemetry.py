"""What pitrdrill tells the outside world about itself, secrets redacted everywhere:

- logs: structlog JSON lines on stderr (stdlib and Temporal's loggers included), bound to the
  drill id, each rendered line passed through domain.redaction.redact;
- traces and metrics: OpenTelemetry, exported where the standard OTEL_* variables say
  (docs/telemetry.md). The providers are Temporal's replay-safe ones, installed globally once
  per process: workflow code (stage spans, drill metrics) uses the global API, and a replayed
  workflow re-creates its spans and measurements without exporting them a second time.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import TypeVar

import structlog
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    ConsoleMetricExporter,
    MetricExporter,
    MetricReader,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.trace import Status
from temporalio.contrib.opentelemetry import (
    ReplaySafeMeterProvider,
    ReplaySafeTracerProvider,
    create_tracer_provider,
)

from domain.redaction import redact

T = TypeVar("T")

SERVICE = "pitrdrill"


def _drill_id_from_temporal(_, __, event: dict) -> dict:
    """Temporal's loggers nest the workflow id; lift it so every record has `drill_id`."""
    for key in ("temporal_workflow", "temporal_activity"):
        context = event.get(key)
        if isinstance(context, dict) and "workflow_id" in context:
            event.setdefault("drill_id", context["workflow_id"])
    return event


def _redact_rendered(_, __, line: str) -> str:
    """Last: whatever a record carries (an error's text, a DSN, a repr) is redacted as
    rendered. redact() keeps JSON valid."""
    return redact(line)


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
            _redact_rendered,
        ],
    ))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Python warnings (e.g. the workflow sandbox's) become JSON records too, not bare lines; the
    # SDK core's own logs are forwarded by workers.client.sdk_runtime().
    logging.captureWarnings(True)
    providers()


def bind_drill(drill_id: str) -> None:
    structlog.contextvars.bind_contextvars(drill_id=drill_id)


# --- OpenTelemetry -------------------------------------------------------------------------


class _RedactedSpans(SpanExporter):
    """Every exporter sees spans with their name, attributes, events (an exception's message
    and stack) and status text redacted: Temporal's own spans carry activity errors."""

    def __init__(self, exporter: SpanExporter) -> None:
        self._exporter = exporter

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return self._exporter.export([_redacted(span) for span in spans])

    def shutdown(self) -> None:
        self._exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._exporter.force_flush(timeout_millis)


def _redacted_attributes(attributes) -> dict:
    def one(value):
        if isinstance(value, str):
            return redact(value)
        if isinstance(value, (list, tuple)):
            return [redact(v) if isinstance(v, str) else v for v in value]
        return value

    return {key: one(value) for key, value in (attributes or {}).items()}


def _redacted(span: ReadableSpan) -> ReadableSpan:
    status = span.status
    if status.description:
        status = Status(status.status_code, redact(status.description))
    return ReadableSpan(
        name=redact(span.name), context=span.context, parent=span.parent,
        resource=span.resource, attributes=_redacted_attributes(span.attributes),
        events=[Event(event.name, _redacted_attributes(event.attributes), event.timestamp)
                for event in span.events],
        links=span.links, kind=span.kind, status=status, start_time=span.start_time,
        end_time=span.end_time, instrumentation_scope=span.instrumentation_scope)


def _one_line(item) -> str:
    """Console exporters write on stderr, one JSON object a line like every log record
    (stdout stays the command's output, e.g. --json)."""
    return redact(json.dumps(json.loads(item.to_json()))) + os.linesep


def _chosen(signal: str) -> list[str]:
    """OTEL_<SIGNAL>_EXPORTER (otlp, console, none; comma-separated). Unset: otlp when an OTLP
    endpoint is configured for the signal, else nothing."""
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return []
    named = os.environ.get(f"OTEL_{signal}_EXPORTER")
    if named is None:
        endpoint = (os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
                    or os.environ.get(f"OTEL_EXPORTER_OTLP_{signal}_ENDPOINT"))
        return ["otlp"] if endpoint else []
    return [name.strip().lower() for name in named.split(",")
            if name.strip() and name.strip().lower() != "none"]


def _exporters(signal: str, otlp: Callable[[], T], console: Callable[[], T]) -> list[T]:
    """The exporters OTEL_<signal>_EXPORTER names (otlp, console); others are warned about."""
    exporters = []
    for name in _chosen(signal):
        if name in ("otlp", "console"):
            exporters.append(otlp() if name == "otlp" else console())
        else:
            logging.getLogger(__name__).warning(
                f"unsupported OTEL_{signal}_EXPORTER", extra={"exporter": name})
    return exporters


def _otlp_spans() -> SpanExporter:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    return OTLPSpanExporter()


def _otlp_metrics() -> MetricExporter:
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    return OTLPMetricExporter()


def _span_exporters() -> list[SpanExporter]:
    return _exporters("TRACES", _otlp_spans,
                      lambda: ConsoleSpanExporter(out=sys.stderr, formatter=_one_line))


def _metric_exporters() -> list[MetricExporter]:
    return _exporters("METRICS", _otlp_metrics,
                      lambda: ConsoleMetricExporter(out=sys.stderr, formatter=_one_line))


@functools.cache
def providers() -> tuple[ReplaySafeTracerProvider, MeterProvider]:
    """This process's tracer and meter providers, installed as OpenTelemetry's global ones
    (once: OpenTelemetry refuses a second). The client factory calls this before connecting:
    Temporal's OpenTelemetryPlugin requires a replay-safe global tracer provider."""
    resource = Resource.create({SERVICE_NAME: os.environ.get("OTEL_SERVICE_NAME", SERVICE)})
    tracer_provider = create_tracer_provider(resource=resource)
    for exporter in _span_exporters():
        add_span_exporter(exporter, tracer_provider,
                          batch=not isinstance(exporter, ConsoleSpanExporter))
    meter_provider = MeterProvider(
        resource=resource,
        metric_readers=[PeriodicExportingMetricReader(e) for e in _metric_exporters()])
    trace.set_tracer_provider(tracer_provider)
    metrics.set_meter_provider(ReplaySafeMeterProvider(meter_provider))
    return tracer_provider, meter_provider


def add_span_exporter(exporter: SpanExporter,
                      tracer_provider: ReplaySafeTracerProvider | None = None,
                      batch: bool = True) -> None:
    """Export this process's spans there too, redacted. Batched by default: a span ended in
    workflow code must not wait on a collector (the SDK's deadlock detection)."""
    processor = BatchSpanProcessor if batch else SimpleSpanProcessor
    (tracer_provider or providers()[0]).add_span_processor(processor(_RedactedSpans(exporter)))


def add_metric_reader(reader: MetricReader) -> None:
    providers()[1].add_metric_reader(reader)


def flush(timeout_millis: int = 10_000) -> None:
    """Send what is buffered. Call before a process ends: the CLI exits with os._exit, which
    runs no atexit hook."""
    tracer_provider, meter_provider = providers()
    tracer_provider.force_flush(timeout_millis)
    meter_provider.force_flush(timeout_millis)
