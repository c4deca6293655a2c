"""Pre-flight on real archives: every way an archive or a backup can fail a drill is refused by
`Preflight.plan` with its code, naming the segment or backup, before anything exists.

Two labs of this module's own: one timeline with a segment boundary after each group of
commits and two backups (WAL and backup faults), and one where a backup was restored and
promoted to timeline 2 while the old primary went on committing on timeline 1. Faults are
injected into copies under a scratch directory; every planning is held to reading only (every
file of the archive and the backups byte-identical afterwards), creating no sandbox and
starting no server. Real recoveries prove the predictions where a timeline or a damaged
segment makes them hard. Tests whose docstring says FAILS show a bug outside this file.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import uuid
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from temporalio.testing import ActivityEnvironment

from adapters.filesystem_backups import FilesystemBackups
from activities.models import ReplayRequest, RestoreRequest, SandboxRequest
from adapters.pg_runtime import PostgresRuntime
from activities.models import PlanRequest
from activities.replay import ReplayActivities
from activities.restore import RestoreActivities
from activities.sandbox import SandboxActivities
from adapters.wal_index import WalIndex
from adapters.wal_index_store import WalIndexStore
from adapters.waldump import PgWaldump
from domain.wal_records import WalEvent
from domain.errors import DrillError, ErrorCode
from domain.lsn import DEFAULT_WAL_SEGMENT_SIZE, parse_lsn
from domain.plan import DrillPlan, PlanOptions
from domain.report import Recovered
from domain.spec import FilesystemSource
from domain.targets import ResolvedTarget, format_utc
from lab.lab import Lab, Marker
from lab.timelines import Promotion, TimelineBranch
from lab.workload import OrdersWorkload
from tests.conftest import postgres_processes_under
from workers.worker import WorkerSettings, build_planner, build_sources

pytestmark = pytest.mark.integration

ROWS = 100
# Backup labels carry whole seconds: keep targets clear of a backup's last second.
LABEL_SECOND = 1.1
LATEST = ResolvedTarget(mode="latest")
LAST_CONSISTENT = PlanOptions(fallback=["last_consistent_before_gap"])


def traversable(parent: Path, prefix: str) -> Path:
    """A scratch directory the server user can enter (pg_waldump reads through it)."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    path.chmod(0o755)
    return path


def commits_in_own_segment(lab: Lab, orders: OrdersWorkload, count: int) -> list[Marker]:
    """`count` commits, then a segment switch: the next group starts a segment of its own."""
    markers = orders.insert_batches(count, ROWS)
    lab.archive_all()
    return markers


@pytest.fixture(scope="module")
def wal_index(work_root: Path) -> Iterator[Path]:
    """One WAL index for the module, as a worker keeps one: a copy's undamaged segments are
    recognised by checksum and not read again."""
    directory = traversable(work_root, "preflight-index-")
    yield directory / "wal-index.sqlite"
    shutil.rmtree(directory, ignore_errors=True)


# --- the labs --------------------------------------------------------------------------------

@dataclass
class GapLab:
    """orders: a batch, backup `older`, three groups of 3 commits each closing its segment
    (before_gap, in_gap, after_gap), backup `newer`, 3 late commits closing theirs."""

    lab: Lab
    before_backup: Marker
    before_gap: list[Marker]
    in_gap: list[Marker]
    after_gap: list[Marker]
    late: list[Marker]
    commits: dict[int, WalEvent]  # as the index reads them, by xid

    def commit(self, marker: Marker) -> WalEvent:
        return self.commits[marker.xid]


@dataclass
class ForkLab:
    """orders: a batch, backup `before_switch`, 2 commits on both timelines (shared), the old
    primary's timeline-1 commits (timeline1); the backup restored and promoted right after the
    shared commits, 2 commits there (timeline2); then the old primary goes on."""

    lab: Lab
    shared: list[Marker]
    timeline1: list[Marker]
    timeline2: list[Marker]
    promotion: Promotion


def indexed_commits(lab: Lab, runtime: PostgresRuntime, index: Path) -> dict[int, WalEvent]:
    indexer = WalIndex(PgWaldump(runtime, scratch_root=index.parent), WalIndexStore(index))
    indexer.index(lab.wal_archive)
    return {e.xid: e for e in indexer.events(lab.wal_archive) if e.is_commit}


