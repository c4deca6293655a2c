"""What a running drill says about itself: the `status` query and the search attributes."""

from __future__ import annotations

from domain.stages import Stage
from tests.workflow.drills import make_spec, scheduled_names, start, until
from tests.workflow.standins import PREDICTED_STOP_LSN, BACKUP, StandIns, running
from workers import api
from workflows.drill import DrillWorkflow
from workflows.search_attributes import PITR_DATABASE, PITR_STATUS, PITR_TARGET_MODE


async def test_status_during_replay_shows_the_stages_done_and_the_predicted_stop(
        temporal_env, task_queue, started_drills):
    client = temporal_env.client
    stand_ins = StandIns(task_queue, replay="blocks")
    async with running(client, stand_ins):
        handle = await start(client, make_spec(), task_queue, started_drills)
        await until(lambda: stand_ins.called("replay_to_target"))
        progress = await handle.query(DrillWorkflow.status)
        live = await api.drill_status(client, handle.id)
        during = (await handle.describe()).typed_search_attributes
        stand_ins.replay_release.set()
        report = await handle.result()
        after = await handle.query(DrillWorkflow.status)
        finished = (await handle.describe()).typed_search_attributes

    assert progress.stage == Stage.REPLAY and not progress.finished
    assert [timing.stage for timing in progress.done] == [
        Stage.RESOLVE, Stage.PLAN, Stage.PROVISION, Stage.RESTORE]
    assert progress.predicted_stop_lsn == PREDICTED_STOP_LSN
    assert progress.replay_start_lsn == BACKUP.start_lsn
    assert progress.restore_bytes_total == BACKUP.size_bytes
    assert progress.sandbox_task_queue == stand_ins.host_queue
    assert live.progress.stage == Stage.REPLAY
    assert during.get(PITR_DATABASE) == "shop" and during.get(PITR_STATUS) == "replay"
    assert during.get(PITR_TARGET_MODE) == "time"

    assert report.status == "verified", report.errors
    assert report.recovered.matches_prediction is True
    assert [timing.stage for timing in after.done] == [
        Stage.RESOLVE, Stage.PLAN, Stage.PROVISION, Stage.RESTORE, Stage.REPLAY, Stage.CHECKS,
        Stage.TEARDOWN]
    assert after.finished and after.stage is None
    assert finished.get(PITR_STATUS) == "verified"
    assert [c.observed for c in report.checks] == [4100, 0]
    [metrics] = stand_ins.called("record_throughput")
    assert metrics.bytes_restored == BACKUP.size_bytes and metrics.checks_passed == 2
    assert (await scheduled_names(handle))[-2:] == ["record_throughput", "append_to_ledger"]
    # The timeline: every stage that ran, in order, each with its start.
    assert [(span.stage, span.outcome) for span in report.stages] == [
        (stage, "done") for stage in ("resolve_target", "plan", "provision", "restore", "replay",
                                      "checks", "teardown")]
    assert all(a.started_at <= b.started_at for a, b in zip(report.stages, report.stages[1:]))
