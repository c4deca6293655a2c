"""A cancel always ends the drill CANCELED, after teardown: whether the interrupted activity
stopped (replay, heartbeating) or finished anyway (a restore that never saw the cancel)."""

from __future__ import annotations

import pytest
from temporalio.client import WorkflowExecutionStatus, WorkflowFailureError
from temporalio.exceptions import CancelledError

from domain.errors import DrillError, ErrorCode
from domain.stages import Stage
from tests.workflow.drills import activity_runs, make_spec, start, until
from tests.workflow.standins import StandIns, running, wal_gap
from workers import api
from workflows.drill import DrillWorkflow
from workflows.search_attributes import PITR_STATUS


async def _cancelled(handle) -> None:
    with pytest.raises(WorkflowFailureError) as failed:
        await handle.result()
    assert isinstance(failed.value.cause, CancelledError), failed.value.cause


async def test_a_cancel_during_replay_tears_down_and_ends_cancelled(
        temporal_env, task_queue, started_drills):
    client = temporal_env.client
    stand_ins = StandIns(task_queue, replay="blocks")
    async with running(client, stand_ins):
        handle = await start(client, make_spec(), task_queue, started_drills)
        await until(lambda: stand_ins.called("replay_to_target"))
        await handle.cancel()
        await _cancelled(handle)
        with pytest.raises(DrillError) as raised:
            await api.drill_result(client, handle.id)
        progress = await handle.query(DrillWorkflow.status)
        description = await handle.describe()

    assert raised.value.code == ErrorCode.DRILL_CANCELLED
    assert stand_ins.replay_cancelled.is_set()  # the activity itself saw the cancel
    assert description.status == WorkflowExecutionStatus.CANCELED
    assert description.typed_search_attributes.get(PITR_STATUS) == "cancelled"
    runs = {run.name: run for run in await activity_runs(handle)}
    assert runs["replay_to_target"].outcome == "canceled"
    assert runs["teardown_sandbox"].outcome == "completed"
    assert runs["teardown_sandbox"].task_queue == stand_ins.host_queue
    assert len(stand_ins.called("teardown_sandbox")) == 1
    assert "run_checks" not in runs and "record_throughput" not in runs
    assert [t.stage for t in progress.failed] == [Stage.REPLAY]
    assert progress.finished and progress.stage is None
    assert progress.done[-1].stage == Stage.TEARDOWN


async def test_a_cancel_the_restore_never_saw_still_ends_cancelled_after_teardown(
        temporal_env, task_queue, started_drills):
    """Issue 16, the lost cancel: a sync restore that does not heartbeat finishes normally
    after the cancel; the drill must not go on to replay."""
    client = temporal_env.client
    stand_ins = StandIns(task_queue, restore="ignores_cancel")
    async with running(client, stand_ins):
        handle = await start(client, make_spec(), task_queue, started_drills)
        await until(lambda: stand_ins.called("restore_base_backup"))
        await handle.cancel()
        await _cancelled(handle)
        description = await handle.describe()

    assert stand_ins.restore_finished.is_set()
    assert description.status == WorkflowExecutionStatus.CANCELED
    runs = {run.name: run for run in await activity_runs(handle)}
    assert runs["restore_base_backup"].outcome == "completed"  # it ignored the cancel
    assert runs["teardown_sandbox"].outcome == "completed"
    assert "replay_to_target" not in runs and "run_checks" not in runs
    assert not stand_ins.called("replay_to_target")


async def test_a_cancel_while_the_escalation_is_being_sent_ends_cancelled(
        temporal_env, task_queue, started_drills):
    client = temporal_env.client
    stand_ins = StandIns(task_queue, plan_failures=[wal_gap()])
    stand_ins.hang = {"notify_escalation"}
    spec = make_spec(fallback=["escalate"], escalation={"timeout_seconds": 2})
    async with running(client, stand_ins):
        handle = await start(client, spec, task_queue, started_drills)
        await until(lambda: stand_ins.called("notify_escalation"))
        await handle.cancel()
        await _cancelled(handle)


async def test_a_cancel_while_throughput_is_recorded_ends_cancelled(
        temporal_env, task_queue, started_drills):
    client = temporal_env.client
    stand_ins = StandIns(task_queue)
    stand_ins.hang = {"record_throughput"}
    async with running(client, stand_ins):
        handle = await start(client, make_spec(), task_queue, started_drills)
        await until(lambda: stand_ins.called("record_throughput"))
        await handle.cancel()
        await _cancelled(handle)
