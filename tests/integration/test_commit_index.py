"""The commit index on the scenario's real archive: what pg_waldump finds is what was committed,
and where it predicts recovery stops is where PostgreSQL 15 stops.

The scenario's archive is never written to: damage and compression happen in copies.
"""

from __future__ import annotations

import gzip
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from temporalio.testing import ActivityEnvironment

from adapters.filesystem_backups import FilesystemBackups
from activities.models import ReplayRequest, RestoreRequest, SandboxRequest
from adapters.pg_runtime import PostgresRuntime
from activities.replay import ReplayActivities
from activities.restore import RestoreActivities
from activities.sandbox import SandboxActivities
from activities.models import PlanRequest
from activities.planning import PlanningActivities
from adapters.preflight import Preflight
from adapters.throughput_history import ThroughputHistory
from adapters.wal_archive import list_archive
from adapters.wal_index import WalIndex
from adapters.wal_index_store import WalIndexStore
from adapters.waldump import PgWaldump
from domain.spec import FilesystemSource
from domain.catalog import BaseBackup
from domain.wal_pages import end_before
from domain.wal_records import WalEvent
from domain.errors import DrillError, ErrorCode
from domain.lsn import DEFAULT_WAL_SEGMENT_SIZE, format_lsn, parse_lsn
from domain.targets import ResolvedTarget

pytestmark = pytest.mark.integration


def traversable_dir(work_root: Path) -> Path:
    """A directory the server user can traverse (pytest's tmp_path is private to root): the
    indexer's scratch directories inside it belong to that user."""
    path = Path(tempfile.mkdtemp(prefix="commit-index-", dir=work_root))
    path.chmod(0o755)
    return path


@pytest.fixture
def scratch(work_root: Path) -> Iterator[Path]:
    path = traversable_dir(work_root)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def indexer_for(runtime: PostgresRuntime, store_dir: Path) -> WalIndex:
    return WalIndex(PgWaldump(runtime, scratch_root=store_dir),
                    WalIndexStore(store_dir / "commits.sqlite"))


