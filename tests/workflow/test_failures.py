"""Failures once a sandbox exists: reported under their code, the sandbox torn down (or, with
its host gone, said to be left there), the failing stage timed apart from the finished ones."""

from __future__ import annotations

from tests.workflow.drills import activity_runs, make_spec, scheduled_names, start
from tests.workflow.standins import StandIns, running
from workflows.search_attributes import PITR_STATUS


async def test_a_replay_that_cannot_reach_the_target_fails_the_drill_after_teardown(
        temporal_env, task_queue, started_drills):
    stand_ins = StandIns(task_queue, replay="unreachable")
    async with running(temporal_env.client, stand_ins):
        handle = await start(temporal_env.client, make_spec(), task_queue, started_drills)
        report = await handle.result()
        description = await handle.describe()

    assert report.status == "failed"
    assert [error.code for error in report.errors] == ["RECOVERY_TARGET_NOT_REACHED"]
    assert "archive ends at 0/3000000" in report.errors[0].message
    assert report.errors[0].hint.startswith("Check the archive")
    assert len(stand_ins.called("replay_to_target")) == 1  # non-retryable: one attempt
    names = await scheduled_names(handle)
    assert names[-2:] == ["teardown_sandbox", "append_to_ledger"] and "run_checks" not in names
    [entry] = stand_ins.called("append_to_ledger")
    assert entry.kind == "drill" and entry.report.status == "failed"
    assert "record_throughput" not in names  # a failed drill's rates would mislead estimates
    assert "replay" in report.metrics.failed_stages
    assert "replay" not in report.metrics.stage_seconds
    assert {"provision", "restore", "teardown"} <= report.metrics.stage_seconds.keys()
    assert report.recovered is None
    assert description.typed_search_attributes.get(PITR_STATUS) == "failed"


async def test_an_unexpected_error_in_checks_is_reported_as_check_error_after_retries(
        temporal_env, task_queue, started_drills):
    """RUN_CHECKS allows 3 attempts (1 s, then 2 s apart): about 3 s."""
    stand_ins = StandIns(task_queue, checks="crash")
    async with running(temporal_env.client, stand_ins):
        handle = await start(temporal_env.client, make_spec(), task_queue, started_drills)
        report = await handle.result()

    assert report.status == "failed"
    assert [error.code for error in report.errors] == ["CHECK_ERROR"]
    assert "server closed the connection unexpectedly" in report.errors[0].message
    assert len(stand_ins.called("run_checks")) == 3
    runs = {run.name: run for run in await activity_runs(handle)}
    assert runs["run_checks"].outcome == "failed"
    assert runs["teardown_sandbox"].outcome == "completed"
    assert "checks" in report.metrics.failed_stages
    assert report.recovered is not None and report.recovered.matches_prediction is True


async def test_a_host_that_never_comes_back_fails_with_sandbox_host_lost(
        temporal_env, task_queue, started_drills):
    """No worker serves the host queue provision named; host_wait_seconds = 2."""
    stand_ins = StandIns(task_queue)
    async with running(temporal_env.client, stand_ins, host=False):
        handle = await start(temporal_env.client, make_spec(), task_queue, started_drills)
        report = await handle.result()

    assert report.status == "failed"
    assert [error.code for error in report.errors] == ["SANDBOX_HOST_LOST", "SANDBOX_HOST_LOST"]
    # The cause first, then what it left behind.
    restore_lost, teardown_lost = report.errors
    assert "restore_base_backup" in restore_lost.message
    assert teardown_lost.message.startswith("teardown of")
    assert "no worker of the sandbox's host" in restore_lost.message
    assert "left on that host" in teardown_lost.message
    assert stand_ins.host_queue in teardown_lost.message
    runs = await activity_runs(handle)
    host_runs = [run for run in runs if run.task_queue == stand_ins.host_queue]
    assert [(run.name, run.started, run.outcome) for run in host_runs] == [
        ("restore_base_backup", False, "timed_out"), ("teardown_sandbox", False, "timed_out")]
    assert "replay_to_target" not in [run.name for run in runs]
    assert report.metrics.failed_stages.keys() == {"restore", "teardown"}
