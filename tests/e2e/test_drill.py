"""Real drills through real Temporal against the real lab: exact rows, LSNs and commit times."""

from __future__ import annotations

import uuid
from datetime import timedelta
from zoneinfo import ZoneInfo

from domain.report import DrillReport
from domain.spec import DrillSpec
from tests.conftest import Scenario, postgres_processes_under
from workers.cli.drill import run_drill

COUNT = "select count(*) from orders"
VOID = "select count(*) from orders where status = 'void'"


def new_york(instant) -> str:
    """A target as an incident responder types it: New York wall time with the zone name."""
    return instant.astimezone(ZoneInfo("America/New_York")).strftime(
        "%Y-%m-%d %H:%M:%S.%f America/New_York"
    )


async def drill(temporal_env, worker, scenario: Scenario, target: dict, checks=()) -> DrillReport:
    spec = DrillSpec.model_validate({
        "database": scenario.database, "source": scenario.source(), "target": target,
        "checks": [{"name": name, "sql": sql, "expect": expect} for name, sql, expect in checks],
    })
    return await run_drill(temporal_env.client, spec, f"e2e-{uuid.uuid4().hex[:8]}",
                           worker.task_queue, show_progress=False)


async def test_time_target_in_new_york_keeps_exactly_the_commits_before_it(
        temporal_env, worker, scenario, sandbox_root):
    kept, dropped = scenario.batches[2], scenario.batches[3]
    target = kept.commit_time + (dropped.commit_time - kept.commit_time) / 2
    report = await drill(temporal_env, worker, scenario, {"time": new_york(target)},
                         [("orders at target", COUNT, kept.rows)])
    assert report.status == "verified", report.errors
    assert report.checks[0].observed == kept.rows == 600
    assert report.recovered.last_commit_time == kept.commit_time
    assert f"transaction {dropped.xid}" in report.recovered.stop_reason
    predicted = report.plan.predicted
    assert (predicted.last_kept.xid, predicted.last_kept.commit_time) == (kept.xid, kept.commit_time)
    assert predicted.first_dropped.xid == dropped.xid
    assert predicted.replay_lsn == report.recovered.replay_lsn
    assert report.recovered.matches_prediction is True
    assert report.base_backup.id == "first"
    assert report.metrics.bytes_restored > 0 and report.metrics.wal_bytes_replayed > 0
    assert report.metrics.validation_pass_rate == 1.0
    assert report.metrics.data_lost_seconds == (target - kept.commit_time).total_seconds()
    assert postgres_processes_under(sandbox_root) == []
    assert not any(sandbox_root.iterdir())


async def test_a_failing_check_fails_the_drill_and_still_tears_down(
        temporal_env, worker, scenario, sandbox_root):
    kept = scenario.batches[1]
    report = await drill(temporal_env, worker, scenario,
                         {"time": new_york(kept.commit_time + timedelta(microseconds=1))},
                         [("orders at target", COUNT, 12345)])
    assert report.status == "failed"
    assert report.checks[0].observed == kept.rows
    assert [e.code for e in report.errors] == ["CHECK_FAILED"]
    assert postgres_processes_under(sandbox_root) == [] and not any(sandbox_root.iterdir())


async def test_a_target_before_every_backup_is_rejected_before_a_sandbox_exists(
        temporal_env, worker, scenario, sandbox_root):
    first_backup_start = scenario.batches[0].commit_time - timedelta(seconds=5)
    report = await drill(temporal_env, worker, scenario, {"time": new_york(first_backup_start)})
    assert report.status == "rejected"
    assert [e.code for e in report.errors] == ["TARGET_BEFORE_EARLIEST_BACKUP"]
    assert report.recovered is None and "provision" not in report.metrics.stage_seconds


async def test_a_zoneless_time_is_rejected_with_its_code(temporal_env, worker, scenario):
    report = await drill(temporal_env, worker, scenario, {"time": "2026-01-15 14:30:00"})
    assert report.status == "rejected"
    assert [e.code for e in report.errors] == ["TARGET_NAIVE_TIME"]


async def test_rerunning_a_finished_drill_id_returns_its_report_instead_of_a_second_drill(
        temporal_env, worker, scenario):
    spec = DrillSpec.model_validate({
        "database": scenario.database, "source": scenario.source(),
        "target": {"xid": scenario.batches[1].xid},
    })
    drill_id = f"e2e-idempotent-{uuid.uuid4().hex[:8]}"
    handle = temporal_env.client.get_workflow_handle(drill_id)
    first = await run_drill(temporal_env.client, spec, drill_id, worker.task_queue, False)
    first_run = (await handle.describe()).run_id
    again = await run_drill(temporal_env.client, spec, drill_id, worker.task_queue, False)
    assert first.status == again.status == "verified"
    assert again.started_at == first.started_at and again.finished_at == first.finished_at
    assert (await handle.describe()).run_id == first_run


async def test_a_check_whose_sql_fails_is_check_error(temporal_env, worker, scenario):
    report = await drill(temporal_env, worker, scenario, {"xid": scenario.batches[1].xid},
                         [("broken", "select count(*) from no_such_table", 0),
                          ("rows", COUNT, scenario.batches[0].rows)])
    assert report.status == "failed"
    assert [e.code for e in report.errors] == ["CHECK_ERROR"]
    assert "no_such_table" in report.checks[0].error and report.checks[1].passed
