"""The drill ledger's rules: what one record holds, which records a query keeps, and the
summary an auditor reads. Pure: the stores are adapters/ledger.py, and `now` is always given.

The share of the restorable window proven (docs/report.md): every drill or recovery that
passed proves that its base backup replays from its consistency point (the backup's stop time)
up to the last commit it recovered, because PostgreSQL replayed every WAL record in between.
Per database, the union of those intervals over the period, clipped to the restorable window
(oldest backup's consistency point .. last commit before the first WAL break) that the newest
plan in the period saw, divided by that window's length.
"""

from __future__ import annotations

import statistics
from datetime import UTC, date, datetime
from typing import Any, Literal

from pydantic import BaseModel, SerializeAsAny, model_validator

from domain.errors import DrillError, ErrorCode
from domain.recovery import RecoveryReport
from domain.report import DrillReport
from domain.synthetic import parse_duration

LedgerKind = Literal["drill", "recovery"]
# A recovery passed once verified, whether a human then promoted it or left it paused.
PASSED = frozenset({"verified", "promoted", "paused"})


def report_of_kind(kind: str, report: Any) -> DrillReport:
    """A report read back as its kind's model: a recovery keeps its destination, decision and
    promotion, and its own statuses."""
    model = RecoveryReport if kind == "recovery" else DrillReport
    return report if isinstance(report, model) else model.model_validate(
        report.model_dump() if isinstance(report, DrillReport) else report)


class KindedReport(BaseModel):
    """A report with its kind; read back, and serialized, as that kind's model."""

    kind: LedgerKind
    report: SerializeAsAny[DrillReport]

    @model_validator(mode="before")
    @classmethod
    def _report_as_its_kind(cls, data: Any) -> Any:
        if isinstance(data, dict) and "report" in data:
            data = {**data, "report": report_of_kind(data.get("kind", "drill"), data["report"])}
        return data


class LedgerRecord(KindedReport):
    """One finished drill or recovery. The columns queries filter on are the report's own
    values; `run_id` (the workflow run) makes a retried append a no-op."""

    run_id: str
    drill_id: str
    database: str
    status: str
    finished_at: datetime
    appended_at: datetime

    @classmethod
    def of(cls, kind: LedgerKind, report: DrillReport, appended_at: datetime) -> LedgerRecord:
        return cls(run_id=report.workflow_run_id or report.drill_id, drill_id=report.drill_id,
                   kind=kind, database=report.database, status=report.status,
                   finished_at=utc(report.finished_at or appended_at),
                   appended_at=utc(appended_at), report=report)


class LedgerQuery(BaseModel):
    database: str | None = None
    since: datetime | None = None  # finished at or after
    kind: LedgerKind | None = None


class LedgerListing(BaseModel):
    """One line of `pitrdrill report list`."""

    drill_id: str
    run_id: str
    kind: LedgerKind
    database: str
    status: str
    finished_at: datetime
    target: str | None
    base_backup: str | None
    time_to_verify_seconds: float | None
    data_given_up_seconds: float | None

    @classmethod
    def of(cls, record: LedgerRecord) -> LedgerListing:
        report = record.report
        return cls(drill_id=record.drill_id, run_id=record.run_id, kind=record.kind,
                   database=record.database, status=record.status,
                   finished_at=record.finished_at,
                   target=report.target.describe() if report.target else None,
                   base_backup=report.base_backup.id if report.base_backup else None,
                   time_to_verify_seconds=report.metrics.time_to_verify_seconds,
                   data_given_up_seconds=data_given_up(report))


class WindowProof(BaseModel):
    """How much of the restorable window the period's passing drills proved replayable."""

    earliest: datetime  # the oldest backup's consistency point
    latest: datetime  # the last commit before the first WAL break
    window_seconds: float
    proven_seconds: float
    share: float | None  # proven / window; None for an empty window
    window_of: str  # the drill whose plan saw this window (the newest that had one)


class DatabaseSummary(BaseModel):
    database: str
    drills: int
    recoveries: int
    passed: int
    pass_rate: float | None  # passed / finished (rejected and failed count as not passed)
    median_time_to_verify_seconds: float | None  # over those that passed
    worst_data_given_up_seconds: float | None
    worst_data_given_up_by: str | None
    fallbacks: int
    # The most transactions a fallback gave up (at least that many: see FallbackUsed).
    worst_transactions_given_up: int | None
    window: WindowProof | None


class LedgerSummary(BaseModel):
    since: datetime | None
    until: datetime
    records: int
    databases: list[DatabaseSummary]


def utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC)


