"""Bisect probes: plan a bisection, list its candidate commits, and judge one recovered state
after another in the same sandbox.

A probe restarts the sandbox server paused at a new target and runs the predicate in it,
read-only. PostgreSQL 15 reads recovery_target_* only at start, so every probe is a restart:

- forward (a target after where the server stands): the paused server takes a restartpoint
  (CHECKPOINT on a standby), stops immediately, and starts again with the new target; replay
  goes on from that restartpoint (the last checkpoint record replayed), not from the base
  backup. (A fast shutdown of a paused standby waits out the pause loop's one-second sleep;
  after the restartpoint an immediate one loses nothing that replay does not redo.) The pause
  is awaited on the server's log, then confirmed as a drill's replay confirms it.
- backward: the data directory is first made the last clean state again. That state is kept
  by the probe after a clean one (always forward), before it moves on, in the same activity:
  on top of a plain base backup (see keep_layered: the files replay never changed are read
  from the backup, the rest kept in `<sandbox>/good`), else a whole `cp --reflink=auto -a`
  the first time and then only the files that changed, both ways (size and mtime). WAL
  segment files are left out both ways: recovery fetches every segment from the archive first
  (restore_command), and pg_wal only holds copies of archived ones.

A probe's keep or return and its restart share one activity (one round trip, one stop); its
report splits their seconds. A retry never keeps a state that moved on: the step file names
the probe whose data directory is ready.

Restarts are made cheap in the sandbox's own postgresql.auto.conf (the isolation settings stay
on the command line, which wins): `fsync = off`, so that neither the restartpoint nor the
start after an immediate stop syncs every file. The sandbox is disposable; should the host
restart during a bisection (its boot id is kept in the sandbox), the bisection fails instead
of trusting files that may have lost writes.

The candidate commits are written into the sandbox by `list_bisect_candidates`, so the
workflow's history carries positions and the few commits probed, never the whole list.
Every probe checks that PostgreSQL stopped exactly where asked before judging the state.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import psycopg
import structlog
from temporalio import activity

from activities.boundary import activity_boundary
from activities.heartbeat import Heartbeater
from activities.models import (
    BisectPlan,
    BisectPlanRequest,
    CandidatesRequest,
    CandidatesResult,
    GoodStateResult,
    ProbeRequest,
    ReplayProgress,
    ReplayRequest,
    StepRequest,
    StepResult,
)
from activities.replay import ReplayActivities
from activities.sandbox import server_of
from adapters.investigation import RelationCatalog, WalRangeReader
from adapters.pg_runtime import PostgresRuntime, remove_tree
from adapters.pg_server import PostgresServer
from adapters.preflight import IndexedArchive
from adapters.smoke_checks import run_check
from adapters.sources import BackupSources
from adapters.wal_archive import list_archive
from adapters.wal_index import IndexProgress, WalIndex
from adapters.waldump import PgWaldump
from domain.bisect import (
    Bound,
    CommitSeen,
    RelationFilter,
    commits_between,
    predicate_verdict,
    probe_target,
    require_candidates,
    require_ordered,
    stop_matches,
)
from domain.catalog import BaseBackup
from domain.errors import DrillError, ErrorCode
from domain.investigation import RelFileLocator, transactions_touching
from domain.lsn import format_lsn, is_segment_name, parse_lsn
from domain.plan import last_consistent_target, plan_recovery
from domain.prediction import CommitRef
from domain.sandbox import Sandbox, server_settings
from domain.spec import Check, FilesystemSource
from domain.targets import ResolvedTarget, render_settings
from domain.timelines import choose_timeline, on_timeline
from domain.wal_pages import end_before
from domain.wal_records import WalEvent

_log = structlog.get_logger("pitrdrill.probe")
CANDIDATES_FILE = "bisect-candidates.json"
STEP_FILE = "bisect-step"  # the probe whose data directory is ready (kept / returned)
GOOD_STATE_DIR = "good"
BOOT_ID_FILE = "bisect-boot-id"
_BOOT_ID = Path("/proc/sys/kernel/random/boot_id")
_FAST_RESTARTS = ("# pitrdrill bisect: probes restart often; the sandbox is disposable\n"
                  "fsync = 'off'\n")
_STOP_TIMEOUT_S = 30.0
_LOG_WAIT_S = 5.0
# The good bound lies before the backup chosen for the bad one: an older backup may reach it.
_BEFORE_BACKUP = {ErrorCode.TARGET_BEFORE_EARLIEST_BACKUP, ErrorCode.UNKNOWN_XID,
                  ErrorCode.UNKNOWN_RESTORE_POINT}
_PAUSED_LINES = ("pausing at the end of recovery", "ready to accept read-only connections")
_LISTS_CACHED = 8  # candidate lists kept in memory (each is also in its sandbox)
_HEAP_RMGRS = ("--rmgr=Heap", "--rmgr=Heap2")


# --- the candidate list, kept in the sandbox -----------------------------------------------

@dataclass(frozen=True)
class _Commit:
    xid: int
    lsn: str
    commit_time: datetime

    def seen(self, zone: str | None) -> CommitSeen:
        return CommitSeen.of(CommitRef(xid=self.xid, lsn=self.lsn, commit_time=self.commit_time),
                             zone)


@dataclass(frozen=True)
class _CandidateList:
    commits: list[_Commit]  # every commit between the bounds, WAL order
    candidates: list[int]  # indexes into commits
    good_last: _Commit | None  # the last commit the good bound keeps

    @classmethod
    def load(cls, path: Path) -> _CandidateList:
        data = json.loads(path.read_text())

        def commit(row) -> _Commit:
            return _Commit(row[0], row[1], datetime.fromisoformat(row[2]))

        commits = [commit(row) for row in data["commits"]]
        return cls(commits=commits, candidates=data["candidates"],
                   good_last=commit(data["good_last"]) if data["good_last"] else None)

    def save(self, path: Path) -> None:
        def row(c: _Commit) -> list:
            return [c.xid, c.lsn, c.commit_time.isoformat()]

        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"commits": [row(c) for c in self.commits],
                                   "candidates": self.candidates,
                                   "good_last": row(self.good_last) if self.good_last else None}))
        tmp.replace(path)

    def kept_before(self, index: int) -> _Commit | None:
        return self.commits[index - 1] if index > 0 else self.good_last


def _commit(event: WalEvent) -> _Commit:
    assert event.timestamp is not None
    return _Commit(event.xid, event.start_lsn, event.timestamp)


# --- mirroring a stopped data directory --------------------------------------------------------

@dataclass
class _Mirrored:
    files_copied: int = 0
    bytes_copied: int = 0
    files_removed: int = 0


def _same(source: os.stat_result, target: os.stat_result) -> bool:
    if stat.S_IFMT(source.st_mode) != stat.S_IFMT(target.st_mode):
        return False
    if stat.S_ISDIR(source.st_mode):
        return stat.S_IMODE(source.st_mode) == stat.S_IMODE(target.st_mode) \
            and (source.st_uid, source.st_gid) == (target.st_uid, target.st_gid)
    return source.st_size == target.st_size and source.st_mtime_ns == target.st_mtime_ns


def _wal_segment(relative: str) -> bool:
    """A segment in pg_wal: a copy of the archived one of that name, never kept."""
    folder, _, name = relative.rpartition("/")
    return folder == "pg_wal" and is_segment_name(name)


def _owned_like(path: Path, like: os.stat_result) -> None:
    if os.geteuid() == 0:
        os.chown(path, like.st_uid, like.st_gid, follow_symlinks=False)


def _listing(root: str) -> dict[str, os.stat_result]:
    """Every entry under `root` by relative path, not following symlinks; WAL segments
    left out."""
    found: dict[str, os.stat_result] = {}
    pending = [""]
    while pending:
        relative = pending.pop()
        with os.scandir(os.path.join(root, relative)) as entries:
            for entry in entries:
                path = f"{relative}/{entry.name}" if relative else entry.name
                if _wal_segment(path):
                    continue
                found[path] = entry.stat(follow_symlinks=False)
                if entry.is_dir(follow_symlinks=False):
                    pending.append(path)
    return found


def mirror(source: Path, target: Path) -> _Mirrored:
    """Make `target` a copy of `source` (both stopped data directories), copying only the
    files whose size or mtime differ and removing what `source` lacks."""
    return _sync({rel: (source / rel, st) for rel, st in _listing(str(source)).items()}, target)


def _sync(want: dict[str, tuple[Path, os.stat_result]], target: Path) -> _Mirrored:
    """Make `target` hold exactly `want` (relative path -> where its content is, and that
    file's stat), copying only what differs in size or mtime from what `target` has. Copies
    keep their source's mtime, and are owned like `target` itself."""
    done = _Mirrored()
    have = _listing(str(target))
    owner = target.stat()
    for relative in sorted(set(have) - set(want), reverse=True):  # children before parents
        path = target / relative
        if stat.S_ISDIR(have[relative].st_mode):
            remove_tree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
        done.files_removed += 1
    for relative in sorted(want):  # parents before children
        (src, src_stat), dst_stat = want[relative], have.get(relative)
        if dst_stat is not None and _same(src_stat, dst_stat):
            continue
        dst = target / relative
        if dst_stat is not None and not (stat.S_ISDIR(src_stat.st_mode)
                                         and stat.S_ISDIR(dst_stat.st_mode)):
            # Never written into: a new file (a copy may share nothing with what was there).
            remove_tree(dst) if stat.S_ISDIR(dst_stat.st_mode) else dst.unlink()
            dst_stat = None
        if stat.S_ISDIR(src_stat.st_mode):
            if dst_stat is None:
                dst.mkdir()
            os.chmod(dst, stat.S_IMODE(src_stat.st_mode))
        elif stat.S_ISLNK(src_stat.st_mode):
            dst.symlink_to(os.readlink(src))
            done.files_copied += 1
        else:
            shutil.copyfile(src, dst)
            os.chmod(dst, stat.S_IMODE(src_stat.st_mode) | stat.S_IRUSR | stat.S_IWUSR)
            os.utime(dst, ns=(src_stat.st_atime_ns, src_stat.st_mtime_ns))
            done.files_copied += 1
            done.bytes_copied += src_stat.st_size
        _owned_like(dst, owner)
    return done


# --- the kept clean state, on top of the base backup ------------------------------------------
#
# A plain base backup on the filesystem is read-only input that nothing writes: what the restore
# copied from it and replay never touched need not be kept again. Before the server first
# starts, every restored file gets its backup file's mtime (it holds the same bytes); a file
# PostgreSQL writes later gets a new one. The kept state is then a list of every entry of the
# data directory (`good.json`): "b", the backup's file of that path (same size and mtime), or
# "o", a copy in <sandbox>/good (the files replay changed, directories, the rest).

KEPT_LIST = "good.json"
ALIGNED_FILE = "bisect-aligned"  # the restored files carry their backup file's mtime


def _regular(st: os.stat_result) -> bool:
    return stat.S_ISREG(st.st_mode)


def backup_under(request: ProbeRequest, backup: BaseBackup | None) -> Path | None:
    """The plain base backup directory the data directory was restored from, if any."""
    if backup is None or backup.format != "plain" \
            or not isinstance(request.source, FilesystemSource):
        return None
    path = Path(backup.path)
    return path if (path / "backup_label").is_file() else None


def align_with_backup(data: Path, backup: Path, sandbox_root: Path) -> int:
    """Once, before the server first starts: every restored file that has its backup file's
    size gets that file's mtime (the restore copied its bytes). Returns how many."""
    marker = sandbox_root / ALIGNED_FILE
    if marker.exists():
        return 0
    aligned = 0
    base = _listing(str(backup))
    for relative, st in _listing(str(data)).items():
        origin = base.get(relative)
        if origin is not None and _regular(st) and _regular(origin) \
                and st.st_size == origin.st_size:
            os.utime(data / relative, ns=(origin.st_atime_ns, origin.st_mtime_ns))
            aligned += 1
    marker.write_text("")
    return aligned


def keep_layered(data: Path, good: Path, backup: Path) -> _Mirrored:
    """Keep the (stopped) data directory: its backup's files by reference, the rest copied."""
    base = _listing(str(backup))
    have = _listing(str(data))
    kept = {rel: "b" if _regular(st) and rel in base and _regular(base[rel])
            and st.st_size == base[rel].st_size and st.st_mtime_ns == base[rel].st_mtime_ns
            else "o" for rel, st in have.items()}
    good.mkdir(exist_ok=True)
    listing = good.with_name(KEPT_LIST)
    listing.unlink(missing_ok=True)  # never a list that names files not yet copied
    done = _sync({rel: (data / rel, st) for rel, st in have.items() if kept[rel] == "o"}, good)
    partial = listing.with_suffix(".partial")
    partial.write_text(json.dumps(kept))
    partial.replace(listing)
    return done


def return_layered(good: Path, data: Path, backup: Path) -> _Mirrored:
    """Make the (stopped) data directory the kept state again: the files replay changed since,
    from the kept copies or from the backup."""
    kept: dict[str, str] = json.loads(good.with_name(KEPT_LIST).read_text())
    copies, base = _listing(str(good)), _listing(str(backup))
    want = {}
    for rel, where in kept.items():
        origin, listing = (backup, base) if where == "b" else (good, copies)
        if rel not in listing:
            raise DrillError(ErrorCode.RECOVERY_FAILED,
                             f"the kept clean state lacks {rel} (in {origin}): cannot probe "
                             "backward")
        want[rel] = (origin / rel, listing[rel])
    return _sync(want, data)


def _full_copy(source: Path, target: Path) -> None:
    """A first copy, reflinked where the filesystem can (btrfs, XFS), else copied; WAL
    segments left out."""
    partial = target.with_name(target.name + ".partial")
    remove_tree(partial)
    partial.mkdir()
    shutil.copystat(source, partial)
    _owned_like(partial, source.stat())
    wal = source / "pg_wal"
    entries = [str(e) for e in source.iterdir() if e != wal]
    entries += [str(e) for e in wal.iterdir() if not is_segment_name(e.name)] \
        if wal.is_dir() else []
    if wal.is_dir():
        (partial / "pg_wal").mkdir()
        shutil.copystat(wal, partial / "pg_wal")
        _owned_like(partial / "pg_wal", wal.stat())
    top = [e for e in entries if Path(e).parent == source]
    under_wal = [e for e in entries if Path(e).parent == wal]
    for sources, into in ((top, partial), (under_wal, partial / "pg_wal")):
        if sources:
            subprocess.run(["cp", "--reflink=auto", "-a", *sources, str(into)], check=True,
                           capture_output=True)
    partial.rename(target)


def _tree_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def _boot_id() -> str:
    try:
        return _BOOT_ID.read_text().strip()
    except OSError:
        return "unknown"


def same_boot(sandbox: Sandbox) -> None:
    """The sandbox runs with fsync off: after a host restart its files cannot be trusted."""
    recorded = Path(sandbox.root) / BOOT_ID_FILE
    if not recorded.exists():
        recorded.write_text(_boot_id())
    elif recorded.read_text() != _boot_id():
        raise DrillError(ErrorCode.RECOVERY_FAILED,
                         f"the host restarted during the bisection: {sandbox.data_dir} ran with "
                         "fsync off and may have lost writes",
                         "Start the bisection again (its sandbox is torn down).")


def fast_restarts(sandbox: Sandbox, runtime: PostgresRuntime) -> None:
    """fsync off in the sandbox's postgresql.auto.conf, once."""
    same_boot(sandbox)
    auto = Path(sandbox.data_dir) / "postgresql.auto.conf"
    current = auto.read_text() if auto.exists() else ""
    if _FAST_RESTARTS not in current:
        auto.write_text(current + ("" if current.endswith("\n") or not current else "\n")
                        + _FAST_RESTARTS)
        auto.chmod(0o600)
        runtime.give(auto)


# --- the activities --------------------------------------------------------------------------

class ProbeActivities:
    """`index` is this host's WAL index (planning runs on any host, the candidate list is
    read on the sandbox's)."""

    def __init__(self, runtime: PostgresRuntime, sources: BackupSources, index: WalIndex,
                 max_poll_interval_s: float = 0.02) -> None:
        self._runtime = runtime
        self._sources = sources
        self._index = index
        # The drill's replay, polled more often: a probe's replay is short.
        self._replay = ReplayActivities(runtime, sources, max_poll_interval_s)
        self._reader = WalRangeReader(PgWaldump(runtime))
        self._lists: dict[str, _CandidateList] = {}

    # --- planning (shared queue) ---------------------------------------------------------

    @activity.defn(name="plan_bisection")
    @activity_boundary
    def plan_bisection(self, request: BisectPlanRequest) -> BisectPlan:
        started = time.perf_counter()
        source, adapter = request.source, self._sources.adapter(request.source)
        archive_dir = adapter.wal_directory(source)
        with Heartbeater(IndexProgress()) as beat:
            indexed = self._index.index(archive_dir, beat)
        archive = IndexedArchive(self._index, archive_dir, indexed, request.bad.timeline,
                                 lambda backup: adapter.verify(source, backup))
        plan, replaced = request.plan, None
        good = request.good or ResolvedTarget(mode="immediate", action="pause",
                                              timeline=request.bad.timeline)
        try:
            good_predicted = archive.predict(plan.backup, good, archive.wal_break(plan.backup))
        except DrillError as error:
            if error.code not in _BEFORE_BACKUP or request.good is None:
                raise
            # The newest backup before the bad bound is after the good one: take the newest
            # that reaches the good bound, if its WAL reaches the bad bound too.
            backups = adapter.backups(source)
            older = plan_recovery(backups, good, archive, request.options)
            replaced = plan_recovery([older.backup], request.bad, archive, request.options)
            replaced.window, replaced.estimate_seconds = plan.window, None
            plan, good_predicted = replaced, older.predicted
        backup = plan.backup
        bad = request.bad
        if bad.mode == "latest":
            bad = last_consistent_target(plan, bad.model_copy(update={"action": "pause"}))
        bad_predicted = archive.predict(backup, bad, archive.wal_break(backup))
        events = self._events(archive_dir, request.bad.timeline, backup)
        assert good_predicted.replay_lsn and bad_predicted.replay_lsn
        require_ordered(good_predicted.replay_lsn, bad_predicted.replay_lsn)
        found = commits_between(events, good_predicted.replay_lsn, bad_predicted.replay_lsn)
        require_candidates(len(found.commits))
        good_text = (f"{request.good_given} ({good.describe()})" if request.good_given else
                     f"the consistent point of backup {backup.id} ({backup.stop_lsn})")
        last = found.commits[-1]
        bad_text = (f"{request.bad_given} ({bad.describe()})" if request.bad_given else
                    f"the end of the archive: right after its last commit, xid {last.xid} "
                    f"at {last.start_lsn}")
        _log.info("bisection planned", backup=backup.id, commits=len(found.commits),
                  aborted=found.aborted)
        return BisectPlan(
            plan=replaced,
            good=Bound(given=request.good_given, target=good,
                       replay_lsn=good_predicted.replay_lsn, description=good_text),
            bad=Bound(given=request.bad_given, target=bad, replay_lsn=bad_predicted.replay_lsn,
                      description=bad_text),
            commits=len(found.commits), aborted=found.aborted,
            last_good_bound_commit=CommitSeen.of(found.before_first, request.zone)
            if found.before_first else None,
            seconds=time.perf_counter() - started,
        )

    def _events(self, archive_dir: Path, timeline: str, backup: BaseBackup) -> list[WalEvent]:
        history = choose_timeline(timeline, backup.timeline, list_archive(archive_dir).histories)
        return on_timeline(self._index.events(archive_dir), history)

    # --- on the sandbox's host -----------------------------------------------------------

    @activity.defn(name="list_bisect_candidates")
    @activity_boundary
    def list_candidates(self, request: CandidatesRequest) -> CandidatesResult:
        """Writes the candidates into the sandbox. With a relation, only the transactions whose
        heap records name its storage, looked up in the sandbox (paused at the good bound)."""
        started = time.perf_counter()
        adapter = self._sources.adapter(request.source)
        archive_dir = adapter.wal_directory(request.source)
        with Heartbeater(IndexProgress()) as beat:
            self._index.index(archive_dir, beat)
        events = self._events(archive_dir, request.timeline, request.backup)
        found = commits_between(events, request.good_stop_lsn, request.bad_stop_lsn)
        commits = [_commit(e) for e in found.commits]
        chosen = list(range(len(commits)))
        relation = None
        if request.relation:
            xids, relation = self._touching(request, archive_dir, events)
            chosen = [i for i, c in enumerate(commits) if c.xid in xids]
            relation.candidates, relation.commits_between = len(chosen), len(commits)
        listed = _CandidateList(
            commits=commits, candidates=chosen,
            good_last=_commit(found.before_first) if found.before_first else None)
        listed.save(Path(request.sandbox.root) / CANDIDATES_FILE)
        self._remember(request.sandbox.root, listed)
        require_candidates(len(chosen), request.relation, len(commits))
        return CandidatesResult(
            candidates=len(chosen), commits=len(commits), aborted=found.aborted,
            first=commits[chosen[0]].seen(request.zone),
            last=commits[-1].seen(request.zone), relation=relation,
            seconds=time.perf_counter() - started)

    def _touching(self, request: CandidatesRequest, archive_dir: Path,
                  events: list[WalEvent]) -> tuple[set[int], RelationFilter]:
        assert request.relation is not None
        locator = RelFileLocator.parse(request.relation)
        if locator is None:
            server = server_of(request.sandbox, self._runtime)
            try:
                locator = RelationCatalog().locate(
                    server.conninfo(request.database, request.db_user), request.relation)
            except DrillError as error:
                raise DrillError(
                    ErrorCode.SPEC_INVALID,
                    f"--relation {request.relation!r} names no table of database "
                    f"{request.database!r} at the good bound: {error.message}",
                    "Name a table as schema.table, or give its storage as "
                    "tablespace/database/relfilenode.") from None
        listing = list_archive(archive_dir)
        history = choose_timeline(request.timeline, request.backup.timeline, listing.histories)
        # From the backup's redo point: a transaction writes before it commits.
        start, end = parse_lsn(request.backup.start_lsn), parse_lsn(request.bad_stop_lsn)
        touched = self._reader.records(listing, history, start, end, *_HEAP_RMGRS,
                                       f"--relation={locator}")
        commit_records = self._reader.records(listing, history, start, end, "--rmgr=Transaction")
        xids = transactions_touching(touched, commit_records, events)
        return xids, RelationFilter(
            relation=request.relation, locator=str(locator), scanned_from_lsn=format_lsn(start),
            scanned_to_lsn=format_lsn(end), commits_between=0, candidates=0)

    def _remember(self, root: str, listed: _CandidateList) -> None:
        self._lists.pop(root, None)
        self._lists[root] = listed
        while len(self._lists) > _LISTS_CACHED:  # the oldest bisections' lists go first
            self._lists.pop(next(iter(self._lists)))

    def _candidates(self, sandbox: Sandbox) -> _CandidateList:
        listed = self._lists.get(sandbox.root)
        if listed is None:  # a restarted worker: read back what the listing wrote
            listed = _CandidateList.load(Path(sandbox.root) / CANDIDATES_FILE)
            self._remember(sandbox.root, listed)
        return listed

    @activity.defn(name="probe_before")
    @activity_boundary
    def probe_before(self, request: StepRequest) -> StepResult:
        """Keep the clean state or return to it when asked, restart paused at the probe's
        target, check the stop, run the predicate."""
        started = time.perf_counter()
        result, expected_lsn = self._where(request)
        target = result.target
        server = server_of(request.sandbox, self._runtime)
        replay = ReplayRequest(sandbox=request.sandbox, target=target, source=request.source,
                               database=request.database, db_user=request.db_user)
        with Heartbeater(ReplayProgress()) as beat:
            result.reattached = self._running_for(server, replay)
            if not result.reattached:
                self._prepare(request, server, result)
                backup = backup_under(request, request.backup)
                if request.role == "good_bound" and backup is not None:
                    align_with_backup(Path(request.sandbox.data_dir), backup,
                                      Path(request.sandbox.root))
                fast_restarts(request.sandbox, self._runtime)
                log_from = server.log_size()
                self._replay._start(server, replay, target)
                beat.progress.started = True
                await_pause_in_log(server, log_from)
            replayed = self._replay._replay(replay, beat.progress)
        recovered = replayed.recovered
        _check_stop(target, recovered.stop_reason, recovered.replay_lsn, expected_lsn)
        with server.connect(request.database, request.db_user) as conn:
            checked = run_check(conn, Check(name="bad-when", sql=request.predicate, expect=True),
                                request.db_user)
        if checked.error:
            raise DrillError(ErrorCode.BISECT_PREDICATE_FAILED,
                             f"the predicate failed at {target.describe()}: {checked.error}")
        result.damaged = predicate_verdict(checked.observed, target.describe())
        result.replay_lsn, result.stop_reason = recovered.replay_lsn, recovered.stop_reason
        result.last_commit_time = recovered.last_commit_time
        result.seconds = max(time.perf_counter() - started - result.keep_seconds
                             - result.state_seconds, 0.0)
        _log.info("probed", position=request.position, target=target.describe(),
                  damaged=result.damaged, seconds=round(result.seconds, 3),
                  keep_seconds=round(result.keep_seconds, 3),
                  state_seconds=round(result.state_seconds, 3))
        return result

    def _prepare(self, request: StepRequest, server: PostgresServer, result: StepResult) -> None:
        """Stop the server, then keep its clean state or bring the kept one back, as asked,
        once: a retry whose earlier attempt got this far (the step file names this probe)
        only starts the server again, so a state already moved on is never kept."""
        same_boot(request.sandbox)
        stop_for_restart(server, request.database, request.db_user)
        marker = Path(request.sandbox.root) / STEP_FILE
        step = f"{request.role}:{request.position}"
        try:
            if marker.read_text() == step:
                return
        except OSError:
            pass
        backup = backup_under(request, request.backup)
        if request.keep_first:
            kept = self._keep(request.sandbox, backup)
            result.keep_seconds = kept.seconds
            result.files_copied, result.bytes_copied = kept.files_copied, kept.bytes_copied
        if request.return_first:
            returned = self._return(request.sandbox, backup)
            result.state_seconds = returned.seconds
            result.files_copied, result.bytes_copied = returned.files_copied, \
                returned.bytes_copied
        marker.write_text(step)

    def _where(self, request: ProbeRequest) -> tuple[StepResult, str | None]:
        """The probe's target, which commits it keeps and excludes, and the replay LSN it
        must stop at."""
        if request.target is not None:
            return StepResult(position=request.position, target=request.target, damaged=False,
                              seconds=0.0), request.expect_replay_lsn
        listed = self._candidates(request.sandbox)
        index = listed.candidates[request.position]
        commit = listed.commits[index]
        kept = listed.kept_before(index)
        return StepResult(
            position=request.position, target=probe_target(commit, request.timeline),
            damaged=False, stopped_before=commit.seen(request.zone),
            last_kept=kept.seen(request.zone) if kept else None, commits_kept=index,
            seconds=0.0), expected_stop(commit.lsn)

    def _running_for(self, server: PostgresServer, replay: ReplayRequest) -> bool:
        """A retry: the server is already running with exactly this probe's settings."""
        if server.pid() is None:
            return False
        sandbox = replay.sandbox
        fetch_wal = self._sources.adapter(replay.source).restore_command(replay.source, sandbox)
        wanted = render_settings(server_settings(sandbox, fetch_wal, replay.target))
        try:
            return Path(sandbox.root, "recovery-settings.conf").read_text() == wanted
        except OSError:
            return False

    # --- the kept clean state (the server stopped) ---------------------------------------

    def _keep(self, sandbox: Sandbox, backup: Path | None = None) -> GoodStateResult:
        """Keep the (stopped) data directory: on top of its plain base backup (only what
        replay changed is copied), else a whole copy the first time, then only the files
        that changed."""
        started = time.perf_counter()
        root = Path(sandbox.root)
        data, good = Path(sandbox.data_dir), root / GOOD_STATE_DIR
        layered = backup is not None and (root / ALIGNED_FILE).exists()
        if layered:
            assert backup is not None
            copied, full = keep_layered(data, good, backup), False
        elif not good.exists():
            _full_copy(data, good)
            copied = _Mirrored(files_copied=sum(1 for _ in good.rglob("*")),
                               bytes_copied=_tree_bytes(good))
            full = True
        else:
            (root / KEPT_LIST).unlink(missing_ok=True)  # good/ is a whole copy again
            copied, full = mirror(data, good), False
        seconds = time.perf_counter() - started
        _log.info("clean state kept", full_copy=full, on_backup=layered,
                  files=copied.files_copied, bytes=copied.bytes_copied,
                  removed=copied.files_removed, seconds=round(seconds, 3))
        return GoodStateResult(full_copy=full, files_copied=copied.files_copied,
                               bytes_copied=copied.bytes_copied,
                               files_removed=copied.files_removed, seconds=seconds)

    def _return(self, sandbox: Sandbox, backup: Path | None = None) -> GoodStateResult:
        """Make the (stopped) data directory the kept clean state again."""
        started = time.perf_counter()
        root = Path(sandbox.root)
        good, data = root / GOOD_STATE_DIR, Path(sandbox.data_dir)
        if not good.is_dir():
            raise DrillError(ErrorCode.RECOVERY_FAILED,
                             f"no clean state was kept in {good}: cannot probe backward")
        if (root / KEPT_LIST).exists():
            if backup is None:
                raise DrillError(ErrorCode.RECOVERY_FAILED,
                                 f"the clean state kept in {good} lies on top of the base "
                                 "backup, which this request does not name")
            copied = return_layered(good, data, backup)
        else:
            copied = mirror(good, data)
        seconds = time.perf_counter() - started
        _log.info("back to the clean state", files=copied.files_copied,
                  bytes=copied.bytes_copied, removed=copied.files_removed,
                  seconds=round(seconds, 3))
        return GoodStateResult(full_copy=False, files_copied=copied.files_copied,
                               bytes_copied=copied.bytes_copied,
                               files_removed=copied.files_removed, seconds=seconds)


def _check_stop(target: ResolvedTarget, stop_reason: str | None, replay_lsn: str | None,
                expected_lsn: str | None) -> None:
    problems = []
    if not stop_matches(target, stop_reason):
        problems.append(f"the server said {stop_reason!r}")
    if expected_lsn is not None and replay_lsn != expected_lsn:
        problems.append(f"replay LSN {replay_lsn}, predicted {expected_lsn}")
    if problems:
        raise DrillError(ErrorCode.PREDICTION_MISMATCH,
                         f"a probe for {target.describe()} stopped elsewhere: "
                         + "; ".join(problems))


def expected_stop(commit_lsn: str) -> str:
    """pg_last_wal_replay_lsn() paused just before the commit record at `commit_lsn`."""
    return format_lsn(end_before(parse_lsn(commit_lsn)))


def await_pause_in_log(server: PostgresServer, log_from: int,
                       within_s: float = _LOG_WAIT_S) -> None:
    """Until the server's log says it paused at the target and takes read-only connections
    (or it stopped, or a short while passed): reading the log costs the server nothing, where
    each connection attempt is a backend forked. The replay's own wait then confirms it."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline and server.pid() is not None:
        said = server.log_since(log_from)
        if all(line in said for line in _PAUSED_LINES):
            return
        time.sleep(0.005)


def stop_for_restart(server: PostgresServer, database: str, user: str) -> None:
    """Take a restartpoint, then stop at once (a paused standby's fast shutdown waits out a
    one-second sleep). Nothing replay cannot redo is lost: the restart replays from the
    restartpoint just taken."""
    pid = server.pid()
    if pid is None:
        return
    try:
        with server.connect(database, user) as conn:
            conn.execute("CHECKPOINT")
    except psycopg.Error as exc:  # not consistent yet, or not allowed: replay redoes more
        _log.info("no restartpoint before stopping", error=str(exc).strip())
    try:
        os.kill(pid, signal.SIGQUIT)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + _STOP_TIMEOUT_S
    while server.pid() is not None:
        if time.monotonic() > deadline:
            server.stop("immediate")
            break
        time.sleep(0.005)
