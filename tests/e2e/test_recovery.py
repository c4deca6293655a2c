"""Real recoveries: proven like a drill into a destination directory, then promoted only on a
human's approval (or left paused on abort). Real PostgreSQL, real Temporal."""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import socket
import uuid
from pathlib import Path

import psycopg
import pytest
from temporalio.client import WorkflowUpdateFailedError

from adapters.pg_runtime import PostgresRuntime
from domain.recovery import Abort, Approval, RecoverySpec
from domain.sandbox import Sandbox
from domain.stages import Stage
from tests.conftest import Scenario, postgres_processes_under
from workers import api

COUNT = "select count(*) from orders"


def _spec(scenario: Scenario, destination: Path) -> RecoverySpec:
    kept = scenario.batches[3]
    return RecoverySpec.model_validate({
        "database": scenario.database, "source": scenario.source(),
        "target": {"xid": str(scenario.batches[4].xid)}, "destination": str(destination),
        "checks": [{"name": "orders at target", "sql": COUNT, "expect": kept.rows}]})


async def _until_waiting(client, recovery_id: str) -> None:
    for _ in range(600):
        progress = await api.drill_progress(client, recovery_id)
        if progress is not None and progress.stage == Stage.AWAITING_APPROVAL:
            return
        assert progress is None or not progress.finished, "ended without waiting"
        await asyncio.sleep(0.1)
    raise AssertionError("the recovery never waited for approval")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def destination(work_root: Path, runtime: PostgresRuntime, worker):
    """A promoted or paused recovery is the operator's to stop: the test does it, and removes
    the recovery's socket and log directory, so later tests find an empty sandbox root."""
    path = work_root / f"recovered-{uuid.uuid4().hex[:6]}"
    yield path
    if (path / "postmaster.pid").exists():
        runtime.run("pg_ctl", "stop", "-D", str(path), "-m", "immediate", check=False)
    assert postgres_processes_under(path) == []
    for kept in worker.sandbox_root.glob("recovery-*"):
        shutil.rmtree(kept)


async def test_approve_promotes_a_writable_database_with_exactly_the_rows_at_the_target(
        temporal_env, worker, scenario, destination):
    client = temporal_env.client
    spec = _spec(scenario, destination)
    recovery_id = await api.start_recovery(client, spec, task_queue=worker.task_queue)
    await _until_waiting(client, recovery_id)
    # Until a human approves, nothing listens on TCP and nothing can be written.
    port = _free_port()
    said = await api.approve_promotion(client, recovery_id, Approval(
        by="sre-on-call", reason="INC-4711: restore before the batch job",
        listen_addresses="127.0.0.1", port=port))
    assert "sre-on-call" in said
    report = await api.recovery_result(client, recovery_id)
    assert report.status == "promoted", report.errors
    assert report.decision.by == "sre-on-call" and report.decision.action == "approve"
    assert "INC-4711" in report.decision.reason
    assert report.recovered.matches_prediction is True
    assert report.checks[0].observed == scenario.batches[3].rows
    promotion = report.promotion
    assert promotion.data_dir == str(destination) and promotion.port == port
    assert promotion.timeline == 2  # promotion starts a new timeline
    with socket.create_connection(("127.0.0.1", port), timeout=5):
        pass  # the approved listener is open
    conninfo = psycopg.conninfo.make_conninfo(host=promotion.socket_dir, port=port,
                                              dbname=scenario.database, user="postgres")
    with psycopg.connect(conninfo, autocommit=True) as conn:
        assert conn.execute("select pg_is_in_recovery()").fetchone()[0] is False
        assert conn.execute(COUNT).fetchone()[0] == scenario.batches[3].rows
        conn.execute("insert into orders (customer, amount, status) values (-1, 0, 'after-recovery')")
        assert conn.execute(COUNT).fetchone()[0] == scenario.batches[3].rows + 1


