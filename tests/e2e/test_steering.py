"""Steering drills on a real server: start prints an id, the same id attaches, status and
list read the drill's own state and search attributes, result waits with `run`'s exit codes;
a spec that is not UTF-8 is refused typed; a server that goes away names the drill."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

from domain.spec import DrillSpec
from domain.stages import Stage
from tests.conftest import Scenario
from tests.e2e.test_cli import pitrdrill, write_spec
from workers import api

COUNT = "select count(*) from orders"


def _spec(scenario: Scenario, database: str | None = None) -> dict:
    kept = scenario.batches[2]
    return {"database": database or scenario.database, "source": scenario.source(),
            "target": {"xid": str(scenario.batches[3].xid)},
            "checks": [{"name": "orders at target", "sql": COUNT, "expect": kept.rows}]}


def _cli_env(temporal_env, worker) -> dict:
    return {"TEMPORAL_ADDRESS": temporal_env.client.service_client.config.target_host,
            "PITRDRILL_TASK_QUEUE": worker.task_queue}


async def test_start_twice_attaches_and_status_follows_the_stages(temporal_env, worker, scenario):
    spec = DrillSpec.model_validate(_spec(scenario))
    drill_id = f"e2e-steer-{uuid.uuid4().hex[:6]}"
    client = temporal_env.client
    assert await api.start_drill(client, spec, drill_id, worker.task_queue) == drill_id
    first_run = (await client.get_workflow_handle(drill_id).describe()).run_id
    assert await api.start_drill(client, spec, drill_id, worker.task_queue) == drill_id
    assert (await client.get_workflow_handle(drill_id).describe()).run_id == first_run
    seen = set()
    report = None
    while report is None:
        live = await api.drill_status(client, drill_id)
        seen.add(live.progress.stage)
        if live.progress.finished:
            report = await api.drill_result(client, drill_id)
        await asyncio.sleep(0.05)
    assert report.status == "verified" and report.checks[0].observed == scenario.batches[2].rows
    assert report.workflow_run_id == first_run
    assert live.progress.stage is None and [t.stage for t in live.progress.done] == [
        Stage.RESOLVE, Stage.PLAN, Stage.PROVISION, Stage.RESTORE, Stage.REPLAY, Stage.CHECKS,
        Stage.TEARDOWN]
    assert live.progress.predicted_stop_lsn == report.plan.predicted.replay_lsn
    assert seen & {Stage.RESTORE, Stage.REPLAY, Stage.CHECKS}, seen
    # The UI's columns: the drill is found by database and by its final status.
    listed = await api.list_drills(client, database=scenario.database, status="verified")
    mine = [d for d in listed if d.drill_id == drill_id]
    assert mine and mine[0].target_mode == "xid" and mine[0].workflow_status == "COMPLETED"
    assert mine[0].kind == "drill"
    description = await client.get_workflow_handle(drill_id).describe()
    assert scenario.database in (await description.static_summary() or "")


async def test_cli_start_status_result_and_list_speak_json(temporal_env, worker, scenario,
                                                           work_root: Path):
    spec = write_spec(work_root / "steer.yaml", _spec(scenario))
    env = _cli_env(temporal_env, worker)
    started = await asyncio.to_thread(pitrdrill, "drill", "start", spec, "--json", env=env)
    assert started.returncode == 0, started.stderr
    drill_id = json.loads(started.stdout)["drill_id"]
    status = await asyncio.to_thread(pitrdrill, "drill", "status", drill_id, "--json", env=env)
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["progress"]["drill_id"] == drill_id
    result = await asyncio.to_thread(pitrdrill, "drill", "result", drill_id, "--json", env=env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["status"] == "verified"
    listed = await asyncio.to_thread(pitrdrill, "drill", "list", "--database", scenario.database,
                                     "--json", env=env)
    assert drill_id in [d["drill_id"] for d in json.loads(listed.stdout)]


async def test_a_database_typo_fails_early_with_its_code(temporal_env, worker, scenario):
    spec = DrillSpec.model_validate(_spec(scenario, database="dmeo"))
    drill_id = await api.start_drill(temporal_env.client, spec, f"e2e-typo-{uuid.uuid4().hex[:6]}",
                                     worker.task_queue)
    report = await api.drill_result(temporal_env.client, drill_id)
    assert report.status == "failed"
    assert [e.code for e in report.errors] == ["DATABASE_NOT_FOUND"]
    assert scenario.database in report.errors[0].message
    assert "replay" in report.metrics.failed_stages and "checks" not in report.metrics.stage_seconds
    assert "OperationalError" not in report.errors[0].message


def test_a_spec_that_is_not_utf8_is_spec_invalid_exit_2(work_root: Path):
    spec = work_root / "latin1.yaml"
    spec.write_bytes(b"database: shop\xff\xfe\n")
    for command in (("drill", "run", str(spec), "--json"), ("plan", str(spec), "--json")):
        done = pitrdrill(*command)
        assert done.returncode == 2, done.stderr
        body = json.loads(done.stdout)
        assert body["errors"][0]["code"] == "SPEC_INVALID"
        assert "UTF-8" in body["errors"][0]["message"] and "Traceback" not in done.stderr


def test_result_without_a_server_is_temporal_unavailable_exit_3():
    done = pitrdrill("drill", "result", "drill-x-1", "--json",
                     env={"TEMPORAL_ADDRESS": "127.0.0.1:1"})
    assert done.returncode == 3
    assert json.loads(done.stdout)["errors"][0]["code"] == "TEMPORAL_UNAVAILABLE"
