"""Escalation: pre-flight refuses, the drill asks a human through the `decide` update and waits
(escalation.timeout_seconds = 1 here). Nothing is provisioned unless the answer is proceed."""

from __future__ import annotations

import asyncio

import pytest
from temporalio.client import WorkflowUpdateFailedError

from domain.escalation import Decision
from domain.stages import Stage
from domain.targets import TargetSpec
from tests.workflow.drills import make_spec, scheduled_names, start, until, until_async
from tests.workflow.standins import PREDICTED_STOP_LSN, StandIns, running, wal_gap
from workers import api
from workflows.drill import DrillWorkflow
from workflows.search_attributes import PITR_STATUS

NEW_LSN = PREDICTED_STOP_LSN


async def test_nobody_deciding_rejects_the_drill_when_the_escalation_times_out(
        temporal_env, task_queue, started_drills):
    stand_ins = StandIns(task_queue, plan_failures=[wal_gap()])
    spec = make_spec(fallback=["escalate"])
    async with running(temporal_env.client, stand_ins):
        handle = await start(temporal_env.client, spec, task_queue, started_drills)
        report = await handle.result()
        description = await handle.describe()

    assert report.status == "rejected"
    assert [error.code for error in report.errors] == ["WAL_GAP", "ESCALATION_TIMEOUT"]
    escalation = report.escalation
    assert escalation.cause_code == "WAL_GAP" and escalation.outcome == "timeout"
    assert escalation.decision is None and escalation.waited_seconds >= 1
    assert escalation.notified == ["webhook https://hooks.example/pitr"]
    [notice] = stand_ins.called("notify_escalation")
    assert notice.cause.code == "WAL_GAP" and notice.timeout_seconds == 1
    assert f"pitrdrill drill decide {handle.id}" in notice.how_to_decide
    names = await scheduled_names(handle)
    # A rejected drill leaves evidence too: the ledger has it.
    assert names == ["resolve_target", "plan_drill", "notify_escalation", "append_to_ledger"]
    assert "provision_sandbox" not in names and not stand_ins.called("provision_sandbox")
    assert report.recovered is None and report.metrics.stage_seconds.keys() == {"resolve_target"}
    assert report.metrics.failed_stages.keys() == {"plan"}
    assert description.typed_search_attributes.get(PITR_STATUS) == "rejected"


async def test_an_abort_through_decide_rejects_and_a_drill_not_waiting_refuses_decisions(
        temporal_env, task_queue, started_drills):
    client = temporal_env.client
    stand_ins = StandIns(task_queue, plan_failures=[wal_gap()])
    stand_ins.plan_gate = asyncio.Event()  # hold the drill in `plan`: not waiting yet
    spec = make_spec(fallback=["escalate"], escalation={"timeout_seconds": 60})
    async with running(client, stand_ins):
        handle = await start(client, spec, task_queue, started_drills)
        await until(lambda: stand_ins.called("plan_drill"))
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await api.decide(client, handle.id, Decision(action="proceed", by="too-early"))
        assert "not waiting for a decision" in str(refused.value.cause)

        stand_ins.plan_gate.set()

        async def escalated():
            progress = await handle.query(DrillWorkflow.status)
            return progress is not None and progress.stage == Stage.ESCALATED
        await until_async(escalated)
        answer = await api.decide(client, handle.id,
                                  Decision(action="abort", by="sre-on-call", note="not today"))
        report = await handle.result()

    assert answer == "abort accepted"
    assert report.status == "rejected"
    assert [error.code for error in report.errors] == ["WAL_GAP", "ESCALATION_ABORTED"]
    assert report.escalation.outcome == "abort"
    assert report.escalation.decision.by == "sre-on-call"
    assert report.escalation.waited_seconds < 60
    names = await scheduled_names(handle)
    # A rejected drill leaves evidence too: the ledger has it.
    assert names == ["resolve_target", "plan_drill", "notify_escalation", "append_to_ledger"]
    assert not stand_ins.called("provision_sandbox")


async def _proceed_with_lsn(client, task_queue, started_drills):
    """Escalated from a time target with non-default inclusive/action/timeline; a human
    answers proceed with an LSN."""
    stand_ins = StandIns(task_queue, plan_failures=[wal_gap()])
    spec = make_spec(fallback=["escalate"], escalation={"timeout_seconds": 60},
                     target={"inclusive": True, "action": "shutdown", "timeline": "current"})
    async with running(client, stand_ins):
        handle = await start(client, spec, task_queue, started_drills)
        await until(lambda: stand_ins.called("notify_escalation"))

        async def decided():
            try:
                return await api.decide(client, handle.id, Decision(
                    action="proceed", by="sre-on-call", target=TargetSpec(lsn=NEW_LSN)))
            except WorkflowUpdateFailedError:
                return None  # notified, but the wait had not begun: ask again
        answer = await until_async(decided)
        report = await handle.result()
    return stand_ins, handle, answer, report


async def test_proceeding_with_a_new_target_plans_it_again_and_the_drill_verifies(
        temporal_env, task_queue, started_drills):
    stand_ins, handle, answer, report = await _proceed_with_lsn(
        temporal_env.client, task_queue, started_drills)

    assert answer == "proceed accepted"
    first, second = stand_ins.called("resolve_target")
    assert first.target.time is not None and first.target.lsn is None
    # The decision's mode replaces the spec's: the new one set, the old one cleared.
    assert second.target.lsn == NEW_LSN and second.target.time is None
    planned = stand_ins.called("plan_drill")
    assert len(planned) == 2
    assert planned[0].target.mode == "time" and planned[0].target.utc is not None
    assert planned[1].target.mode == "lsn" and planned[1].target.lsn == NEW_LSN
    assert planned[1].target.utc is None
    assert report.status == "verified", report.errors
    assert report.errors == [] and report.target.mode == "lsn" and report.target.lsn == NEW_LSN
    assert report.escalation.outcome == "proceed"
    assert report.escalation.decision.target.lsn == NEW_LSN
    assert report.recovered.matches_prediction is True
    assert await scheduled_names(handle) == [
        "resolve_target", "plan_drill", "notify_escalation", "resolve_target", "plan_drill",
        "provision_sandbox", "restore_base_backup", "replay_to_target", "run_checks",
        "teardown_sandbox", "record_throughput", "append_to_ledger"]


async def test_proceeding_with_a_new_target_keeps_the_specs_action_timeline_and_edge(
        temporal_env, task_queue, started_drills):
    stand_ins, _, _, report = await _proceed_with_lsn(
        temporal_env.client, task_queue, started_drills)

    second = stand_ins.called("resolve_target")[1].target
    assert (second.action, second.timeline, second.inclusive) == ("shutdown", "current", True)
    planned = stand_ins.called("plan_drill")[1].target
    assert (planned.action, planned.timeline, planned.inclusive) == ("shutdown", "current", True)
    assert report.target.action == "shutdown"
