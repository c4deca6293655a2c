"""A pgBackRest repository as a drill source: restore and WAL through pgbackrest itself."""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import uuid
from datetime import timedelta
from pathlib import Path

import pytest

from activities.models import PlanRequest
from domain.errors import DrillError, ErrorCode
from domain.lsn import parse_lsn, segment_name, segment_number
from domain.spec import DrillSpec, PgBackRestSource
from domain.targets import ResolvedTarget
from lab.pgbackrest import STANZA, Stanza, pgbackrest_lab
from tests.e2e.test_drill import COUNT, new_york
from workers.cli.drill import run_drill
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


class RepositoryCopy:
    """A private copy of the stanza's repository to damage, and a planner over it."""

    def __init__(self, stanza: Stanza, root: Path, runtime) -> None:
        self.path = root
        shutil.copytree(stanza.source.repo_path, root)
        runtime.give(root, recursive=True)
        self.source = PgBackRestSource(stanza=stanza.source.stanza, repo_path=str(root))
        self.settings = WorkerSettings(runtime=runtime, index_path=root.parent / f"{root.name}.sqlite",
                                       sandbox_root=root.parent / f"{root.name}-sandboxes",
                                       ledger=os.environ["PITRDRILL_LEDGER"])
        self.sources = build_sources(self.settings)
        self.backups = self.sources.adapter(self.source).backups(self.source)
        # Stops before the last batch's commit: recovery must read that record to stop there.
        self.target = ResolvedTarget(
            mode="time", utc=stanza.batches[-2].commit_time + timedelta(microseconds=1))

    def segment_file(self, lsn: str) -> Path:
        return next((self.path / "archive").rglob(f"{segment_of(lsn)}-*"))

    def refusal(self) -> DrillError:
        with pytest.raises(DrillError) as raised:
            build_planner(self.settings, self.sources).plan(
                PlanRequest(source=self.source, target=self.target))
        assert not self.settings.sandbox_root.exists()
        return raised.value


@pytest.fixture
def repository_copy(stanza: Stanza, work_root: Path, runtime):
    copy = RepositoryCopy(stanza, work_root / f"repo-copy-{uuid.uuid4().hex[:6]}", runtime)
    yield copy
    shutil.rmtree(copy.path, ignore_errors=True)


def rewrite_compressed(path: Path, change) -> None:
    """Damage only a checksum can find: the file stays valid gzip."""
    path.write_bytes(gzip.compress(change(gzip.decompress(path.read_bytes()))))


def test_a_segment_missing_from_a_pgbackrest_archive_is_wal_gap_before_anything_exists(
        repository_copy: RepositoryCopy):
    incremental = next(b for b in repository_copy.backups if b.id.endswith("I"))
    # The incremental backup's own WAL: it cannot become consistent, nor can the full backup
    # replay past it.
    repository_copy.segment_file(incremental.start_lsn).unlink()
    error = repository_copy.refusal()
    assert error.code == ErrorCode.WAL_GAP and segment_of(incremental.start_lsn) in error.message


def test_a_damaged_record_in_a_pgbackrest_segment_is_wal_corrupt(repository_copy, stanza):
    last = stanza.batches[-1]
    damaged = repository_copy.segment_file(last.lsn_after)
    inside_commit = parse_lsn(last.lsn_after) % (16 * 1024 * 1024) - 12
    rewrite_compressed(damaged, lambda wal: wal[:inside_commit] + bytes([wal[inside_commit] ^ 0xFF])
                       + wal[inside_commit + 1:])
    error = repository_copy.refusal()
    assert error.code == ErrorCode.WAL_CORRUPT and segment_of(last.lsn_after) in error.message


def test_a_damaged_pgbackrest_backup_is_backup_corrupt_per_pgbackrest_verify(repository_copy):
    full = next(b for b in repository_copy.backups if b.id.endswith("F"))
    rewrite_compressed(repository_copy.path / "backup" / STANZA / full.id / "pg_data" / "PG_VERSION.gz",
                       lambda text: text.replace(b"15", b"16"))
    error = repository_copy.refusal()
    # The incremental backup references the full backup's unchanged files: it fails too.
    assert error.code == ErrorCode.BACKUP_CORRUPT and "fails pgbackrest verify" in error.message