@pytest.fixture(scope="module")
def gap_lab(work_root: Path, runtime: PostgresRuntime, wal_index: Path) -> Iterator[GapLab]:
    with Lab(work_root / "preflight-gap-lab", runtime) as lab:
        orders = OrdersWorkload(lab, "demo")
        orders.create()
        before_backup = orders.insert_batch(ROWS)
        lab.base_backup("older")
        time.sleep(LABEL_SECOND)
        groups = [commits_in_own_segment(lab, orders, 3) for _ in range(3)]
        lab.base_backup("newer")
        time.sleep(LABEL_SECOND)
        late = commits_in_own_segment(lab, orders, 3)
        yield GapLab(lab, before_backup, *groups, late, indexed_commits(lab, runtime, wal_index))


@pytest.fixture(scope="module")
def fork_lab(work_root: Path, runtime: PostgresRuntime) -> Iterator[ForkLab]:
    with Lab(work_root / "preflight-fork-lab", runtime) as lab:
        orders = OrdersWorkload(lab, "demo")
        orders.create()
        orders.insert_batch(ROWS)
        lab.base_backup("before_switch")
        time.sleep(LABEL_SECOND)
        shared = orders.insert_batches(2, ROWS)
        timeline1 = commits_in_own_segment(lab, orders, 4)
        with TimelineBranch(lab, "before_switch") as branch:
            # The incident's clone: recovered through the last shared commit, then promoted.
            promotion = branch.promote(ResolvedTarget(mode="xid", xid=shared[-1].xid,
                                                      inclusive=True, timeline="current"))
            on_branch = OrdersWorkload(branch.promoted, "demo")
            on_branch.rows = shared[-1].rows
            timeline2 = on_branch.insert_batches(2, ROWS)
            branch.end()
        # The old primary outlives the clone: timeline 1 holds segments timeline 2 never had.
        timeline1 += commits_in_own_segment(lab, orders, 2)
        yield ForkLab(lab, shared, timeline1, timeline2, promotion)


# --- planning that must only read ------------------------------------------------------------

@dataclass(frozen=True)
class Scratch:
    """One test's directory (damaged copies, sandbox roots) and the module's WAL index."""

    root: Path
    index: Path
    runtime: PostgresRuntime


@pytest.fixture
def scratch(work_root: Path, wal_index: Path, runtime: PostgresRuntime) -> Iterator[Scratch]:
    root = traversable(work_root, "preflight-")
    yield Scratch(root, wal_index, runtime)
    shutil.rmtree(root, ignore_errors=True)


def checksum(path: str) -> tuple[int, int]:
    crc = 0
    with open(path, "rb") as stream:
        while chunk := stream.read(1 << 20):
            crc = zlib.crc32(chunk, crc)
    return crc, os.path.getsize(path)


def fingerprint(*roots: Path) -> dict[str, tuple[int, int]]:
    """Every file under `roots` by its CRC-32 and size: any write shows, and at a quarter of
    SHA-256's cost, which matters when every plan is checked over 200 MB."""
    return {path: checksum(path) for root in roots for path in sorted(
        os.path.join(directory, name) for directory, _, names in os.walk(root) for name in names)}


class Preflight:
    """A planner built as the worker builds it over `backups` and `archive`, its sandbox root
    in the scratch directory; every plan is held to reading only and starting nothing."""

    def __init__(self, scratch: Scratch, backups: Path, archive: Path) -> None:
        self.scratch, self.sandbox_root = scratch.root, scratch.root / "sandboxes"
        self.source = FilesystemSource(base_backups=str(backups), wal_archive=str(archive))
        settings = WorkerSettings(sandbox_root=self.sandbox_root, index_path=scratch.index,
                                  runtime=scratch.runtime)
        self.sources = build_sources(settings)
        self.planner = build_planner(settings, self.sources)
        self._as_damaged: dict[str, tuple[int, int]] | None = None

    def plan(self, target: ResolvedTarget, options: PlanOptions = PlanOptions(),
             budget_seconds: float | None = None) -> DrillPlan:
        request = PlanRequest(source=self.source, target=target, options=options,
                              budget_seconds=budget_seconds)
        with self._reads_only():
            return self.planner.plan(request).plan

    def refusal(self, target: ResolvedTarget, **request) -> DrillError:
        with pytest.raises(DrillError) as raised:
            self.plan(target, **request)
        return raised.value

    @contextmanager
    def _reads_only(self) -> Iterator[None]:
        read = (Path(self.source.base_backups), Path(self.source.wal_archive))
        if self._as_damaged is None:  # faults are injected before the first plan
            self._as_damaged = fingerprint(*read)
        try:
            yield
        finally:
            assert not self.sandbox_root.exists()
            assert postgres_processes_under(self.scratch) == []
            assert fingerprint(*read) == self._as_damaged


