"""Correctness that comes with the speed work, on real archives and real servers.

A lab of this module's own: one backup, then three groups of 3 commits, each group closing its
own segment (before, damaged, after). Faults are injected into copies under a scratch
directory, and every plan is held to reading only, as in test_preflight.py:

- `latest` over an archive with a damaged record before its end is refused as WAL_CORRUPT
  naming the segment and the LSN, unless the fallback chain allows last_consistent_before_gap
  (the plan then says what it gave up, and PostgreSQL stops where it predicts);
- the WAL index reads runs of segments with one pg_waldump: a damaged segment inside a run
  is marked at its bad record and the segments after it are still indexed;
- an archive the worker can read but the server's OS user cannot is refused as
  ARCHIVE_UNREADABLE_BY_SERVER, naming the path and the chmod that fixes it;
- a backup is verified once per manifest and file set, again when a file changes;
- replay: a server refusing connections while it goes down is classified from its exit,
  and the pause is noticed from the server's log line.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from temporalio.testing import ActivityEnvironment

from activities import replay as replay_activity
from activities.models import PlanRequest, ReplayRequest, RestoreRequest, SandboxRequest
from activities.replay import ReplayActivities
from activities.restore import RestoreActivities
from activities.sandbox import SandboxActivities
from adapters.pg_runtime import PostgresRuntime
from adapters.wal_index import WalIndex
from adapters.wal_index_store import WalIndexStore
from adapters.waldump import PgWaldump
from domain.errors import DrillError, ErrorCode
from domain.lsn import DEFAULT_WAL_SEGMENT_SIZE
from domain.plan import DrillPlan, PlanOptions
from domain.report import Recovered
from domain.spec import FilesystemSource
from domain.targets import ResolvedTarget
from domain.wal_records import WalEvent
from lab.lab import Lab, Marker
from lab.workload import OrdersWorkload
from tests.conftest import postgres_processes_under
from workers.worker import WorkerSettings, build_planner, build_sources

pytestmark = pytest.mark.integration

ROWS = 100
LATEST = ResolvedTarget(mode="latest")
LAST_CONSISTENT = PlanOptions(fallback=["last_consistent_before_gap"])
AS_ROOT = os.geteuid() == 0


def traversable(parent: Path, prefix: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    path.chmod(0o755)
    return path


@dataclass
class DamageLab:
    lab: Lab
    before: list[Marker]
    damaged: list[Marker]  # the middle one's commit record gets a flipped byte
    after: list[Marker]
    commits: dict[int, WalEvent]

    def commit(self, marker: Marker) -> WalEvent:
        return self.commits[marker.xid]


def in_own_segment(lab: Lab, orders: OrdersWorkload, count: int) -> list[Marker]:
    markers = orders.insert_batches(count, ROWS)
    lab.archive_all()
    return markers


@pytest.fixture(scope="module")
def index_dir(work_root: Path) -> Iterator[Path]:
    directory = traversable(work_root, "speed-index-")
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def damage_lab(work_root: Path, runtime: PostgresRuntime, index_dir: Path) -> Iterator[DamageLab]:
    with Lab(work_root / "speed-lab", runtime) as lab:
        orders = OrdersWorkload(lab, "demo")
        orders.create()
        orders.insert_batch(ROWS)
        lab.base_backup("only")
        time.sleep(1.1)  # backup labels carry whole seconds
        groups = [in_own_segment(lab, orders, 3) for _ in range(3)]
        indexer = WalIndex(PgWaldump(runtime, scratch_root=index_dir),
                           WalIndexStore(index_dir / "lab.sqlite"))
        indexer.index(lab.wal_archive)
        commits = {e.xid: e for e in indexer.events(lab.wal_archive) if e.is_commit}
        yield DamageLab(lab, *groups, commits)


@dataclass(frozen=True)
class Scratch:
    root: Path
    index: Path
    runtime: PostgresRuntime


@pytest.fixture
def scratch(work_root: Path, index_dir: Path, runtime: PostgresRuntime) -> Iterator[Scratch]:
    root = traversable(work_root, "speed-")
    yield Scratch(root, index_dir / "wal-index.sqlite", runtime)
    shutil.rmtree(root, ignore_errors=True)


def fingerprint(*roots: Path) -> dict[str, tuple[int, int]]:
    return {os.path.join(d, n): (os.stat(os.path.join(d, n)).st_size,
                                 os.stat(os.path.join(d, n)).st_mtime_ns)
            for root in roots for d, _, names in os.walk(root) for n in names}


class Planner:
    """Pre-flight as the worker builds it; every plan reads only and starts nothing."""

    def __init__(self, scratch: Scratch, backups: Path, archive: Path) -> None:
        self.scratch, self.sandbox_root = scratch, scratch.root / "sandboxes"
        self.source = FilesystemSource(base_backups=str(backups), wal_archive=str(archive))
        settings = WorkerSettings(sandbox_root=self.sandbox_root, index_path=scratch.index,
                                  runtime=scratch.runtime)
        self.sources = build_sources(settings)
        self.preflight = build_planner(settings, self.sources)

    def plan(self, target: ResolvedTarget, options: PlanOptions = PlanOptions()) -> DrillPlan:
        read = (Path(self.source.base_backups), Path(self.source.wal_archive))
        before = fingerprint(*read)
        try:
            return self.preflight.plan(PlanRequest(source=self.source, target=target,
                                                   options=options)).plan
        finally:
            assert not self.sandbox_root.exists()
            assert postgres_processes_under(self.scratch.root) == []
            assert fingerprint(*read) == before

    def refusal(self, target: ResolvedTarget, options: PlanOptions = PlanOptions()) -> DrillError:
        with pytest.raises(DrillError) as raised:
            self.plan(target, options)
        return raised.value


def copied(source: Path, scratch: Scratch, give: bool = True) -> Path:
    destination = scratch.root / source.name
    shutil.copytree(source, destination)
    if give:
        scratch.runtime.give(destination, recursive=True)
    return destination


def flip_commit(archive: Path, commit: WalEvent) -> None:
    """Corrupt the commit record's xl_xid: its CRC no longer matches."""
    with (archive / commit.segment).open("r+b") as segment:
        segment.seek(commit.start % DEFAULT_WAL_SEGMENT_SIZE + 4)
        byte = segment.read(1)
        segment.seek(-1, 1)
        segment.write(bytes([byte[0] ^ 0xFF]))