async def test_abort_leaves_it_paused_and_read_only(temporal_env, worker, scenario, destination):
    client = temporal_env.client
    recovery_id = await api.start_recovery(client, _spec(scenario, destination),
                                           task_queue=worker.task_queue)
    await _until_waiting(client, recovery_id)
    await api.abort(client, recovery_id, Abort(by="sre", reason="wrong incident"))
    report = await api.recovery_result(client, recovery_id)
    assert report.status == "paused" and report.promotion is None
    assert report.decision.action == "abort" and report.decision.by == "sre"
    with psycopg.connect(_paused_conninfo(worker, recovery_id, scenario), autocommit=True) as conn:
        assert conn.execute("select pg_is_in_recovery(), pg_get_wal_replay_pause_state()"
                            ).fetchone() == (True, "paused")
        assert conn.execute(COUNT).fetchone()[0] == scenario.batches[3].rows
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            conn.execute("insert into orders (customer, amount) values (-1, 0)")


def _paused_conninfo(worker, recovery_id: str, scenario: Scenario) -> str:
    record = (worker.sandbox_root / recovery_id / "sandbox.json").read_text()
    sandbox = Sandbox.model_validate_json(record)
    return psycopg.conninfo.make_conninfo(host=sandbox.socket_dir, port=sandbox.port,
                                          dbname=scenario.database, user="postgres")


async def test_a_destination_that_is_not_empty_is_refused_and_left_byte_identical(
        temporal_env, worker, scenario, destination):
    destination.mkdir()
    (destination / "PG_VERSION").write_text("15\n")
    (destination / "precious.dat").write_bytes(b"\x00production\xff" * 1000)
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in destination.iterdir()}
    client = temporal_env.client
    recovery_id = await api.start_recovery(client, _spec(scenario, destination),
                                           task_queue=worker.task_queue)
    report = await api.recovery_result(client, recovery_id)
    assert report.status == "rejected"
    assert [e.code for e in report.errors] == ["DESTINATION_NOT_EMPTY"]
    assert {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in destination.iterdir()} == before
    assert not (worker.sandbox_root / recovery_id).exists()
    assert Stage.RESTORE not in report.metrics.stage_seconds


async def test_approval_before_the_checks_passed_is_refused_by_the_validator(
        temporal_env, worker, scenario, destination):
    client = temporal_env.client
    recovery_id = await api.start_recovery(client, _spec(scenario, destination),
                                           task_queue=worker.task_queue)
    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await api.approve_promotion(client, recovery_id, Approval(by="eager", reason="now"))
    assert "not waiting for approval" in str(refused.value.cause)
    await _until_waiting(client, recovery_id)
    await api.abort(client, recovery_id, Abort(by="sre", reason="test over"))
    report = await api.recovery_result(client, recovery_id)
    assert report.status == "paused" and report.decision.by == "sre"


def test_a_recovery_to_latest_is_refused_at_the_spec():
    with pytest.raises(ValueError, match="approve"):
        RecoverySpec.model_validate({
            "database": "d", "source": {"base_backups": "/b", "wal_archive": "/w"},
            "target": {"latest": True}, "destination": "/var/tmp/x"})


async def test_an_approval_whose_port_is_taken_fails_promotion_typed(
        temporal_env, worker, scenario, destination):
    client = temporal_env.client
    recovery_id = await api.start_recovery(client, _spec(scenario, destination),
                                           task_queue=worker.task_queue)
    await _until_waiting(client, recovery_id)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        await api.approve_promotion(client, recovery_id, Approval(
            by="sre", reason="try", listen_addresses="127.0.0.1", port=port))
        report = await api.recovery_result(client, recovery_id)
    assert report.status == "failed" and report.promotion is None
    assert [e.code for e in report.errors] == ["PROMOTION_FAILED"]
    assert str(port) in report.errors[0].message
    assert "promote" in report.metrics.failed_stages