def copied(source: Path, scratch: Scratch, only: tuple[str, ...] | None = None) -> Path:
    """A copy of an archive or a backups directory (of the `only` entries if given) that the
    server user can read, for a fault to damage."""
    destination = scratch.root / source.name
    destination.mkdir()
    for entry in sorted(source.iterdir()):
        if only is None or entry.name in only:
            copy = shutil.copytree if entry.is_dir() else shutil.copy2
            copy(entry, destination / entry.name)
    scratch.runtime.give(destination, recursive=True)
    return destination


def damaged_archive(lab: Lab, scratch: Scratch,
                    backups: tuple[str, ...] | None = None) -> tuple[Preflight, Path]:
    """A preflight over a copy of the archive, to damage, and the lab's backups (copies of
    just the named ones, if given)."""
    archive = copied(lab.wal_archive, scratch)
    source = lab.base_backups if backups is None else copied(lab.base_backups, scratch, backups)
    return Preflight(scratch, source, archive), archive


def flip_byte(path: Path, offset: int) -> None:
    with path.open("r+b") as stream:
        stream.seek(offset)
        byte = stream.read(1)
        stream.seek(offset)
        stream.write(bytes([byte[0] ^ 0xFF]))


def flip_inside_commit(archive: Path, commit: WalEvent) -> None:
    """Corrupt the commit record's xl_xid: its CRC no longer matches."""
    flip_byte(archive / commit.segment, commit.start % DEFAULT_WAL_SEGMENT_SIZE + 4)


def at_time(marker: Marker, later_by: timedelta = timedelta(0), **fields) -> ResolvedTarget:
    return ResolvedTarget(mode="time", utc=marker.commit_time + later_by, inclusive=True,
                          **fields)


def at_xid(marker: Marker, **fields) -> ResolvedTarget:
    return ResolvedTarget(mode="xid", xid=marker.xid, **fields)


def segment_of(gap_lab: GapLab, markers: list[Marker]) -> str:
    """The one segment holding these commits (the lab closed a segment after each group)."""
    segments = {gap_lab.commit(m).segment for m in markers}
    assert len(segments) == 1, segments
    return segments.pop()


def recovered(scratch: Scratch, preflight: Preflight, plan: DrillPlan,
              target: ResolvedTarget) -> Recovered:
    """Restore the planned backup into a sandbox, replay `preflight`'s archive to `target`,
    tear the sandbox down."""
    runtime, sources, source = scratch.runtime, preflight.sources, preflight.source
    env, sandboxes = ActivityEnvironment(), SandboxActivities(runtime, scratch.root / "drills", "test@host")
    sandbox = env.run(sandboxes.provision, SandboxRequest(drill_id=f"pf-{uuid.uuid4().hex[:8]}"))
    try:
        env.run(RestoreActivities(sources).restore_base_backup,
                RestoreRequest(sandbox=sandbox, backup=plan.backup, source=source))
        return env.run(ReplayActivities(runtime, sources).replay_to_target, ReplayRequest(
            sandbox=sandbox, target=target, source=source, db_user="postgres")).recovered
    finally:
        env.run(sandboxes.teardown, sandbox)
        assert postgres_processes_under(Path(sandbox.root)) == []


# --- 1. a missing segment --------------------------------------------------------------------

@pytest.fixture
def gap(gap_lab: GapLab, scratch: Scratch) -> tuple[Preflight, str]:
    """The in_gap segment deleted, with backup `older` only: the gap lies between the only
    backup and any target after it."""
    preflight, archive = damaged_archive(gap_lab.lab, scratch, backups=("older",))
    missing = segment_of(gap_lab, gap_lab.in_gap)
    (archive / missing).unlink()
    return preflight, missing


