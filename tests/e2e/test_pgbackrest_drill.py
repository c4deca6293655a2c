"""A pgBackRest repository as a drill source: restore and WAL through pgbackrest itself."""

from __future__ import annotations

import hashlib
import shutil
import uuid
from datetime import timedelta
from pathlib import Path

import pytest

from activities.planning import PlanRequest
from domain.errors import DrillError, ErrorCode
from domain.lsn import parse_lsn, segment_name, segment_number
from domain.spec import DrillSpec, PgBackRestSource
from domain.targets import ResolvedTarget
from lab.pgbackrest import Stanza, pgbackrest_lab
from tests.e2e.test_drill import COUNT, new_york
from workers.cli import run_drill
from workers.worker import WorkerSettings, build_planner, build_sources


@pytest.fixture(scope="module")
def stanza(work_root: Path, runtime) -> Stanza:
    with pgbackrest_lab(work_root, runtime, name="pgbackrest-e2e") as built:
        yield built


def segment_of(lsn: str) -> str:
    return segment_name(1, segment_number(parse_lsn(lsn)))


def tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


async def test_a_drill_from_a_pgbackrest_stanza_verifies_and_leaves_the_repository_untouched(
        temporal_env, worker, stanza: Stanza, sandbox_root):
    kept, dropped = stanza.batches[0], stanza.batches[1]
    repository = Path(stanza.source.repo_path)
    before = tree_digest(repository)
    spec = DrillSpec.model_validate({
        "database": "demo", "source": stanza.source.model_dump(),
        "target": {"time": new_york(kept.commit_time + (dropped.commit_time - kept.commit_time) / 2)},
        "checks": [{"name": "orders at target", "sql": COUNT, "expect": kept.rows}],
    })
    report = await run_drill(temporal_env.client, spec, f"e2e-pgbr-{uuid.uuid4().hex[:6]}",
                             worker.task_queue, False)
    assert report.status == "verified", report.errors
    assert report.checks[0].observed == kept.rows
    assert report.recovered.last_commit_time == kept.commit_time
    assert report.recovered.matches_prediction is True
    assert report.base_backup.id.endswith("I")  # the incremental backup, the newest usable
    assert tree_digest(repository) == before
    assert not any(sandbox_root.iterdir())


def test_a_segment_missing_from_a_pgbackrest_archive_is_wal_gap_before_anything_exists(
        stanza: Stanza, work_root: Path, runtime):
    copy = work_root / f"repo-copy-{uuid.uuid4().hex[:6]}"
    shutil.copytree(stanza.source.repo_path, copy)
    runtime.give(copy, recursive=True)
    try:
        source = PgBackRestSource(stanza=stanza.source.stanza, repo_path=str(copy))
        settings = WorkerSettings(runtime=runtime, index_path=copy.parent / f"{copy.name}.sqlite",
                                  sandbox_root=work_root / "never-created")
        sources = build_sources(settings)
        planner = build_planner(settings, sources)
        backups = sources.adapter(source).backups(source)
        incremental = next(b for b in backups if b.id.endswith("I"))
        # The incremental backup's own WAL: it cannot become consistent, nor can the full
        # backup replay past it.
        missing = next((copy / "archive").rglob(f"{segment_of(incremental.start_lsn)}-*"))
        missing.unlink()
        target = ResolvedTarget(mode="time", utc=stanza.batches[-1].commit_time + timedelta(microseconds=1))
        with pytest.raises(DrillError) as raised:
            planner.plan(PlanRequest(source=source, target=target))
        assert raised.value.code == ErrorCode.WAL_GAP
        assert segment_of(incremental.start_lsn) in raised.value.message
        assert not settings.sandbox_root.exists()
    finally:
        shutil.rmtree(copy, ignore_errors=True)
