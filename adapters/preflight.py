"""Pre-flight: read the source's backups, bring the WAL index up to date, and decide the backup
and the exact stop, refusing with a typed error when the archive cannot get there. Reads
backups and archive; writes only the index cache, which lives outside both."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import cached_property
from pathlib import Path

from pydantic import BaseModel

from adapters.sources import BackupSources
from adapters.throughput_history import ThroughputHistory
from adapters.wal_archive import list_archive
from adapters.wal_index import IndexResult, WalIndex
from domain.catalog import BaseBackup, candidate_backups
from domain.continuity import WalBreak, diverged, first_break, require_timeline
from domain.errors import DrillError, ErrorCode
from domain.lsn import parse_lsn
from domain.plan import (
    DrillPlan,
    PlanOptions,
    RestorableWindow,
    check_budget,
    estimate_seconds,
    plan_with_fallback,
    replayed_commits,
    restorable_window,
)
from domain.prediction import Prediction
from domain.spec import BackupSource, DrillSpec
from domain.targets import ResolvedTarget
from domain.timelines import choose_timeline, on_timeline
from domain.wal_records import WalEvent

_MANIFESTS = ("backup_manifest", "backup.manifest")
# Until this machine has measured a drill: deliberately modest rates, so budgets err safe.
DEFAULT_RESTORE_MB_PER_S = 50.0
DEFAULT_REPLAY_MB_PER_S = 20.0


class PlanRequest(BaseModel):
    source: BackupSource
    target: ResolvedTarget
    options: PlanOptions = PlanOptions()
    budget_seconds: float | None = None

    @classmethod
    def for_spec(cls, spec: DrillSpec, target: ResolvedTarget) -> PlanRequest:
        return cls(
            source=spec.source, target=target,
            options=PlanOptions(verify_backup=spec.verify_backup,
                                fallback=spec.automatic_fallback()),
            budget_seconds=spec.budget.max_seconds if spec.budget else None,
        )


class PlanResult(BaseModel):
    plan: DrillPlan
    index: IndexResult
    seconds: float


class WindowResult(BaseModel):
    """The restorable window alone (what a synthetic target picks its instant from)."""

    window: RestorableWindow
    index: IndexResult
    seconds: float


class IndexedArchive:
    """The domain's ArchiveView over one indexed archive directory."""

    def __init__(self, index: WalIndex, archive: Path, indexed: IndexResult, timeline: str,
                 verify: Callable[[BaseBackup], DrillError | None]) -> None:
        self._index, self._archive, self.verify = index, archive, verify
        self._listing = list_archive(archive)
        self._timeline = timeline
        # A .partial segment is never fetched by restore_command under its plain name.
        self.present = {(s.timeline, s.segno) for s in self._listing.segments if not s.partial}
        self._corrupt = {(c.timeline, c.segno): (c.at_lsn, c.problem) for c in indexed.corrupt}

    def _history(self, backup: BaseBackup):
        return choose_timeline(self._timeline, backup.timeline, self._listing.histories)

    def histories(self):
        return self._listing.histories

    def wal_break(self, backup: BaseBackup) -> WalBreak | None:
        return first_break(self._history(backup), backup.start_lsn, self.present, self._corrupt)

    @cached_property
    def events(self) -> list[WalEvent]:
        """The archive's indexed events, read from the store once per plan."""
        return self._index.events(self._archive)

    def predict(self, backup: BaseBackup, target: ResolvedTarget,
                before: WalBreak | None) -> Prediction:
        until = None if before is None else parse_lsn(before.lsn)
        try:
            return self._index.predict(self._archive, target, backup, until, self.events,
                                       self._listing)
        except DrillError as error:
            if error.code in (ErrorCode.UNKNOWN_XID, ErrorCode.UNKNOWN_RESTORE_POINT):
                elsewhere = diverged(self.events, self._history(backup), target)
                raise elsewhere or error from None
            raise

    def off_path(self, backup: BaseBackup) -> DrillError | None:
        """A backup taken on another branch (say an unfenced old primary after a failover)
        cannot start recovery along this timeline path."""
        history = self._history(backup)
        leaves = history.span_end(backup.timeline)
        if backup.timeline in history.timelines and (
                leaves is None or parse_lsn(backup.stop_lsn) <= leaves):
            return None
        return DrillError(ErrorCode.TIMELINE_DIVERGED,
                          f"backup {backup.id} (timeline {backup.timeline}, ending at "
                          f"{backup.stop_lsn}) is not on the path of timeline {history.timeline}")

    def commits_between(self, backup: BaseBackup, after_lsn: str,
                        through_lsn: str | None) -> int:
        after, through = parse_lsn(after_lsn), through_lsn and parse_lsn(through_lsn)
        events = on_timeline(self.events, self._history(backup))
        return sum(1 for e in events if e.is_commit and e.start > after
                   and (through is None or e.start <= through))


