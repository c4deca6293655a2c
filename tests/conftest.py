"""Shared fixtures: one real PostgreSQL lab scenario per test session.

The scenario records a marker after every commit, so tests assert exact row counts, xids,
LSNs and commit times at any target.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from adapters.pg_runtime import PostgresRuntime
from adapters.processes import ProcessState, command_line, live_processes
from adapters.sources import BackupSources
from lab.lab import Lab, Marker
from lab.workload import OrdersWorkload
from workers.worker import WorkerSettings, build_sources


@dataclass
class Scenario:
    """orders: 3 x 100 rows, backup `first`, 5 x 100 rows (markers), restore point
    `before_damage`, 3 damaging transactions (markers), backup `second`, 2 x 100 rows."""

    lab: Lab
    database: str
    batches: list[Marker] = field(default_factory=list)
    restore_point: str = "before_damage"
    restore_point_lsn: str = ""
    damage: list[Marker] = field(default_factory=list)
    late_batches: list[Marker] = field(default_factory=list)

    def source(self) -> dict:
        return {
            "kind": "filesystem",
            "base_backups": str(self.lab.base_backups),
            "wal_archive": str(self.lab.wal_archive),
        }


@pytest.fixture(scope="session", autouse=True)
def test_ledger(work_root: Path):
    """Test drills go to a ledger of the test session, never the host's: worker processes
    and CLI runs inherit PITRDRILL_LEDGER; in-process workers are given it."""
    ledger = str(work_root / "ledger.sqlite")
    previous = os.environ.get("PITRDRILL_LEDGER")
    os.environ["PITRDRILL_LEDGER"] = ledger
    yield ledger
    if previous is None:
        os.environ.pop("PITRDRILL_LEDGER", None)
    else:
        os.environ["PITRDRILL_LEDGER"] = previous


@pytest.fixture(scope="session")
def work_root() -> Path:
    """A directory the unprivileged server user can traverse (pytest's tmp_path is 0700)."""
    root = Path(tempfile.mkdtemp(prefix="pitrdrill-tests-", dir="/var/tmp"))
    root.chmod(0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def runtime() -> PostgresRuntime:
    return PostgresRuntime.from_env()


@pytest.fixture(scope="session")
def scenario(work_root: Path, runtime: PostgresRuntime) -> Scenario:
    with Lab(work_root / "lab", runtime) as lab:
        orders = OrdersWorkload(lab, "demo")
        orders.create()
        orders.insert_batches(3, 100)
        lab.base_backup("first")
        # Backup labels carry whole seconds: keep targets clear of the backup's last second.
        time.sleep(1.1)
        result = Scenario(lab=lab, database="demo")
        for _ in range(5):
            result.batches.append(orders.insert_batch(100))
            time.sleep(0.02)  # distinct commit timestamps, room for targets between them
        result.restore_point_lsn = lab.restore_point(result.restore_point)
        result.damage = orders.damage(3, 50)
        lab.base_backup("second")
        time.sleep(1.1)
        result.late_batches = orders.insert_batches(2, 100)
        lab.archive_all()
        yield result


@pytest.fixture(scope="session")
def sources(runtime: PostgresRuntime) -> BackupSources:
    """The real source adapters, as the worker wires them."""
    return build_sources(WorkerSettings(runtime=runtime))


@pytest.fixture(scope="session")
def sandbox_root(work_root: Path) -> Path:
    return work_root / "sandboxes"


def postgres_processes_under(path: Path) -> list[int]:
    """Live postmasters whose data directory lies under `path` (zombies excluded)."""
    def under_path(process: ProcessState) -> bool:
        cmdline = command_line(process.pid)
        return b"-D" in cmdline and str(path).encode() in b" ".join(cmdline)

    return live_processes(under_path)
