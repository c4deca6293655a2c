"""The fallback chain end to end: real drills over damaged copies of the lab's backups and
archive, and escalation to a human through a real Temporal update."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from adapters.filesystem_backups import FilesystemBackups
from domain.escalation import Decision
from domain.stages import Stage
from domain.lsn import parse_lsn, segment_name, segment_number
from domain.spec import DrillSpec
from tests.conftest import Scenario
from tests.e2e.test_cli import pitrdrill
from tests.e2e.test_drill import COUNT, VOID, new_york
from workers.cli.drill import run_drill
from workflows.drill import DrillWorkflow


@pytest.fixture
def damaged(scenario: Scenario, work_root: Path, runtime):
    """A private copy of the backups and archive (readable by the server user) to damage."""
    root = work_root / f"damaged-{uuid.uuid4().hex[:6]}"
    shutil.copytree(scenario.lab.base_backups, root / "base")
    shutil.copytree(scenario.lab.wal_archive, root / "wal")
    root.chmod(0o755)
    runtime.give(root, recursive=True)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def spec_for(scenario: Scenario, root: Path, target: dict, rows: int, void: int,
             **extra) -> DrillSpec:
    return DrillSpec.model_validate({
        "database": scenario.database, "target": target,
        "source": {"base_backups": str(root / "base"), "wal_archive": str(root / "wal")},
        "checks": [{"name": "rows", "sql": COUNT, "expect": rows},
                   {"name": "void", "sql": VOID, "expect": void}], **extra,
    })


def observed(report) -> list:
    return [check.observed for check in report.checks]


def second_backup_segment(root: Path) -> Path:
    second = next(b for b in FilesystemBackups.read(root / "base", root / "wal") if b.id == "second")
    return root / "wal" / segment_name(1, segment_number(parse_lsn(second.start_lsn)))


async def test_last_consistent_before_gap_recovers_to_the_last_commit_before_the_missing_segment(
        temporal_env, worker, scenario, damaged):
    second_backup_segment(damaged).unlink()  # between the damage and the late batches
    wanted, last = scenario.late_batches[0], scenario.damage[-1]
    spec = spec_for(scenario, damaged, {"time": new_york(wanted.commit_time + timedelta(microseconds=1))},
                    last.rows, 150, fallback=["last_consistent_before_gap"])
    report = await run_drill(temporal_env.client, spec, f"e2e-gap-{uuid.uuid4().hex[:6]}",
                             worker.task_queue, False)
    assert report.status == "verified", report.errors
    assert observed(report) == [last.rows, 150]  # all damage replayed, no late batch
    assert report.recovered.last_commit_time == last.commit_time
    assert report.recovered.matches_prediction is True
    fallback = report.plan.fallback
    assert (fallback.step, fallback.cause_code) == ("last_consistent_before_gap", "WAL_GAP")
    assert second_backup_segment(damaged).name in fallback.cause
    assert (report.target.mode, report.target.xid, report.target.inclusive) == ("xid", last.xid, True)
    # late_batches[0] lies past the missing segment: what the segment held is unknowable.
    assert fallback.transactions_given_up is None and fallback.transactions_given_up_at_least == 1
    assert fallback.seconds_given_up == (wanted.commit_time - last.commit_time).total_seconds()
    assert report.base_backup.id == "first"
    assert [s.backup_id for s in report.plan.skipped] == ["second"]


def corrupt_largest_relation_file(backup: Path) -> None:
    victim = max((p for p in (backup / "base").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    with victim.open("r+b") as relation:
        relation.seek(8192 + 100)
        relation.write(b"\xde\xad\xbe\xef")


async def test_earlier_backup_replaces_a_backup_that_fails_verification(
        temporal_env, worker, scenario, damaged):
    corrupt_largest_relation_file(damaged / "base" / "second")
    final = scenario.late_batches[-1].rows
    refused = await run_drill(temporal_env.client,
                              spec_for(scenario, damaged, {"latest": True}, final, 150),
                              f"e2e-corrupt-{uuid.uuid4().hex[:6]}", worker.task_queue, False)
    assert refused.status == "rejected"
    assert [e.code for e in refused.errors] == ["BACKUP_CORRUPT"] and "second" in refused.errors[0].message
    spec = spec_for(scenario, damaged, {"latest": True}, final, 150, fallback=["earlier_backup"])
    report = await run_drill(temporal_env.client, spec, f"e2e-earlier-{uuid.uuid4().hex[:6]}",
                             worker.task_queue, False)
    assert report.status == "verified", report.errors
    assert report.base_backup.id == "first"
    assert report.plan.fallback.skipped_backups == ["second"]
    assert observed(report) == [final, 150]


def beyond_the_archive() -> dict:
    """A time after the last archived commit (and not in the future): TARGET_BEYOND_ARCHIVE."""
    return {"time": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")}


async def start_escalating(temporal_env, worker, scenario, root: Path, **escalation):
    spec = spec_for(scenario, root, beyond_the_archive(), scenario.late_batches[-1].rows, 150,
                    fallback=["escalate"], escalation=escalation)
    drill_id = f"e2e-escalate-{uuid.uuid4().hex[:6]}"
    handle = await temporal_env.client.start_workflow(
        DrillWorkflow.run, spec, id=drill_id, task_queue=worker.task_queue)
    for _ in range(200):
        progress = await handle.query(DrillWorkflow.status)
        if progress is not None and progress.stage == Stage.ESCALATED:
            return handle
        await asyncio.sleep(0.05)
    raise AssertionError("the drill never escalated")


async def test_escalate_then_proceed_from_the_cli_recovers_what_can_be(
        temporal_env, worker, scenario, damaged):
    notice_file = damaged / "notice.json"
    handle = await start_escalating(temporal_env, worker, scenario, damaged,
                                    command=f"cat > {notice_file}", timeout_seconds=120)
    notice = json.loads(notice_file.read_text())
    assert notice["drill_id"] == handle.id and notice["cause"]["code"] == "TARGET_BEYOND_ARCHIVE"
    assert "drill decide" in notice["how_to_decide"]
    address = temporal_env.client.service_client.config.target_host
    # In a thread: the worker answering the update shares this test's event loop.
    done = await asyncio.to_thread(pitrdrill, "drill", "decide", handle.id, "proceed", "--by",
                                   "sre-on-call", "--json", env={"TEMPORAL_ADDRESS": address})
    assert done.returncode == 0, done.stdout + done.stderr
    report = await handle.result()
    assert report.status == "verified", report.errors
    assert report.escalation.outcome == "proceed" and report.escalation.decision.by == "sre-on-call"
    assert report.escalation.notified == ["command"]
    assert report.plan.fallback.step == "last_consistent_before_gap"
    assert report.recovered.last_commit_time == scenario.late_batches[-1].commit_time
    assert observed(report) == [scenario.late_batches[-1].rows, 150]


async def test_escalate_then_abort_rejects_having_created_nothing(temporal_env, worker, scenario,
                                                                   damaged):
    handle = await start_escalating(temporal_env, worker, scenario, damaged, timeout_seconds=120)
    await handle.execute_update(DrillWorkflow.decide, Decision(action="abort", note="not today"))
    report = await handle.result()
    assert report.status == "rejected" and report.escalation.outcome == "abort"
    assert [e.code for e in report.errors] == ["TARGET_BEYOND_ARCHIVE", "ESCALATION_ABORTED"]
    assert report.recovered is None and "provision" not in report.metrics.stage_seconds


async def test_escalate_then_timeout_rejects_and_refuses_late_decisions(temporal_env, worker,
                                                                         scenario, damaged):
    handle = await start_escalating(temporal_env, worker, scenario, damaged, timeout_seconds=1)
    report = await handle.result()
    assert report.status == "rejected" and report.escalation.outcome == "timeout"
    assert [e.code for e in report.errors] == ["TARGET_BEYOND_ARCHIVE", "ESCALATION_TIMEOUT"]
    assert report.escalation.waited_seconds >= 1
    address = temporal_env.client.service_client.config.target_host
    late = await asyncio.to_thread(pitrdrill, "drill", "decide", handle.id, "proceed", "--json",
                                   env={"TEMPORAL_ADDRESS": address})
    assert late.returncode == 2


async def test_a_compressed_archive_is_planned_and_replayed_from_its_compressed_segments(
        temporal_env, worker, scenario, damaged, runtime):
    for segment in (damaged / "wal").iterdir():
        if len(segment.name) == 24:  # segments, not .backup or .history files
            subprocess.run(["gzip", str(segment)], check=True)
    runtime.give(damaged, recursive=True)
    kept = scenario.late_batches[0]
    spec = spec_for(scenario, damaged, {"xid": scenario.late_batches[1].xid}, kept.rows, 150)
    report = await run_drill(temporal_env.client, spec, f"e2e-gz-{uuid.uuid4().hex[:6]}",
                             worker.task_queue, False)
    assert report.status == "verified", report.errors
    assert report.recovered.last_commit_time == kept.commit_time
    assert report.recovered.matches_prediction is True