@pytest.fixture
def damaged(damage_lab: DamageLab, scratch: Scratch) -> tuple[Planner, WalEvent]:
    archive = copied(damage_lab.lab.wal_archive, scratch)
    bad = damage_lab.commit(damage_lab.damaged[1])
    flip_commit(archive, bad)
    return Planner(scratch, damage_lab.lab.base_backups, archive), bad


def recovered(scratch: Scratch, planner: Planner, plan: DrillPlan,
              target: ResolvedTarget) -> Recovered:
    runtime, sources, source = scratch.runtime, planner.sources, planner.source
    env = ActivityEnvironment()
    sandboxes = SandboxActivities(runtime, scratch.root / "drills", "test@host")
    sandbox = env.run(sandboxes.provision, SandboxRequest(drill_id=f"sc-{uuid.uuid4().hex[:8]}"))
    try:
        env.run(RestoreActivities(sources).restore_base_backup,
                RestoreRequest(sandbox=sandbox, backup=plan.backup, source=source))
        return env.run(ReplayActivities(runtime, sources).replay_to_target, ReplayRequest(
            sandbox=sandbox, target=target, source=source, db_user="postgres")).recovered
    finally:
        env.run(sandboxes.teardown, sandbox)
        assert postgres_processes_under(Path(sandbox.root)) == []
        assert not Path(sandbox.root).exists()


# --- latest over damaged WAL -------------------------------------------------------------------

def test_latest_over_a_damaged_record_is_wal_corrupt_naming_the_segment_and_lsn(damaged):
    planner, bad = damaged
    error = planner.refusal(LATEST)
    assert error.code == ErrorCode.WAL_CORRUPT
    assert error.message.startswith(f"segment {bad.segment} is unreadable from {bad.start_lsn} (")
    assert "incorrect resource manager data checksum" in error.message
    assert error.message.endswith("recovery from backup only to the latest point would stop "
                                  "there (PostgreSQL takes the damaged record for the end of "
                                  "the WAL and promotes), giving up everything archived after it")