def since_instant(text: str, now: datetime) -> datetime:
    """`--since`: a span back from now (45s, 90m, 12h, 30d, 2w, 1d12h: a duration as specs
    write them), a date (midnight UTC), or a time with its zone. A time without one is
    refused: pitrdrill never guesses a zone."""
    value = text.strip()
    try:
        return now - parse_duration(value)
    except ValueError:
        pass
    try:
        return datetime.combine(date.fromisoformat(value), datetime.min.time(), UTC)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise DrillError(ErrorCode.LEDGER_QUERY_INVALID,
                         f"--since {text!r} is neither a span (30d, 12h, 90m, 2w), a date, nor "
                         "a time with its zone")
    return utc(moment)


def data_given_up(report: DrillReport) -> float | None:
    """Seconds of history before the requested target not recovered: the requested moment
    minus the last commit kept, or a fallback's own count when the request had no moment."""
    fallback = report.plan.fallback if report.plan else None
    candidates = [report.metrics.data_lost_seconds,
                  fallback.seconds_given_up if fallback else None]
    known = [value for value in candidates if value is not None]
    return max(known) if known else None


def proven_interval(record: LedgerRecord) -> tuple[datetime, datetime] | None:
    """From the base backup's consistency point to the last commit recovered, if it passed."""
    report = record.report
    if record.status not in PASSED or report.base_backup is None or report.recovered is None:
        return None
    start, end = report.base_backup.stop_time, report.recovered.last_commit_time
    if start is None or end is None or end <= start:
        return None
    return utc(start), utc(end)


def _covered_seconds(intervals: list[tuple[datetime, datetime]], low: datetime,
                     high: datetime) -> float:
    """Length of the union of `intervals` within [low, high]."""
    clipped = sorted((max(a, low), min(b, high)) for a, b in intervals
                     if min(b, high) > max(a, low))
    total, reach = 0.0, low
    for start, end in clipped:
        if end > reach:
            total += (end - max(start, reach)).total_seconds()
            reach = end
    return total


def window_proof(records: list[LedgerRecord]) -> WindowProof | None:
    """See the module's docstring. `records`: one database's, in any order."""
    planned = [r for r in records if r.report.plan and r.report.plan.window
               and r.report.plan.window.earliest_time and r.report.plan.window.latest]
    if not planned:
        return None
    newest = max(planned, key=lambda r: r.finished_at)
    window = newest.report.plan.window
    earliest, latest = utc(window.earliest_time), utc(window.latest.commit_time)
    length = max((latest - earliest).total_seconds(), 0.0)
    proven = _covered_seconds([i for r in records if (i := proven_interval(r))], earliest, latest)
    return WindowProof(earliest=earliest, latest=latest, window_seconds=length,
                       proven_seconds=round(proven, 6),
                       share=round(proven / length, 4) if length > 0 else None,
                       window_of=newest.drill_id)


def summarize_database(database: str, records: list[LedgerRecord]) -> DatabaseSummary:
    passed = [r for r in records if r.status in PASSED]
    verify_times = [r.report.metrics.time_to_verify_seconds for r in passed
                    if r.report.metrics.time_to_verify_seconds is not None]
    given_up = [(value, r.drill_id) for r in records if (value := data_given_up(r.report))
                is not None]
    worst = max(given_up, key=lambda pair: pair[0]) if given_up else (None, None)
    fallbacks = [r.report.plan.fallback for r in records if r.report.plan
                 and r.report.plan.fallback]
    transactions = [f.transactions_given_up_at_least for f in fallbacks
                    if f.transactions_given_up_at_least is not None]
    return DatabaseSummary(
        database=database, drills=sum(r.kind == "drill" for r in records),
        recoveries=sum(r.kind == "recovery" for r in records), passed=len(passed),
        pass_rate=round(len(passed) / len(records), 4) if records else None,
        median_time_to_verify_seconds=statistics.median(verify_times) if verify_times else None,
        worst_data_given_up_seconds=worst[0], worst_data_given_up_by=worst[1],
        fallbacks=len(fallbacks),
        worst_transactions_given_up=max(transactions) if transactions else None,
        window=window_proof(records))


def summary(records: list[LedgerRecord], since: datetime | None, now: datetime) -> LedgerSummary:
    """Per database, the records finished in [since, now]."""
    kept = [r for r in records if (since is None or r.finished_at >= since)
            and r.finished_at <= now]
    databases = sorted({r.database for r in kept})
    return LedgerSummary(
        since=since, until=now, records=len(kept),
        databases=[summarize_database(d, [r for r in kept if r.database == d])
                   for d in databases])