@pytest.fixture(scope="module")
def indexed(scenario, runtime, work_root) -> Iterator[tuple[WalIndex, list[WalEvent]]]:
    store_dir = traversable_dir(work_root)
    indexer = indexer_for(runtime, store_dir)
    archive = scenario.lab.wal_archive
    result = indexer.index(archive)
    assert result.segments_indexed == result.segments == len(list_archive(archive).segments)
    yield indexer, indexer.events(archive)
    shutil.rmtree(store_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def first(scenario) -> BaseBackup:
    backups = FilesystemBackups.read(scenario.lab.base_backups, scenario.lab.wal_archive)
    return next(b for b in backups if b.id == "first")


def copy_archive(source: Path, destination: Path, runtime: PostgresRuntime) -> Path:
    shutil.copytree(source, destination)
    runtime.give(destination, recursive=True)
    return destination


def test_indexed_commits_after_the_backup_are_exactly_the_markers(scenario, indexed, first):
    _, events = indexed
    markers = scenario.batches + scenario.damage + scenario.late_batches
    commits = [e for e in events if e.is_commit and e.start >= parse_lsn(first.stop_lsn)]
    assert [(c.xid, c.timestamp) for c in commits] == [(m.xid, m.commit_time) for m in markers]
    bounds = [first.stop_lsn] + [m.lsn_after for m in markers]
    for commit, before, after in zip(commits, bounds, bounds[1:]):
        assert parse_lsn(before) <= commit.start < commit.end <= parse_lsn(after)
    restore_points = [e for e in events if e.kind == "restore_point"]
    assert [(r.name, r.end_lsn) for r in restore_points] == [
        (scenario.restore_point, scenario.restore_point_lsn)]


def test_reindexing_an_unchanged_archive_reads_no_segment(scenario, indexed):
    indexer, events = indexed
    again = indexer.index(scenario.lab.wal_archive)
    assert (again.segments_indexed, again.events_indexed, again.bytes_indexed) == (0, 0, 0)
    assert indexer.events(scenario.lab.wal_archive) == events


def test_a_flipped_byte_marks_exactly_that_segment_corrupt(scenario, indexed, runtime, scratch):
    _, events = indexed
    victim = next(e for e in events if e.xid == scenario.damage[0].xid)
    archive = copy_archive(scenario.lab.wal_archive, scratch / "archive", runtime)
    with (archive / victim.segment).open("r+b") as segment:
        segment.seek(victim.start % DEFAULT_WAL_SEGMENT_SIZE + 4)  # the record's xl_xid
        byte = segment.read(1)
        segment.seek(-1, 1)
        segment.write(bytes([byte[0] ^ 0xFF]))
    indexed_copy = indexer_for(runtime, scratch).index(archive)
    assert [(c.name, c.at_lsn) for c in indexed_copy.corrupt] == [(victim.segment, victim.start_lsn)]
    problem = indexed_copy.corrupt[0].problem
    assert "incorrect resource manager data checksum" in problem


def test_a_partial_segment_ends_at_its_last_valid_record(scenario, indexed, runtime, scratch):
    _, events = indexed
    last, lost = (next(e for e in events if e.xid == m.xid) for m in scenario.late_batches)
    archive = copy_archive(scenario.lab.wal_archive, scratch / "archive", runtime)
    segment = archive / lost.segment
    data = bytearray(segment.read_bytes())
    data[lost.start % DEFAULT_WAL_SEGMENT_SIZE:] = bytes(len(data) - lost.start %
                                                         DEFAULT_WAL_SEGMENT_SIZE)
    segment.unlink()
    (archive / f"{lost.segment}.partial").write_bytes(data)
    runtime.give(archive, recursive=True)
    indexer = indexer_for(runtime, scratch)
    indexer.index(archive)
    tail = [e.xid for e in indexer.events(archive)][-2:]
    assert tail == [scenario.damage[-1].xid, last.xid]


def _compress(path: Path, suffix: str) -> None:
    if suffix == ".gz":
        with path.open("rb") as plain, gzip.open(f"{path}.gz", "wb", compresslevel=1) as packed:
            shutil.copyfileobj(plain, packed)
    else:
        tool = {".zst": "zstd", ".lz4": "lz4"}[suffix]
        subprocess.run([tool, "-q", str(path), f"{path}{suffix}"], check=True)
    path.unlink()


@pytest.mark.skipif(not (shutil.which("zstd") and shutil.which("lz4")),
                    reason="needs the zstd and lz4 command-line tools (apt-get install zstd lz4)")
def test_compressed_segments_index_like_plain_ones(scenario, indexed, runtime, scratch):
    _, events = indexed
    archive = copy_archive(scenario.lab.wal_archive, scratch / "archive", runtime)
    suffixes = [".gz", ".zst", ".lz4"]
    for n, segment in enumerate(list_archive(archive).segments):
        _compress(segment.path, suffixes[n % 3])
    runtime.give(archive, recursive=True)
    indexer = indexer_for(runtime, scratch)
    result = indexer.index(archive)
    assert result.segments == result.segments_indexed == len(list_archive(archive).segments)
    packed = indexer.events(archive)
    assert {e.segment[24:] for e in packed} == set(suffixes)
    assert [e.model_copy(update={"segment": e.segment[:24]}) for e in packed] == events


def target(mode: str, inclusive: bool = False, **fields) -> ResolvedTarget:
    return ResolvedTarget(mode=mode, inclusive=inclusive, **fields)


def test_predictions_split_the_markers_where_the_target_says(scenario, indexed, first):
    indexer, _ = indexed
    archive = scenario.lab.wal_archive
    batch, damage = scenario.batches[-1], scenario.damage[0]
    cases = [
        target("xid", xid=damage.xid),
        target("xid", True, xid=batch.xid),
        target("name", name=scenario.restore_point),
        target("time", utc=damage.commit_time),
        target("time", True, utc=damage.commit_time - timedelta(microseconds=1)),
        target("lsn", lsn=batch.lsn_after),
        target("lsn", True, lsn=scenario.restore_point_lsn),
    ]
    for case in cases:
        prediction = indexer.predict(archive, case, first)
        assert (prediction.last_kept.xid, prediction.first_dropped.xid) == (
            batch.xid, damage.xid), case.describe()
        assert prediction.last_xact_replay_time == batch.commit_time, case.describe()


def test_lsn_predictions_read_the_record_at_the_target(scenario, indexed, first):
    indexer, events = indexed
    damage = next(e for e in events if e.xid == scenario.damage[0].xid)
    exclusive = indexer.predict(scenario.lab.wal_archive, target("lsn", lsn=damage.start_lsn),
                                first)
    inclusive = indexer.predict(scenario.lab.wal_archive,
                                target("lsn", True, lsn=damage.start_lsn), first)
    assert (exclusive.stop.record_lsn, exclusive.replay_lsn) == (
        damage.start_lsn, format_lsn(end_before(damage.start)))
    assert (inclusive.stop.record_lsn, inclusive.replay_lsn) == (damage.start_lsn, damage.end_lsn)
    assert inclusive.stop.record == f"Transaction record at {damage.start_lsn}"
    assert inclusive.last_kept.xid == damage.xid


def test_an_lsn_beyond_the_archive_is_never_reached(scenario, indexed, first):
    indexer, _ = indexed
    with pytest.raises(DrillError) as raised:
        indexer.predict(scenario.lab.wal_archive, target("lsn", lsn="FF/0"), first)
    assert raised.value.code == ErrorCode.TARGET_BEYOND_ARCHIVE


def test_segments_leaving_and_joining_the_archive(scenario, indexed, runtime, scratch):
    _, events = indexed
    archive = copy_archive(scenario.lab.wal_archive, scratch / "archive", runtime)
    last = list_archive(archive).segments[-1].path
    held = last.rename(scratch / last.name)
    indexer = indexer_for(runtime, scratch)
    assert indexer.index(archive).segments_indexed == len(list_archive(archive).segments)
    shorter = indexer.events(archive)
    assert shorter == [e for e in events if e.segment != last.name]
    held.rename(last)
    # The segment before it was indexed while its successor was missing: read again, with it.
    assert indexer.index(archive).segments_indexed == 2
    assert indexer.events(archive) == events
    last.unlink()
    assert indexer.index(archive).segments_indexed == 0
    assert indexer.events(archive) == shorter


def test_the_plan_activity_heartbeats_indexes_and_predicts_from_the_right_backup(
        scenario, runtime, sources, scratch):
    store = scratch / "commits.sqlite"
    index = WalIndex(PgWaldump(runtime, scratch_root=scratch), WalIndexStore(store))
    planner = PlanningActivities(
        Preflight(sources, index, ThroughputHistory(store)), ThroughputHistory(store))
    beats = []
    env = ActivityEnvironment()
    env.on_heartbeat = lambda *details: beats.append(details[0])
    planned = env.run(planner.plan_drill, PlanRequest(
        source=FilesystemSource(base_backups=str(scenario.lab.base_backups),
                                wal_archive=str(scenario.lab.wal_archive)),
        target=target("name", name=scenario.restore_point)))
    assert beats[-1].segments_total == planned.index.segments == planned.index.segments_indexed
    # The restore point lies inside backup `second`: the planner falls back to `first`.
    assert planned.plan.backup.id == "first"
    assert [s.backup_id for s in planned.plan.skipped] == ["second"]
    assert planned.plan.predicted.replay_lsn == scenario.restore_point_lsn


# One of each way recovery stops: before a commit, after one, before any record. The unit tests
# hold the observed outcomes of the other modes.
TARGETS: dict[str, Callable] = {
    "xid exclusive": lambda s: target("xid", xid=s.damage[0].xid),
    "time inclusive": lambda s: target("time", True, utc=s.damage[0].commit_time),
    "lsn exclusive": lambda s: target("lsn", lsn=s.restore_point_lsn),
}


@pytest.mark.parametrize("name", TARGETS)
def test_prediction_is_where_postgresql_stops(name, scenario, indexed, first, runtime, sources,
                                              sandbox_root):
    indexer, _ = indexed
    chosen = TARGETS[name](scenario)
    env = ActivityEnvironment()
    sandboxes = SandboxActivities(runtime, sandbox_root, "test@host")
    sandbox = env.run(sandboxes.provision, SandboxRequest(drill_id=f"ci-{uuid.uuid4().hex[:8]}"))
    try:
        source = FilesystemSource(base_backups=str(scenario.lab.base_backups),
                                  wal_archive=str(scenario.lab.wal_archive))
        env.run(RestoreActivities(sources).restore_base_backup,
                RestoreRequest(sandbox=sandbox, backup=first, source=source))
        replayed = env.run(ReplayActivities(runtime, sources).replay_to_target, ReplayRequest(
            sandbox=sandbox, target=chosen, source=source, db_user="postgres"))
    finally:
        env.run(sandboxes.teardown, sandbox)
    prediction = indexer.predict(scenario.lab.wal_archive, chosen, first)
    assert (replayed.recovered.replay_lsn, replayed.recovered.last_commit_time) == (
        prediction.replay_lsn, prediction.last_xact_replay_time)