@pytest.mark.parametrize("mode", ["time", "xid"])
def test_an_explicit_target_past_the_damaged_record_is_refused_alike(damage_lab, damaged, mode):
    planner, bad = damaged
    last = damage_lab.after[-1]
    target = ResolvedTarget(mode="time", utc=last.commit_time, inclusive=True) if mode == "time" \
        else ResolvedTarget(mode="xid", xid=last.xid, inclusive=True)
    error = planner.refusal(target)
    assert error.code == ErrorCode.WAL_CORRUPT
    assert error.message.startswith(f"segment {bad.segment} is unreadable from {bad.start_lsn} (")


def test_latest_with_last_consistent_before_gap_stops_before_the_damage_and_says_what_it_gave_up(
        damage_lab, damaged, scratch):
    planner, bad = damaged
    kept, last = damage_lab.damaged[0], damage_lab.after[-1]
    plan = planner.plan(LATEST, LAST_CONSISTENT)
    fallback = plan.fallback
    assert (fallback.step, fallback.cause_code) == ("last_consistent_before_gap", "WAL_CORRUPT")
    assert bad.segment in fallback.cause and bad.start_lsn in fallback.cause
    assert fallback.requested == LATEST
    assert (fallback.used.mode, fallback.used.xid, fallback.used.inclusive) == ("xid", kept.xid, True)
    assert plan.predicted.last_kept.xid == kept.xid
    # Given up: up to the archive's last commit. The damaged segment's rest is unreadable, so
    # only the commits readable after it are counted, as a floor.
    assert fallback.seconds_given_up == (last.commit_time - kept.commit_time).total_seconds()
    assert fallback.transactions_given_up is None
    assert fallback.transactions_given_up_at_least == len(damage_lab.after)
    stopped = recovered(scratch, planner, plan, fallback.used)
    assert (stopped.replay_lsn, stopped.last_commit_time) == (
        plan.predicted.replay_lsn, plan.predicted.last_xact_replay_time)
    assert stopped.last_commit_time == kept.commit_time


def test_segments_after_a_damaged_one_in_the_same_run_are_still_indexed(damage_lab, damaged,
                                                                        scratch):
    planner, bad = damaged
    index = WalIndex(PgWaldump(scratch.runtime, scratch_root=scratch.root),
                     WalIndexStore(scratch.root / "fresh.sqlite"))
    archive = Path(planner.source.wal_archive)
    result = index.index(archive)
    assert result.segments_indexed == result.segments
    assert [(c.name, c.at_lsn) for c in result.corrupt] == [(bad.segment, bad.start_lsn)]
    xids = [e.xid for e in index.events(archive) if e.is_commit]
    expected = [m.xid for m in damage_lab.before + damage_lab.damaged[:1] + damage_lab.after]
    assert xids[-len(expected):] == expected


# --- an archive the server's OS user cannot read -----------------------------------------------

@pytest.mark.skipif(not AS_ROOT, reason="as another user the server binaries run as we do")
def test_segments_the_server_user_cannot_read_are_archive_unreadable_by_server(
        damage_lab, scratch):
    archive = copied(damage_lab.lab.wal_archive, scratch, give=False)  # owned by root
    for path in archive.iterdir():
        path.chmod(0o640)
    planner = Planner(scratch, damage_lab.lab.base_backups, archive)
    error = planner.refusal(LATEST)
    assert error.code == ErrorCode.ARCHIVE_UNREADABLE_BY_SERVER
    first = sorted(p for p in archive.iterdir() if len(p.name) == 24)[0]
    assert error.message.startswith(
        f"the WAL archive {archive} is readable by this worker but postgres, the OS user the "
        f"sandbox server's restore_command and pg_waldump run as, cannot read {first} (and ")
    assert "(mode 0640, owner root, group root)" in error.message
    assert error.hint.startswith(f"Let postgres read the archive (pitrdrill only ever reads "
                                 f"it): run `chmod -R o+rX {archive}`")
    assert error.kind == "input"


@pytest.mark.skipif(not AS_ROOT, reason="as another user the server binaries run as we do")
def test_an_archive_directory_the_server_user_cannot_enter_is_archive_unreadable_by_server(
        damage_lab, scratch):
    holder = scratch.root / "private"
    holder.mkdir(mode=0o700)
    archive = shutil.copytree(damage_lab.lab.wal_archive, holder / "wal")
    scratch.runtime.give(archive, recursive=True)  # readable, but behind a closed directory
    error = Planner(scratch, damage_lab.lab.base_backups, archive).refusal(LATEST)
    assert error.code == ErrorCode.ARCHIVE_UNREADABLE_BY_SERVER
    assert f"cannot enter {holder} (mode 0700, owner root" in error.message
    assert f"`chmod o+x {holder}`" in error.hint


