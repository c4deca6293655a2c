"""What a human reads at 3 a.m.: no `None MB/s`, failed stages named, cancels in their words."""

from __future__ import annotations

from domain.errors import DrillError, ErrorCode
from domain.report import DrillReport, ErrorEntry, WarmedRelation, WarmReport
from workers import output
from workers.cli.common import EXIT_CANCELLED, EXIT_UNAVAILABLE, refusal


def test_a_replay_that_failed_prints_no_replay_rate_and_names_the_failed_stage():
    report = DrillReport(drill_id="d", status="failed", database="shop")
    report.metrics.bytes_restored = 47_000_000
    report.metrics.restore_mb_per_s = 120.5
    report.metrics.stage_seconds = {"restore": 0.4}
    report.metrics.failed_stages = {"replay": 2.5}
    report.errors.append(ErrorEntry.from_error(DrillError(ErrorCode.RECOVERY_FAILED, "boom")))
    text = output.summary(report)
    assert "None" not in text and "replay 0.0 MB" not in text
    assert "restore       47.0 MB at 120.5 MB/s" in text
    assert "failed in     replay after 2.50s" in text


def test_a_cancel_has_its_own_status_exit_code_and_words():
    refused = refusal(DrillError(ErrorCode.DRILL_CANCELLED, "drill d was cancelled"))
    assert (refused.status, refused.exit_code) == ("cancelled", EXIT_CANCELLED)
    text = output.error_text(refused.error)
    assert "DRILL_CANCELLED" in text and "Read the server log" not in text


def test_a_lost_server_exits_3_and_says_how_to_reattach():
    error = DrillError(ErrorCode.TEMPORAL_UNAVAILABLE, "lost the server while waiting for drill d",
                       "Once the server is back: pitrdrill drill result d")
    refused = refusal(error)
    assert refused.exit_code == EXIT_UNAVAILABLE
    assert "pitrdrill drill result d" in output.error_text(refused.error)


def test_the_warm_stage_says_what_it_loaded_and_how():
    report = DrillReport(drill_id="d", status="verified", database="shop")
    report.warm = WarmReport(relations=[
        WarmedRelation(name="public.orders", bytes=40_960_000, method="pg_prewarm"),
        WarmedRelation(name="public.orders_pkey", bytes=2_048_000, method="pg_prewarm")],
        bytes_warmed=43_008_000, seconds=0.05)
    assert "  warmed        43.0 MB in 0.050s: public.orders (pg_prewarm), " \
           "public.orders_pkey (pg_prewarm)" in output.summary(report)


def test_a_span_of_history_reads_in_its_own_unit():
    assert [output.span(s) for s in (3.908, 125, 7200, 30 * 86400)] == [
        "3.9 s", "2.1 min", "2.0 h", "30.0 d"]
