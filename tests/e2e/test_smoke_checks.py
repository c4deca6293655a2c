"""Real drills of the smoke lab (lab/smoke.py) through real Temporal: one check of each kind
passing then a cache-warming stage; a wrong expectation failing the drill by name; a `latest`
drill over an archive that lags failing `freshness`; amcheck skipped where the backup lacks it."""

from __future__ import annotations

import asyncio
import io
import uuid
from contextlib import redirect_stdout
from datetime import datetime, timezone
from pathlib import Path

import pytest
import yaml

from domain.report import DrillReport
from domain.spec import DrillSpec
from lab.smoke import MISSING_ORDER, ORPHANS, PLAIN, SmokeLab, smoke_lab
from tests.conftest import postgres_processes_under
from workers import output
from workers.cli import main
from workers.cli.common import load_spec
from workers.cli.drill import run_drill

ORDERS = "select count(*) from orders"


@pytest.fixture(scope="module")
def smoke(work_root: Path, runtime) -> SmokeLab:
    with smoke_lab(work_root / f"smoke-e2e-{uuid.uuid4().hex[:6]}", runtime) as built:
        yield built


@pytest.fixture(scope="module")
def between_fresh_and_orphans(smoke: SmokeLab) -> dict:
    """A time target keeping the fresh orders and dropping the orphan refunds."""
    fresh, orphans = smoke.fresh.commit_time, smoke.orphans.commit_time
    return {"time": (fresh + (orphans - fresh) / 2).isoformat(" ")}


async def drill(temporal_env, worker, spec: DrillSpec) -> DrillReport:
    return await run_drill(temporal_env.client, spec, f"e2e-smoke-{uuid.uuid4().hex[:8]}",
                           worker.task_queue, show_progress=False)


def spec_of(smoke: SmokeLab, target: dict, checks: list[dict], **more) -> DrillSpec:
    return DrillSpec.model_validate({"database": smoke.database, "source": smoke.source(),
                                     "target": target, "checks": checks, **more})


def torn_down(report: DrillReport, sandbox_root: Path) -> bool:
    return "teardown" in report.metrics.stage_seconds \
        and postgres_processes_under(sandbox_root) == []


async def test_one_check_of_each_kind_passes_then_the_cache_is_warmed(
        temporal_env, worker, smoke, between_fresh_and_orphans, sandbox_root, tmp_path: Path):
    printed = io.StringIO()
    with redirect_stdout(printed):  # the CLI runs its own event loop: in a thread
        assert await asyncio.to_thread(main, ["schema", "snapshot", "--dsn", smoke.dsn()]) == 0
    (tmp_path / "schema.json").write_text(printed.getvalue())
    (tmp_path / "drill.yaml").write_text(yaml.safe_dump({
        "database": smoke.database, "source": smoke.source(),
        "target": between_fresh_and_orphans,
        "checks": [
            {"name": "orders", "sql": ORDERS, "expect": 300},
            {"name": "largest order", "sql": "select max(amount) from orders",
             "expect": {"min": 100, "max": 200}},
            {"name": "customer name", "sql": "select name from customers where id = 3",
             "expect": {"regex": "^customer 3$"}},
            {"name": "refunds", "sql": "select count(*), sum(amount) from refunds",
             "expect": {"rows": [[10, 10]]}},
            {"name": "schema", "kind": "schema", "snapshot": "schema.json"},
            {"name": "no orphans", "kind": "referential_integrity"},
            {"name": "no corruption", "kind": "amcheck", "relations": ["orders", "refunds"]},
            {"name": "orders are fresh", "kind": "freshness", "table": "orders",
             "column": "placed_at", "tolerance": "5s"},
        ],
        "warm": {"relations": ["orders"], "indexes": True},
    }))
    report = await drill(temporal_env, worker, load_spec(str(tmp_path / "drill.yaml")))
    assert report.status == "verified", (report.errors, report.checks)
    assert [(c.kind, c.status) for c in report.checks] == [
        ("sql", "passed")] * 4 + [(kind, "passed") for kind in (
            "schema", "referential_integrity", "amcheck", "freshness")]
    assert all(c.seconds > 0 for c in report.checks)
    metrics = report.metrics
    assert (metrics.checks_passed, metrics.checks_total, metrics.checks_skipped,
            metrics.validation_pass_rate) == (8, 8, 0, 1.0)
    fresh = report.checks[-1]
    assert fresh.expected["point_is"] == "the target time"
    assert 0 < fresh.observed["behind_seconds"] < 5
    assert report.checks[5].observed == {"orphans": 0, "foreign_keys": 2, "worst": []}

    warmed = report.warm
    assert [(r.name, r.method) for r in warmed.relations] == [
        ("public.orders", "pg_prewarm"), ("public.orders_pkey", "pg_prewarm"),
        ("public.orders_placed_at", "pg_prewarm")]
    assert all(r.bytes > 0 for r in warmed.relations)
    assert warmed.bytes_warmed == sum(r.bytes for r in warmed.relations) and warmed.seconds > 0
    assert "warm" in metrics.stage_seconds
    text = output.summary(report)
    assert "  check [pass] orders (sql, " in text and "observed 300, expected 300" in text
    assert "  check [pass] no corruption (amcheck, " in text
    assert torn_down(report, sandbox_root)