# --- backups verified once ---------------------------------------------------------------------

def test_a_backup_is_verified_once_per_manifest_and_again_when_a_file_changes(
        damage_lab, scratch, monkeypatch):
    backups = copied(damage_lab.lab.base_backups, scratch)
    planner = Planner(scratch, backups, damage_lab.lab.wal_archive)
    adapter = planner.sources.adapter(planner.source)
    calls = []
    real = adapter.verify
    monkeypatch.setattr(adapter, "verify",
                        lambda source, backup: calls.append(backup.id) or real(source, backup))
    target = ResolvedTarget(mode="xid", xid=damage_lab.before[-1].xid, inclusive=True)
    planner.plan(target)
    planner.plan(target)
    assert calls == ["only"]
    relation = max((p for p in (backups / "only" / "base").rglob("*") if p.is_file()),
                   key=lambda p: p.stat().st_size)
    with relation.open("r+b") as data:
        data.seek(8192 + 100)
        data.write(b"\xde\xad\xbe\xef")
    error = planner.refusal(target)
    assert error.code == ErrorCode.BACKUP_CORRUPT and calls == ["only", "only"]
    # A failed verification is not remembered: asked again, it is verified again.
    planner.refusal(target)
    assert calls == ["only", "only", "only"]


# --- replay ------------------------------------------------------------------------------------

@dataclass
class GoingAway:
    """A server that refuses a connection the way PostgreSQL does after its startup process
    failed, and whose postmaster is gone a moment later."""

    gone_after_s: float
    refusal: str = "connection failed: server closed the connection unexpectedly"

    def __post_init__(self) -> None:
        self._gone_at = time.monotonic() + self.gone_after_s

    def connect(self, *_):
        raise psycopg.OperationalError(self.refusal)

    def pid(self) -> int | None:
        return None if time.monotonic() >= self._gone_at else 4242


@pytest.mark.parametrize("refusal", [
    "connection failed: server closed the connection unexpectedly",
    'connection failed: FATAL:  the database system is in recovery mode',
    "connection failed: FATAL:  some refusal nobody listed",
])
def test_a_refusal_while_the_server_goes_away_is_left_to_its_exit(refusal):
    """The startup process failed (say the archive ended before the target) and the
    postmaster is killing its children: what a connection meets then says nothing; the main
    loop reads the exit from the complete log (RECOVERY_TARGET_NOT_REACHED and the like)."""
    assert replay_activity._read_state(GoingAway(0.2, refusal), "demo", "postgres") is None


def test_a_refusal_from_a_server_that_stays_up_is_recovery_failed(monkeypatch):
    monkeypatch.setattr(replay_activity, "_GOING_AWAY_S", 0.1)
    with pytest.raises(DrillError) as raised:
        replay_activity._read_state(GoingAway(60, "connection failed: FATAL:  no pg_hba.conf "
                                                  "entry"), "demo", "postgres")
    assert raised.value.code == ErrorCode.RECOVERY_FAILED


@dataclass
class LoggingServer:
    log_file: Path

    def log_size(self) -> int:
        return self.log_file.stat().st_size



@pytest.mark.parametrize("line", [
    "LOG:  pausing at the end of recovery",
    "LOG:  recovery has paused",
    "LOG:  database system is ready to accept connections",
    "FATAL:  recovery ended before configured recovery target was reached",
])
def test_the_pause_is_noticed_from_the_log_line_not_the_next_poll(tmp_path, line):
    log = tmp_path / "postgres.log"
    log.write_text("LOG:  restored log file \"000000010000000000000003\" from archive\n")
    watch = replay_activity._LogWatch(LoggingServer(log))
    assert watch.wait(0.05) is False  # what was there before does not count
    writer = threading.Timer(0.1, lambda: log.write_text(log.read_text() + f"2026 UTC {line}\n"))
    writer.start()
    began = time.monotonic()
    assert watch.wait(5.0) is True
    assert time.monotonic() - began < 1.0
    writer.join()