def backup_fingerprint(backup: BaseBackup) -> str | None:
    """What a verification verdict holds for: the backup's manifest (pg_basebackup's
    backup_manifest, pgBackRest's backup.manifest) by its SHA-256, and its files by count,
    bytes and newest mtime, so that a file changed, added or removed since is verified again.
    None without a manifest (nothing to verify against, nothing cached)."""
    root = Path(backup.path)
    manifest = next((root / name for name in _MANIFESTS if (root / name).is_file()), None)
    if manifest is None:
        return None
    digest = hashlib.sha256(manifest.read_bytes()).hexdigest()
    files = size = newest = 0
    for directory, _, names in os.walk(root):
        for name in names:
            stat = os.lstat(os.path.join(directory, name))
            files, size, newest = files + 1, size + stat.st_size, max(newest, stat.st_mtime_ns)
    return f"{digest}:{files}:{size}:{newest}"


class Preflight:
    def __init__(self, sources: BackupSources, index: WalIndex,
                 throughput: ThroughputHistory) -> None:
        self._sources = sources
        self._index = index
        self._throughput = throughput

    def _verify(self, adapter, source: BackupSource, backup: BaseBackup) -> DrillError | None:
        """The source's verification of `backup`, once per manifest and file set: a pass is
        remembered in the WAL index's store (outside every backup repository), a failure is
        not (it is verified again, so a repaired backup or a passing retry counts)."""
        fingerprint = backup_fingerprint(backup)
        store = self._index.store
        if fingerprint is not None and (known := store.backup_verification(
                backup.path, fingerprint)) is not None and known[0]:
            return None
        verdict = adapter.verify(source, backup)
        if verdict is None and fingerprint is not None:
            store.record_backup_verification(backup.path, fingerprint, True)
        return verdict

    def _verify_early(self, early: ThreadPoolExecutor, adapter, source: BackupSource,
                      backups: list[BaseBackup], request: PlanRequest
                      ) -> Callable[[BaseBackup], DrillError | None]:
        """Verification of the backup the plan most likely picks (the newest that ended
        before the target) starts now, beside the indexing; any other is verified when asked."""
        if not request.options.verify_backup:
            return lambda backup: self._verify(adapter, source, backup)
        try:
            likely = candidate_backups(backups, request.target)[0]
        except DrillError:  # the plan refuses it, and says why
            return lambda backup: self._verify(adapter, source, backup)
        pending = early.submit(self._verify, adapter, source, likely)
        return lambda backup: pending.result() if backup is likely \
            else self._verify(adapter, source, backup)

    def plan(self, request: PlanRequest, on_progress=lambda _: None) -> PlanResult:
        started = time.perf_counter()
        source, adapter = request.source, self._sources.adapter(request.source)
        archive_dir = adapter.wal_directory(source)
        backups = adapter.backups(source)
        early = ThreadPoolExecutor(1, thread_name_prefix="verify")
        try:
            verify = self._verify_early(early, adapter, source, backups, request)
            indexed = self._index.index(archive_dir, on_progress)
            archive = IndexedArchive(self._index, archive_dir, indexed, request.target.timeline,
                                     verify)
            require_timeline(request.target.timeline, archive.histories(), archive.present)
            plan = plan_with_fallback(backups, request.target, archive, request.options)
        finally:
            # A refusal need not wait for a verification nobody asks for any more.
            early.shutdown(wait=False, cancel_futures=True)
        plan.window = restorable_window(backups, archive)
        plan.replay_commits = replayed_commits(plan, archive)
        rates = self._throughput.recent() or (
            DEFAULT_RESTORE_MB_PER_S, DEFAULT_REPLAY_MB_PER_S)
        plan.estimate_seconds = estimate_seconds(plan, *rates)
        check_budget(plan, request.budget_seconds)
        return PlanResult(plan=plan, index=indexed, seconds=time.perf_counter() - started)

    def window(self, request: PlanRequest, on_progress=lambda _: None) -> WindowResult:
        """The restorable window on the request's timeline: no target, no backup verified,
        no budget; the WAL index is brought up to date as for a plan."""
        started = time.perf_counter()
        source, adapter = request.source, self._sources.adapter(request.source)
        archive_dir = adapter.wal_directory(source)
        backups = adapter.backups(source)
        if not backups:
            raise DrillError(ErrorCode.NO_BASE_BACKUP, "the backup source holds no base backup")
        indexed = self._index.index(archive_dir, on_progress)
        archive = IndexedArchive(self._index, archive_dir, indexed, request.target.timeline,
                                 lambda backup: self._verify(adapter, source, backup))
        require_timeline(request.target.timeline, archive.histories(), archive.present)
        return WindowResult(window=restorable_window(backups, archive), index=indexed,
                            seconds=time.perf_counter() - started)
