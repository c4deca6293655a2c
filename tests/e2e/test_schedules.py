"""Scheduled drills on a real Temporal server (Temporal Schedules, not a loop of ours), each
firing recovering real PostgreSQL to its own synthetic target: a different instant of the
restorable window per firing, seeded by its scheduled time, every one verified."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import timedelta
from pathlib import Path

import pytest

from domain.errors import DrillError, ErrorCode
from domain.report import DrillReport
from domain.spec import DrillSpec
from domain.synthetic import synthetic_instant
from tests.conftest import Scenario
from tests.e2e.test_cli import pitrdrill, write_spec
from workers import api, schedules

# Any instant of the window keeps at least the 300 rows the oldest backup holds.
CHECKS = [{"name": "orders recovered", "sql": "select count(*) >= 300 from orders",
           "expect": True}]


def _spec(scenario: Scenario, synthetic: str | None = "random-in-window") -> dict:
    return {"database": scenario.database, "source": scenario.source(),
            "target": {"action": "pause"}, "checks": CHECKS, "synthetic_target": synthetic}


def _cli_env(temporal_env, worker) -> dict:
    return {"TEMPORAL_ADDRESS": temporal_env.client.service_client.config.target_host,
            "PITRDRILL_TASK_QUEUE": worker.task_queue}


async def _until(condition, timeout_s: float, what: str, every_s: float = 0.2):
    deadline = time.monotonic() + timeout_s
    while True:
        found = await condition()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(every_s)


def _assert_synthetic(report: DrillReport, scenario: Scenario) -> None:
    """Verified, at the instant its mode and seed give inside the window, as predicted."""
    assert report.status == "verified", report.errors
    chosen = report.synthetic
    assert chosen is not None
    assert chosen.window_earliest <= chosen.instant <= chosen.window_latest
    # The window: from just past the oldest backup to the newest commit in the archive.
    assert chosen.window_earliest <= scenario.batches[0].commit_time
    assert chosen.window_latest >= scenario.late_batches[-1].commit_time
    assert chosen.instant == synthetic_instant(chosen.window_earliest, chosen.window_latest,
                                               chosen.mode, chosen.seed)
    assert report.target.mode == "time" and report.target.utc == chosen.instant
    assert not report.target.inclusive
    kept = report.plan.predicted.last_kept
    assert kept.commit_time < chosen.instant and report.recovered.matches_prediction
    assert report.checks[0].passed


async def test_an_interval_schedule_fires_drills_at_different_verified_instants(
        temporal_env, worker, scenario: Scenario):
    client = temporal_env.client
    name = f"ev-{uuid.uuid4().hex[:4]}"  # short: sandbox socket paths have 107 bytes
    spec = DrillSpec.model_validate(_spec(scenario))
    created = await schedules.create(client, name, spec, every=timedelta(seconds=5),
                                     task_queue=worker.task_queue)
    try:
        assert created.every_seconds == 5 and created.overlap == "SKIP"
        assert created.catchup_window_seconds == 600 and created.next_runs

        async def two_runs():
            runs = (await schedules.describe(client, name)).recent_runs
            return runs if len(runs) >= 2 else None

        runs = (await _until(two_runs, 60, "two firings"))[:2]
    finally:
        await schedules.delete(client, name)
    reports = [await api.drill_result(client, run.drill_id) for run in runs]
    for run, report in zip(runs, reports):
        assert run.drill_id.startswith(f"drill-{scenario.database}-{name}-")
        _assert_synthetic(report, scenario)
        # Seeded by the firing's scheduled time: the same night picks the same instant.
        assert report.synthetic.seed == run.scheduled_at
    assert reports[0].synthetic.instant != reports[1].synthetic.instant
    # Each scheduled drill carries the search attributes a started one does.
    listed = {d.drill_id: d for d in await api.list_drills(client, database=scenario.database)}
    for run in runs:
        assert listed[run.drill_id].target_mode == "time"
        assert listed[run.drill_id].status == "verified"
        assert listed[run.drill_id].workflow_status == "COMPLETED"


async def test_the_cli_creates_lists_describes_triggers_and_deletes_a_schedule(
        temporal_env, worker, scenario: Scenario, work_root: Path):
    env = _cli_env(temporal_env, worker)
    name = f"cli-{uuid.uuid4().hex[:4]}"
    spec_file = write_spec(work_root / f"{name}.yaml", _spec(scenario, synthetic=None))

    def cli(*args: str):
        return asyncio.to_thread(pitrdrill, "schedule", *args, "--json", env=env)

    created = await cli("create", name, "--spec", spec_file, "--cron", "30 2 * * *",
                        "--timezone", "europe/paris", "--synthetic-target", "latest")
    assert created.returncode == 0, created.stderr
    body = json.loads(created.stdout)["schedule"]
    assert body["cron"] == "30 2 * * *" and body["timezone"] == "Europe/Paris"
    assert body["synthetic_target"] == "latest" and body["next_runs"]
    again = await cli("create", name, "--spec", spec_file, "--every", "1h")
    assert again.returncode == 2
    assert json.loads(again.stdout)["errors"][0]["code"] == "SCHEDULE_EXISTS"

    async def listed():  # Temporal lists schedules from visibility, a moment behind
        found = await schedules.list_schedules(temporal_env.client, scenario.database)
        return [s for s in found if s.name == name]

    await _until(listed, 30, "the schedule in the list")
    done = await cli("list")
    assert done.returncode == 0, done.stderr
    mine = [s for s in json.loads(done.stdout) if s["name"] == name][0]
    assert mine["database"] == scenario.database and mine["synthetic_target"] == "latest"

    described = await cli("describe", name)
    assert described.returncode == 0, described.stderr
    described = json.loads(described.stdout)
    assert described["spec"]["synthetic_target"] == "latest"
    assert described["spec"]["source"] == scenario.source()
    assert described["task_queue"] == worker.task_queue and described["runs_total"] == 0

    triggered = await cli("trigger", name)
    assert triggered.returncode == 0, triggered.stderr
    drill_id = json.loads(triggered.stdout)["drill_id"]
    assert drill_id and drill_id.startswith(f"drill-{scenario.database}-{name}-")
    report = await api.drill_result(temporal_env.client, drill_id)
    _assert_synthetic(report, scenario)
    assert report.synthetic.mode == "latest"
    assert report.synthetic.instant == report.synthetic.window_latest
    # Everything committed before the newest commit is recovered; the newest is the first
    # dropped (a time target stops at a commit).
    assert report.plan.predicted.first_dropped.commit_time == report.synthetic.instant

    deleted = await cli("delete", name)
    assert deleted.returncode == 0, deleted.stderr
    gone = await cli("describe", name)
    assert gone.returncode == 2
    assert json.loads(gone.stdout)["errors"][0]["code"] == "SCHEDULE_NOT_FOUND"
    assert (await cli("trigger", name)).returncode == 2
    await _until(lambda: _none(listed), 30, "the schedule to leave the list")


async def _none(listing) -> bool:
    return not await listing()


async def test_a_schedule_temporal_refuses_is_spec_invalid_and_creates_nothing(
        temporal_env, worker, scenario: Scenario):
    spec = DrillSpec.model_validate(_spec(scenario))
    with pytest.raises(DrillError) as refused:
        await schedules.create(temporal_env.client, f"e2e-bad-{uuid.uuid4().hex[:6]}", spec,
                               cron="61 * * * *", task_queue=worker.task_queue)
    assert refused.value.code == ErrorCode.SPEC_INVALID
    with pytest.raises(DrillError) as missing:
        await schedules.delete(temporal_env.client, "e2e-no-such-schedule")
    assert missing.value.code == ErrorCode.SCHEDULE_NOT_FOUND


async def test_an_ago_target_outside_the_window_is_rejected_before_anything_exists(
        temporal_env, worker, scenario: Scenario):
    """Started directly (no schedule): the seed is the drill's start time."""
    spec = DrillSpec.model_validate(_spec(scenario, synthetic="ago:30d"))
    drill_id = await api.start_drill(temporal_env.client, spec,
                                     f"e2e-ago-{uuid.uuid4().hex[:6]}", worker.task_queue)
    report = await api.drill_result(temporal_env.client, drill_id)
    assert report.status == "rejected"
    assert [e.code for e in report.errors] == ["SYNTHETIC_TARGET_OUTSIDE_WINDOW"]
    assert report.synthetic is None and report.recovered is None
    assert "provision" not in report.metrics.stage_seconds
