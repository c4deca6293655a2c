"""Workflow-side telemetry: one OpenTelemetry span per stage, and a finished run's metrics.

Both go through OpenTelemetry's global API, where workers.telemetry installs Temporal's
replay-safe providers. While a workflow replays its history (after a worker restart or a cache
eviction) a span is re-created with the workflow's time as its start but not exported when it
ends, and a measurement is dropped. So a stage that ended before a restart was exported once,
by the worker that ran it; a stage running across a restart is exported once, by the worker
that finishes it, with its original start; a finished run's metrics are recorded once. Span
ids come from the workflow's seeded random, so a replay re-creates the same ids. (A workflow
task that fails on a bug and is retried re-executes live: what it ended is sent again, with
the same ids.)

Every string attribute is redacted (domain.redaction), as are error descriptions.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from opentelemetry import metrics, trace
from opentelemetry.trace import Status, StatusCode
from temporalio import workflow

from domain.redaction import redact
from domain.report import DrillReport

SCOPE = "pitrdrill"
STAGE_SPAN = "pitrdrill.stage."  # + the stage, e.g. pitrdrill.stage.restore
DRILL_ID, DATABASE, STAGE, OUTCOME, STATUS, WORKFLOW = (
    "pitrdrill.drill_id", "pitrdrill.database", "pitrdrill.stage", "pitrdrill.outcome",
    "pitrdrill.status", "pitrdrill.workflow")


@contextmanager
def stage_span(stage: str, drill_id: str, database: str) -> Iterator[None]:
    """The stage's span, current while the stage runs: the spans of the activities it starts
    nest in it. Outcome `done`, or `failed` with the error as the status."""
    span = trace.get_tracer(SCOPE).start_span(
        STAGE_SPAN + stage,
        attributes=_redacted({DRILL_ID: drill_id, DATABASE: database, STAGE: stage}),
        record_exception=False, set_status_on_exception=False)
    with trace.use_span(span, end_on_exit=False, record_exception=False,
                        set_status_on_exception=False):
        try:
            yield
        except BaseException as exc:
            span.set_attribute(OUTCOME, "failed")
            span.set_status(Status(StatusCode.ERROR, redact(_described(exc))))
            raise
        else:
            span.set_attribute(OUTCOME, "done")
        finally:
            span.end()


def record_finished(report: DrillReport) -> None:
    """A finished drill's (recovery's, bisection's) metrics, from its report."""
    meter = metrics.get_meter(SCOPE)
    run = _redacted({DATABASE: report.database, STATUS: report.status,
                     WORKFLOW: workflow.info().workflow_type})
    meter.create_counter(
        "pitrdrill.runs", unit="{run}",
        description="Finished runs by status: verified / all is the pass rate").add(1, run)
    durations = meter.create_histogram(
        "pitrdrill.stage.duration", unit="s", description="Each stage's duration")
    for stage in report.stages:
        durations.record(stage.seconds, {**run, STAGE: str(stage.stage), OUTCOME: stage.outcome})
    measured = report.metrics
    for name, unit, value, description in (
            ("pitrdrill.restore.throughput", "MBy/s", measured.restore_mb_per_s,
             "Base backup restored, over the whole restore stage"),
            ("pitrdrill.replay.throughput", "MBy/s", measured.replay_mb_per_s,
             "WAL replayed, over the whole replay stage"),
            ("pitrdrill.validation.pass_rate", "1", measured.validation_pass_rate,
             "Checks passed / checks run"),
            ("pitrdrill.time_to_verify", "s", measured.time_to_verify_seconds,
             "From the start of the run to its checks' results"),
            ("pitrdrill.data_lost", "s", measured.data_lost_seconds,
             "Requested target minus the last commit kept")):
        if value is not None:
            meter.create_histogram(name, unit=unit, description=description).record(value, run)


def _described(exc: BaseException) -> str:
    """An activity error says only "Activity task failed": name its cause too."""
    text = f"{type(exc).__name__}: {exc}"
    cause = getattr(exc, "cause", None)
    return f"{text} ({type(cause).__name__}: {cause})" if cause is not None else text


def _redacted(attributes: dict[str, str]) -> dict[str, str]:
    return {key: redact(str(value)) for key, value in attributes.items()}
