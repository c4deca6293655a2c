"""The ledger's summary, as an auditor reads it: pass rate, median time to verify, worst data
given up, and the share of the restorable window the period's drills proved."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from domain.errors import DrillError
from domain.ledger import (
    LedgerListing,
    LedgerRecord,
    proven_interval,
    since_instant,
    summary,
    window_proof,
)
from domain.plan import FallbackUsed
from domain.targets import ResolvedTarget
from tests.unit.reports import T0, fallback_to_xid_731, hours, report

NOW = hours(24 * 10)
WINDOW = (hours(0), hours(100))  # the restorable window the newest plan saw: 100 h


def record(drill_report, kind="drill") -> LedgerRecord:
    return LedgerRecord.of(kind, drill_report, appended_at=drill_report.finished_at)


def test_passing_drills_prove_the_union_of_their_intervals_within_the_window():
    records = [
        # 10 h .. 30 h, and 20 h .. 40 h overlapping it: 30 h together.
        record(report("a", backup_stop=hours(10), last_commit=hours(30), finished=hours(101),
                      window=WINDOW)),
        record(report("b", backup_stop=hours(20), last_commit=hours(40), finished=hours(102),
                      window=WINDOW)),
        # Begins before the window (its backup has since expired): only 0 .. 5 h counts.
        record(report("c", backup_stop=hours(-10), last_commit=hours(5), finished=hours(103),
                      window=WINDOW)),
        # Failed and rejected drills prove nothing.
        record(report("d", status="failed", backup_stop=hours(50), last_commit=hours(90),
                      finished=hours(104), window=WINDOW)),
        # A promoted recovery passed.
        record(report("e", status="promoted", backup_stop=hours(60), last_commit=hours(70),
                      finished=hours(105), window=WINDOW, recovery=True), kind="recovery"),
    ]
    proof = window_proof(records)
    assert proof.window_seconds == 100 * 3600
    assert proof.proven_seconds == (30 + 5 + 10) * 3600
    assert proof.share == 0.45
    assert proof.window_of == "e"
    assert proven_interval(records[3]) is None


def test_the_window_is_the_one_the_newest_plan_saw():
    older = record(report("old", backup_stop=hours(0), last_commit=hours(50),
                          finished=hours(60), window=(hours(0), hours(50))))
    newer = record(report("new", backup_stop=hours(40), last_commit=hours(50),
                          finished=hours(120), window=(hours(25), hours(125))))
    proof = window_proof([newer, older])
    assert (proof.earliest, proof.latest) == (hours(25), hours(125))
    # old proves 25 .. 50 of it, new 40 .. 50 again: 25 h of 100 h.
    assert proof.share == 0.25


def test_summary_per_database_in_the_period():
    fallback = FallbackUsed(
        step="last_consistent_before_gap", cause_code="WAL_GAP", cause="segment missing",
        requested=ResolvedTarget(mode="latest"),
        used=ResolvedTarget(mode="xid", xid=731, inclusive=True), seconds_given_up=None,
        transactions_given_up=None, transactions_given_up_at_least=12)
    records = [
        record(report("s1", finished=hours(200), time_to_verify=30.0, data_lost=0.5,
                      window=WINDOW)),
        record(report("s2", finished=hours(201), time_to_verify=50.0, data_lost=7.25)),
        record(report("s3", finished=hours(202), time_to_verify=90.0, data_lost=None,
                      fallback=fallback)),
        record(report("s4", status="rejected", finished=hours(203), time_to_verify=None,
                      data_lost=None)),
        record(report("b1", database="billing", finished=hours(204), time_to_verify=12.0)),
        # Before the period: left out.
        record(report("old", finished=hours(1), time_to_verify=1.0, data_lost=999.0)),
    ]
    result = summary(records, since=hours(100), now=NOW)
    assert result.records == 5
    shop, billing = (next(d for d in result.databases if d.database == name)
                     for name in ("shop", "billing"))
    assert [d.database for d in result.databases] == ["billing", "shop"]
    assert (shop.drills, shop.recoveries, shop.passed) == (4, 0, 3)
    assert shop.pass_rate == 0.75
    assert shop.median_time_to_verify_seconds == 50.0
    assert (shop.worst_data_given_up_seconds, shop.worst_data_given_up_by) == (7.25, "s2")
    assert (shop.fallbacks, shop.worst_transactions_given_up) == (1, 12)
    assert shop.window is not None and shop.window.window_of == "s1"
    assert (billing.drills, billing.pass_rate, billing.window) == (1, 1.0, None)


def test_a_fallbacks_own_cost_counts_when_the_request_had_no_moment():
    fallback = fallback_to_xid_731()
    drill = report("f", data_lost=None, fallback=fallback)
    drill.metrics.data_lost_seconds = None
    listing = LedgerListing.of(record(drill))
    assert listing.data_given_up_seconds == 42.5
    # The report says both what was asked for and what was used.
    assert drill.requested_target.xid == 800 and drill.target.xid == 731


def test_a_recovery_is_read_back_as_a_recovery():
    recovery = report("r", status="paused", recovery=True)
    back = LedgerRecord.model_validate_json(record(recovery, "recovery").model_dump_json())
    assert back.report.status == "paused"
    assert back.report.destination == "/srv/recovered"


@pytest.mark.parametrize("text, expected", [
    ("30d", NOW - timedelta(days=30)), ("12h", NOW - timedelta(hours=12)),
    ("90m", NOW - timedelta(minutes=90)), ("2w", NOW - timedelta(weeks=2)),
    ("2026-11-01", datetime(2026, 11, 1, tzinfo=UTC)),
    ("2026-11-01T09:00:00+01:00", datetime(2026, 11, 1, 8, tzinfo=UTC)),
])
def test_since_reads_spans_dates_and_zoned_times(text, expected):
    assert since_instant(text, NOW) == expected


@pytest.mark.parametrize("text", ["30 days", "yesterday", "2026-11-01 09:00"])
def test_since_refuses_what_it_cannot_read_or_a_time_without_a_zone(text):
    with pytest.raises(DrillError) as refused:
        since_instant(text, NOW)
    assert refused.value.code == "LEDGER_QUERY_INVALID"
    assert refused.value.kind == "input"


def test_an_empty_period_summarizes_to_nothing():
    result = summary([record(report("x", finished=T0))], since=NOW, now=NOW)
    assert (result.records, result.databases) == (0, [])


def test_a_recoverys_ledger_entry_crosses_temporal_whole():
    """Through the workers' data converter, as the workflow sends it to the activity."""
    from temporalio.contrib.pydantic import pydantic_data_converter

    from activities.models import LedgerEntry

    converter = pydantic_data_converter.payload_converter
    sent = LedgerEntry(kind="recovery", report=report("r", status="promoted", recovery=True))
    [payload] = converter.to_payloads([sent])
    [received] = converter.from_payloads([payload], [LedgerEntry])
    assert received.report.status == "promoted"
    assert received.report.destination == "/srv/recovered"
    assert received == sent