async def test_a_wrong_expectation_fails_the_drill_naming_the_check(
        temporal_env, worker, smoke, sandbox_root):
    report = await drill(temporal_env, worker, spec_of(
        smoke, {"xid": smoke.orphans.xid, "inclusive": True},
        [{"name": "orders at target", "sql": ORDERS, "expect": 999},
         {"name": "no orphans", "kind": "referential_integrity"}],
        warm={"relations": ["orders"]}))
    assert report.status == "failed"
    assert [e.code for e in report.errors] == ["CHECK_FAILED", "CHECK_FAILED"]
    wrong, orphans = report.errors
    assert wrong.message == "check 'orders at target': observed 300, expected 999"
    assert orphans.message.startswith("check 'no orphans': observed {'orphans': 3")
    assert "refunds_order_id_fkey" in orphans.message
    assert report.checks[1].observed["worst"][0]["examples"][0] == [MISSING_ORDER + 1]
    assert report.checks[1].observed["orphans"] == ORPHANS
    assert report.warm is None and "warm" not in report.metrics.stage_seconds
    assert torn_down(report, sandbox_root)


async def test_a_latest_drill_over_a_lagging_archive_fails_freshness(
        temporal_env, worker, smoke, sandbox_root):
    # The last archived orders must be older than the tolerance when the drill starts.
    behind = (datetime.now(timezone.utc) - smoke.fresh.commit_time).total_seconds()
    await asyncio.sleep(max(0.0, 3.0 - behind))
    report = await drill(temporal_env, worker, spec_of(smoke, {"latest": True}, [
        {"name": "orders", "sql": ORDERS, "expect": 300},  # the unarchived 100 are missing
        {"name": "orders are fresh", "kind": "freshness", "table": "orders",
         "column": "placed_at", "tolerance": "2s"}]))
    assert report.status == "failed"
    assert [e.code for e in report.errors] == ["CHECK_FAILED"]
    assert report.errors[0].message.startswith("check 'orders are fresh': observed")
    orders, fresh = report.checks
    assert orders.status == "passed" and fresh.status == "failed"
    assert fresh.observed["behind_seconds"] > 2
    assert fresh.expected["point_is"].startswith("the drill's start")
    assert smoke.unarchived.commit_time > smoke.fresh.commit_time  # what latest should have had
    assert torn_down(report, sandbox_root)


async def test_amcheck_missing_from_the_backup_is_skipped_and_tables_are_read_instead(
        temporal_env, worker, smoke, between_fresh_and_orphans, sandbox_root):
    report = await drill(temporal_env, worker, spec_of(
        smoke, between_fresh_and_orphans,
        [{"name": "items", "sql": "select count(*) from items", "expect": 2000},
         {"name": "no corruption", "kind": "amcheck", "relations": ["items"]}],
        database=PLAIN, warm={"relations": ["items"]}))
    assert report.status == "verified", report.errors
    items, amcheck = report.checks
    assert items.status == "passed" and amcheck.status == "skipped" and not amcheck.passed
    metrics = report.metrics
    assert (metrics.checks_passed, metrics.checks_total, metrics.checks_skipped,
            metrics.validation_pass_rate) == (1, 2, 1, 1.0)
    assert "  check [SKIPPED] no corruption (amcheck, " in output.summary(report)
    assert "skipped: not installed in the backup" in output.summary(report)
    (warmed,) = report.warm.relations
    assert (warmed.name, warmed.method) == ("public.items", "sequential_read")
    assert warmed.bytes > 0
    assert torn_down(report, sandbox_root)