def test_a_missing_segment_is_a_wal_gap_naming_it(gap_lab, gap):
    preflight, missing = gap
    target = at_time(gap_lab.after_gap[-1])
    error = preflight.refusal(target)
    assert error.code == ErrorCode.WAL_GAP
    assert error.message == (f"segment {missing} is missing from the archive; recovery from "
                             f"backup older ends there, before {target.describe()}")


def test_latest_stops_at_the_gap(gap_lab, gap):
    preflight, missing = gap
    plan = preflight.plan(LATEST)
    assert (plan.wal_break.code, plan.wal_break.segment) == ("WAL_GAP", missing)
    assert plan.predicted.last_kept.xid == gap_lab.before_gap[-1].xid
    assert plan.predicted.last_xact_replay_time == gap_lab.before_gap[-1].commit_time


def test_last_consistent_before_gap_moves_the_target_to_the_last_commit_before_it(gap_lab, gap):
    preflight, missing = gap
    last_before = gap_lab.before_gap[-1]
    plan = preflight.plan(at_time(gap_lab.after_gap[-1]), LAST_CONSISTENT)
    assert plan.fallback.step == "last_consistent_before_gap"
    assert plan.fallback.cause_code == ErrorCode.WAL_GAP and missing in plan.fallback.cause
    assert plan.fallback.used == ResolvedTarget(mode="xid", xid=last_before.xid, inclusive=True)
    assert (plan.backup.id, plan.predicted.last_kept.xid) == ("older", last_before.xid)
    assert plan.predicted.last_xact_replay_time == last_before.commit_time
    assert plan.fallback.seconds_given_up == (
        gap_lab.after_gap[-1].commit_time - last_before.commit_time).total_seconds()


def test_the_transactions_given_up_are_never_undercounted(gap_lab, gap):
    """Given up: every commit after the last one kept through the last one the requested
    target keeps, the 3 in the missing segment too, which no index can count: the honest
    answers are the markers' 6 or unknown (None). FAILS: counted from the readable segments
    only, the plan reports 3 as if exact."""
    preflight, _ = gap
    plan = preflight.plan(at_time(gap_lab.after_gap[-1]), LAST_CONSISTENT)
    assert plan.fallback.transactions_given_up in (None, len(gap_lab.in_gap + gap_lab.after_gap))


def test_last_consistent_before_gap_never_moves_past_the_requested_target(gap_lab, scratch):
    """A newer backup, taken after the target, leaves the last consistent point before the gap
    where it was. FAILS: the fallback plans `latest` over every backup, takes the newer one
    and moves the target to the archive's last commit, after the one requested (an incident's
    damage would be replayed), with a negative seconds_given_up."""
    preflight, archive = damaged_archive(gap_lab.lab, scratch)
    (archive / segment_of(gap_lab, gap_lab.in_gap)).unlink()
    requested = at_time(gap_lab.after_gap[-1])
    plan = preflight.plan(requested, LAST_CONSISTENT)
    assert plan.predicted.last_kept.xid == gap_lab.before_gap[-1].xid, (
        f"moved to {plan.fallback.used.describe()} from backup {plan.backup.id}, after "
        f"{requested.describe()}")


# --- 2. a truncated segment ------------------------------------------------------------------

def cut_through_a_commit(gap_lab: GapLab) -> int:
    commit = gap_lab.commit(gap_lab.in_gap[1])
    return commit.start % DEFAULT_WAL_SEGMENT_SIZE + 4


CUTS = {
    "through its commits": cut_through_a_commit,
    # FAILS: the records all end before 8 MB, so pg_waldump reads them all, but PostgreSQL
    # refuses the file: 'archive file ... has wrong size: 8388608 instead of 16777216'.
    "to 8 MB, past its last record": lambda _: DEFAULT_WAL_SEGMENT_SIZE // 2,
}


