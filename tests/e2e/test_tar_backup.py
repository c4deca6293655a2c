"""A tar-format base backup (pg_basebackup -Ft -z) with a tablespace, as a drill source."""

from __future__ import annotations

import hashlib
import time
import uuid
from pathlib import Path

import pytest

from domain.spec import DrillSpec
from lab.lab import Lab
from lab.workload import OrdersWorkload
from tests.conftest import postgres_processes_under
from tests.e2e.test_drill import COUNT, new_york
from workers.cli.drill import run_drill


def tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def tar_lab(work_root: Path, runtime):
    with Lab(work_root / "tar-lab", runtime) as lab:
        orders = OrdersWorkload(lab, "demo")
        orders.create()
        space = runtime.make_private_dir(lab.root / "tablespace")
        lab.sql(f"CREATE TABLESPACE orders_space LOCATION '{space}'")
        lab.sql("ALTER TABLE orders SET TABLESPACE orders_space", "demo")
        orders.insert_batches(2, 100)
        lab.base_backup("tarred", "-Ft", "-z")
        time.sleep(1.1)
        markers = orders.insert_batches(3, 100)
        lab.archive_all()
        lab.sql("CHECKPOINT")  # the primary's own writes to the tablespace are done
        yield lab, space, markers


async def test_a_gzipped_tar_backup_with_a_tablespace_recovers_inside_the_sandbox(
        temporal_env, worker, tar_lab, sandbox_root):
    lab, production_tablespace, markers = tar_lab
    kept, dropped = markers[1], markers[2]
    untouched = tree_digest(production_tablespace)
    spec = DrillSpec.model_validate({
        "database": "demo",
        "source": {"base_backups": str(lab.base_backups), "wal_archive": str(lab.wal_archive)},
        "target": {"time": new_york(kept.commit_time + (dropped.commit_time - kept.commit_time) / 2)},
        "checks": [{"name": "orders", "sql": COUNT, "expect": kept.rows}],
    })
    report = await run_drill(temporal_env.client, spec, f"e2e-tar-{uuid.uuid4().hex[:6]}",
                             worker.task_queue, False)
    assert report.status == "verified", report.errors
    assert report.base_backup.format == "tar" and report.checks[0].observed == kept.rows == 400
    assert report.recovered.matches_prediction is True
    # The orders table lives in the tablespace: it was read from the sandbox's copy, and the
    # production tablespace directory was not touched.
    assert tree_digest(production_tablespace) == untouched
    assert postgres_processes_under(sandbox_root) == [] and not any(sandbox_root.iterdir())