@pytest.mark.parametrize("cut", CUTS)
def test_a_truncated_segment_is_wal_corrupt_never_a_clean_end(cut, gap_lab, scratch):
    preflight, archive = damaged_archive(gap_lab.lab, scratch)
    truncated = segment_of(gap_lab, gap_lab.in_gap)
    with (archive / truncated).open("r+b") as segment:
        segment.truncate(CUTS[cut](gap_lab))
    target = at_time(gap_lab.after_gap[-1])
    error = preflight.refusal(target)
    assert error.code == ErrorCode.WAL_CORRUPT
    assert error.message.startswith(f"segment {truncated} is unreadable from 0/")
    assert error.message.endswith(f"; recovery from backup older ends there, before "
                                  f"{target.describe()}")


# --- 3. a flipped byte -----------------------------------------------------------------------

@pytest.fixture
def late_commit_flipped(gap_lab: GapLab, scratch: Scratch) -> Preflight:
    """The second late commit's record damaged, after every target but `latest`."""
    preflight, archive = damaged_archive(gap_lab.lab, scratch)
    flip_inside_commit(archive, gap_lab.commit(gap_lab.late[1]))
    return preflight


def test_a_flipped_byte_in_a_commit_recovery_needs_is_wal_corrupt(gap_lab, scratch):
    preflight, archive = damaged_archive(gap_lab.lab, scratch)
    flipped = gap_lab.commit(gap_lab.in_gap[1])
    flip_inside_commit(archive, flipped)
    error = preflight.refusal(at_time(gap_lab.after_gap[-1]))
    assert error.code == ErrorCode.WAL_CORRUPT
    assert error.message.startswith(f"segment {flipped.segment} is unreadable from {flipped.start_lsn} (")
    assert "incorrect resource manager data checksum" in error.message


def test_a_flipped_byte_after_the_target_is_not_an_error(gap_lab, late_commit_flipped):
    plan = late_commit_flipped.plan(at_xid(gap_lab.after_gap[-1], inclusive=True))
    assert (plan.backup.id, plan.predicted.last_kept.xid) == ("older", gap_lab.after_gap[-1].xid)
    # Known, and out of the way: recovery stops before it reads that segment.
    flipped = gap_lab.commit(gap_lab.late[1]).segment
    assert (plan.wal_break.code, plan.wal_break.segment) == ("WAL_CORRUPT", flipped)


def test_a_flipped_byte_after_the_stop_in_the_same_segment_is_not_an_error(
        gap_lab, late_commit_flipped):
    """An inclusive time target stops before the first later commit: recovery reads that
    commit, in the damaged segment, but never the damaged record after it. FAILS: a corrupt
    segment is unreadable from its first byte, so the plan is refused as WAL_CORRUPT, while
    PostgreSQL stops 'before commit of transaction <late[0]>' exactly as on the whole WAL."""
    plan = late_commit_flipped.plan(at_time(gap_lab.after_gap[-1]))
    assert plan.predicted.stop.record == f"commit of xid {gap_lab.late[0].xid}"
    assert plan.predicted.last_kept.xid == gap_lab.after_gap[-1].xid


def test_latest_replays_up_to_the_flipped_record(gap_lab, late_commit_flipped, scratch):
    """PostgreSQL replays a damaged segment up to the bad record and ends recovery there:
    `latest` alone is refused (WAL_CORRUPT); with last_consistent_before_gap the plan stops
    exactly where PostgreSQL does."""
    with pytest.raises(DrillError) as refused:
        late_commit_flipped.plan(LATEST)
    assert refused.value.code == ErrorCode.WAL_CORRUPT
    plan = late_commit_flipped.plan(LATEST, LAST_CONSISTENT)
    promoted = recovered(scratch, late_commit_flipped, plan, plan.fallback.used)
    assert promoted.last_commit_time == gap_lab.late[0].commit_time
    assert plan.predicted.last_xact_replay_time == promoted.last_commit_time


# --- 4. a corrupt base backup ----------------------------------------------------------------

@pytest.fixture
def corrupt_newer(gap_lab: GapLab, scratch: Scratch) -> Preflight:
    """Copies of both backups, a byte flipped in the largest relation file of `newer`."""
    backups = copied(gap_lab.lab.base_backups, scratch)
    relation = max((p for p in (backups / "newer" / "base").rglob("*") if p.is_file()),
                   key=lambda p: p.stat().st_size)
    flip_byte(relation, relation.stat().st_size // 2)
    return Preflight(scratch, backups, gap_lab.lab.wal_archive)


def test_a_corrupt_backup_is_refused_naming_it(gap_lab, corrupt_newer):
    error = corrupt_newer.refusal(at_time(gap_lab.late[1]))
    assert error.code == ErrorCode.BACKUP_CORRUPT
    assert error.message.startswith("backup newer fails pg_verifybackup: ")
    assert "checksum mismatch for file" in error.message


def test_earlier_backup_falls_back_past_the_corrupt_one(gap_lab, corrupt_newer):
    plan = corrupt_newer.plan(at_time(gap_lab.late[1]), PlanOptions(fallback=["earlier_backup"]))
    assert plan.backup.id == "older" and plan.fallback.skipped_backups == ["newer"]
    assert (plan.fallback.step, plan.fallback.cause_code) == ("earlier_backup", "BACKUP_CORRUPT")
    assert plan.predicted.last_kept.xid == gap_lab.late[1].xid


# --- 5. targets outside the archive, 7. the budget -------------------------------------------

@pytest.fixture
def untouched(gap_lab: GapLab, scratch: Scratch) -> Preflight:
    """The lab's own backups and archive, read in place."""
    return Preflight(scratch, gap_lab.lab.base_backups, gap_lab.lab.wal_archive)


def test_a_target_before_the_oldest_backup_is_refused(gap_lab, untouched):
    target = at_time(gap_lab.before_backup)
    error = untouched.refusal(target)
    older = next(b for b in FilesystemBackups.read(gap_lab.lab.base_backups,
                                                   gap_lab.lab.wal_archive) if b.id == "older")
    assert error.code == ErrorCode.TARGET_BEFORE_EARLIEST_BACKUP
    assert error.message == (f"target ({target.describe()}) is before the end of the oldest "
                             f"backup older (ended at LSN {older.stop_lsn}, "
                             f"{format_utc(older.stop_time)})")


def test_a_time_after_the_last_archived_commit_is_beyond_the_archive(gap_lab, untouched):
    target = at_time(gap_lab.late[-1], later_by=timedelta(seconds=1))
    error = untouched.refusal(target)
    assert error.code == ErrorCode.TARGET_BEYOND_ARCHIVE
    assert error.message == (f"the archived WAL after the backup holds no commit or abort with "
                             f"time > {format_utc(target.utc)}: recovery of {target.describe()} "
                             "would replay everything and then fail")


def test_a_plan_over_budget_is_refused(gap_lab, untouched):
    target = at_time(gap_lab.late[1])
    plan = untouched.plan(target)
    # No drill measured yet: the default 50 MB/s restore and 20 MB/s replay.
    assert plan.estimate_seconds == round(plan.restore_bytes / 50e6 + plan.replay_bytes / 20e6, 1)
    error = untouched.refusal(target, budget_seconds=0.01)
    assert error.code == ErrorCode.OVER_BUDGET
    assert error.message == (f"the plan is estimated at {plan.estimate_seconds:g}s (restore "
                             f"{plan.restore_bytes / 1e6:.0f} MB, replay "
                             f"{plan.replay_bytes / 1e6:.0f} MB), over the budget of 0.01s")


# --- 6. timeline 2 ---------------------------------------------------------------------------

@pytest.fixture
def fork(fork_lab: ForkLab, scratch: Scratch) -> Preflight:
    return Preflight(scratch, fork_lab.lab.base_backups, fork_lab.lab.wal_archive)


def only_on_timeline1(fork_lab: ForkLab) -> Marker:
    """A timeline-1 commit whose xid timeline 2 never reused (both number on from the switch)."""
    marker = fork_lab.timeline1[-1]
    assert marker.xid not in {m.xid for m in fork_lab.timeline2}
    return marker


def test_the_promotion_left_timeline_2_in_the_archive(fork_lab):
    switch, promoted_after = fork_lab.promotion, fork_lab.shared[-1]
    assert (switch.timeline, switch.parent) == (2, 1)
    assert switch.history.switches[-1].reason == f"after transaction {promoted_after.xid}"
    # The switch point is the end of that commit record: at most the insert position after it.
    assert parse_lsn(fork_lab.shared[-2].lsn_after) < parse_lsn(switch.switch_lsn) <= parse_lsn(
        promoted_after.lsn_after)
    assert all(parse_lsn(m.lsn_after) > parse_lsn(switch.switch_lsn)
               for m in fork_lab.timeline1 + fork_lab.timeline2)


@pytest.mark.parametrize("timeline", ["latest", "2"])
def test_a_timeline_1_xid_on_the_timeline_2_path_has_diverged(fork_lab, fork, timeline):
    target = at_xid(only_on_timeline1(fork_lab), timeline=timeline)
    error = fork.refusal(target)
    assert error.code == ErrorCode.TIMELINE_DIVERGED
    commit = fork.plan(target.model_copy(update={"timeline": "1"})).predicted.first_dropped
    assert error.message == (f"{target.describe()} is on timeline 1 at {commit.lsn}, a branch "
                             "timeline 2 does not contain; request timeline 1")


@pytest.mark.parametrize("timeline", ["current", "1"])
def test_the_same_xid_on_timeline_1_plans(fork_lab, fork, timeline):
    marker = only_on_timeline1(fork_lab)
    plan = fork.plan(at_xid(marker, timeline=timeline))
    assert plan.predicted.stop.record == f"commit of xid {marker.xid}"
    assert plan.predicted.last_kept.xid == fork_lab.timeline1[-2].xid
    assert plan.predicted.last_xact_replay_time == fork_lab.timeline1[-2].commit_time


def test_a_timeline_2_xid_plans_after_the_switch_point(fork_lab, fork):
    marker = fork_lab.timeline2[-1]
    plan = fork.plan(at_xid(marker, inclusive=True))
    assert (plan.predicted.last_kept.xid, plan.predicted.last_kept.commit_time) == (
        marker.xid, marker.commit_time)
    switch_lsn = parse_lsn(fork_lab.promotion.switch_lsn)
    assert switch_lsn < parse_lsn(plan.predicted.replay_lsn) <= parse_lsn(marker.lsn_after)


def test_a_timeline_the_archive_lacks_is_not_found(fork_lab, fork):
    error = fork.refusal(at_xid(fork_lab.timeline2[-1], timeline="3"))
    assert error.code == ErrorCode.TIMELINE_NOT_FOUND
    assert error.message == "timeline 3 is not in the archive (it holds [1, 2])"


BRANCH_TARGETS = {
    "timeline 1 after the switch": lambda f: at_xid(only_on_timeline1(f), timeline="1"),
    "timeline 2": lambda f: at_xid(f.timeline2[-1], inclusive=True),
}


@pytest.mark.parametrize("branch", BRANCH_TARGETS)
def test_postgresql_stops_where_predicted_on_each_branch(branch, fork_lab, fork, scratch):
    target = BRANCH_TARGETS[branch](fork_lab)
    plan = fork.plan(target)
    stopped = recovered(scratch, fork, plan, target)
    assert (stopped.replay_lsn, stopped.last_commit_time) == (
        plan.predicted.replay_lsn, plan.predicted.last_xact_replay_time)
    side = "after" if target.inclusive else "before"
    assert stopped.stop_reason.startswith(
        f"recovery stopping {side} commit of transaction {target.xid}, time ")


def test_timeline_2_ends_where_its_wal_ends_not_at_a_gap(fork_lab, fork, scratch):
    """Past the switch point recovery reads timeline 2's segments only: the old primary's
    later timeline-1 segments are another branch, not WAL timeline 2 lacks. FAILS:
    continuity.first_break scans to the last segment of any timeline on the path, reports
    timeline 2's never-written next segment as a WAL_GAP, and so refuses a time after
    timeline 2's last commit as WAL_GAP instead of TARGET_BEYOND_ARCHIVE."""
    plan = fork.plan(LATEST)
    promoted = recovered(scratch, fork, plan, LATEST)
    assert promoted.last_commit_time == plan.predicted.last_xact_replay_time == (
        fork_lab.timeline2[-1].commit_time)
    assert plan.wal_break is None
    after_the_end = at_time(fork_lab.timeline2[-1], later_by=timedelta(seconds=1))
    assert fork.refusal(after_the_end).code == ErrorCode.TARGET_BEYOND_ARCHIVE
