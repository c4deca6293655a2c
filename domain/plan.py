"""The drill plan: which backup, and exactly where recovery will stop, decided before restore.

`plan_recovery` walks the candidate backups newest first and keeps the first one from which the
target is reachable. The archive is a port (`ArchiveView`) so the rules stay pure: it reports
the first WAL break after a backup, predicts the stop on the WAL before that break, and
verifies backups. `verify_prediction` holds PostgreSQL to the prediction afterwards.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal, Protocol

from pydantic import BaseModel, Field

from domain.catalog import BaseBackup, candidate_backups
from domain.continuity import WalBreak
from domain.errors import DrillError, ErrorCode
from domain.lsn import format_lsn, parse_lsn
from domain.prediction import CommitRef, Prediction
from domain.targets import ResolvedTarget

# Errors that say "this backup is too new for the target": an older one may still reach it.
_TOO_NEW = {ErrorCode.TARGET_BEFORE_EARLIEST_BACKUP, ErrorCode.UNKNOWN_XID,
            ErrorCode.UNKNOWN_RESTORE_POINT}
LATEST = ResolvedTarget(mode="latest")


class ArchiveView(Protocol):
    def wal_break(self, backup: BaseBackup) -> WalBreak | None: ...

    def predict(self, backup: BaseBackup, target: ResolvedTarget,
                before: WalBreak | None) -> Prediction: ...

    def verify(self, backup: BaseBackup) -> DrillError | None: ...

    def off_path(self, backup: BaseBackup) -> DrillError | None: ...

    def commits_between(self, backup: BaseBackup, after_lsn: str,
                        through_lsn: str | None) -> int: ...


class SkippedBackup(BaseModel):
    backup_id: str
    code: str
    reason: str


class RestorableWindow(BaseModel):
    """From the oldest backup's consistency point to the last commit before the first break."""

    earliest_lsn: str
    earliest_time: datetime | None
    latest: CommitRef | None


class FallbackUsed(BaseModel):
    """What the fallback chain changed, why, and what it cost."""

    step: str
    cause_code: str
    cause: str
    requested: ResolvedTarget
    used: ResolvedTarget
    skipped_backups: list[str] = Field(default_factory=list)
    seconds_given_up: float | None = None
    transactions_given_up: int | None = None  # None: some lie in WAL that cannot be read
    transactions_given_up_at_least: int | None = None


class DrillPlan(BaseModel):
    backup: BaseBackup
    predicted: Prediction
    skipped: list[SkippedBackup] = Field(default_factory=list)
    wal_break: WalBreak | None = None  # where this backup's WAL stops being readable
    restore_bytes: int = 0
    replay_bytes: int | None = None
    replay_commits: int | None = None  # commits replayed from the redo point to the stop
    window: RestorableWindow | None = None
    estimate_seconds: float | None = None
    fallback: FallbackUsed | None = None


AutomaticStep = Literal["earlier_backup", "last_consistent_before_gap"]
_UNREACHABLE = {ErrorCode.WAL_GAP, ErrorCode.WAL_CORRUPT, ErrorCode.TARGET_BEYOND_ARCHIVE}


class PlanOptions(BaseModel):
    verify_backup: bool = True
    skip_corrupt_backups: bool = False
    fallback: list[AutomaticStep] = Field(default_factory=list)


def _skippable(error: DrillError, wal_break: WalBreak | None, backup: BaseBackup,
               options: PlanOptions) -> bool:
    """Whether an older backup may do what this one cannot."""
    if error.code in _TOO_NEW:
        return True
    if error.code == ErrorCode.BACKUP_CORRUPT:
        return options.skip_corrupt_backups
    inside = wal_break is not None and parse_lsn(wal_break.lsn) < parse_lsn(backup.stop_lsn)
    return inside and error.code in (ErrorCode.WAL_GAP, ErrorCode.WAL_CORRUPT)


def _predict_or_explain(archive: ArchiveView, backup: BaseBackup, target: ResolvedTarget,
                        wal_break: WalBreak | None, stop_at_break: bool = False) -> Prediction:
    beyond = None if wal_break is None else wal_break.error(
        f"recovery from backup {backup.id} ends there, before {target.describe()}")
    if target.mode == "latest" and wal_break is not None and wal_break.code == "WAL_CORRUPT" \
            and not stop_at_break:
        # PostgreSQL would replay up to the damaged record, call that the end of the archive
        # and promote: everything archived after it silently lost. Only the fallback chain
        # (last_consistent_before_gap, which says what it gives up) may settle for that.
        raise wal_break.error(
            f"recovery from backup {backup.id} to the latest point would stop there "
            "(PostgreSQL takes the damaged record for the end of the WAL and promotes), "
            "giving up everything archived after it")
    try:
        predicted = archive.predict(backup, target, wal_break)
    except DrillError as error:
        # A target beyond a break is unreachable because of the break: name the segment.
        if error.code == ErrorCode.TARGET_BEYOND_ARCHIVE and beyond is not None:
            raise beyond from None
        # An xid or restore point that exists only past the break: the same.
        if error.code in (ErrorCode.UNKNOWN_XID, ErrorCode.UNKNOWN_RESTORE_POINT) \
                and beyond is not None and _named_past_break(archive, backup, target):
            raise beyond from None
        raise
    # An LSN target can name a record after the break: still out of reach.
    if beyond is not None and predicted.replay_lsn is not None \
            and parse_lsn(predicted.replay_lsn) > parse_lsn(wal_break.lsn):
        raise beyond
    return predicted


def _named_past_break(archive: ArchiveView, backup: BaseBackup, target: ResolvedTarget) -> bool:
    try:
        archive.predict(backup, target, None)
    except DrillError:
        return False
    return True


def plan_recovery(backups: list[BaseBackup], target: ResolvedTarget, archive: ArchiveView,
                  options: PlanOptions = PlanOptions(), stop_at_break: bool = False
                  ) -> DrillPlan:
    """`stop_at_break`: `latest` may end at damaged WAL (the fallback's own look for the last
    consistent point); otherwise damaged WAL before the archive's end refuses `latest`."""
    skipped: list[SkippedBackup] = []
    last_error: DrillError | None = None
    for backup in candidate_backups(backups, target):
        if (elsewhere := archive.off_path(backup)) is not None:
            skipped.append(SkippedBackup(backup_id=backup.id, code=elsewhere.code,
                                         reason=elsewhere.message))
            last_error = elsewhere
            continue
        wal_break = archive.wal_break(backup)
        try:
            if wal_break is not None and parse_lsn(wal_break.lsn) < parse_lsn(backup.stop_lsn):
                # Its own WAL is broken; an older backup may still reach the WAL before.
                raise wal_break.error(f"backup {backup.id} cannot even become consistent")
            predicted = _predict_or_explain(archive, backup, target, wal_break, stop_at_break)
            if options.verify_backup and (corrupt := archive.verify(backup)) is not None:
                raise corrupt
        except DrillError as error:
            if not _skippable(error, wal_break, backup, options):
                raise
            skipped.append(SkippedBackup(backup_id=backup.id, code=error.code,
                                         reason=error.message))
            last_error = error
            continue
        return DrillPlan(
            backup=backup, predicted=predicted, skipped=skipped, wal_break=wal_break,
            restore_bytes=backup.size_bytes,
            replay_bytes=(parse_lsn(predicted.replay_lsn) - parse_lsn(backup.start_lsn)
                          if predicted.replay_lsn else None),
        )
    assert last_error is not None  # candidate_backups raises when there is none
    raise last_error


def _earlier_backup(backups, target, archive, options, failure) -> DrillPlan:
    plan = plan_recovery(backups, target, archive,
                         options.model_copy(update={"skip_corrupt_backups": True}))
    skipped = [s.backup_id for s in plan.skipped if s.code == ErrorCode.BACKUP_CORRUPT]
    plan.fallback = FallbackUsed(step="earlier_backup", cause_code=failure.code,
                                 cause=failure.message, requested=target, used=target,
                                 skipped_backups=skipped)
    return plan


def _wanted(archive: ArchiveView, backup: BaseBackup, target: ResolvedTarget) -> CommitRef | None:
    """What the requested target would keep from `backup`, were the WAL whole."""
    return archive.predict(backup, target, None).last_kept


def _too_new(archive: ArchiveView, backup: BaseBackup, target: ResolvedTarget) -> bool:
    try:
        _wanted(archive, backup, target)
    except DrillError as error:
        return error.code in _TOO_NEW
    return False


def _last_consistent(backups, target, archive, options, failure) -> DrillPlan:
    # Only backups from before the target: a newer one would carry the recovery past it.
    before = [b for b in candidate_backups(backups, target) if not _too_new(archive, b, target)]
    if not before:
        raise failure
    latest = plan_recovery(before, LATEST.model_copy(update={"timeline": target.timeline}),
                           archive, options, stop_at_break=True)
    used = last_consistent_target(latest, target)
    plan = plan_recovery(before, used, archive, options)
    kept = plan.predicted.last_kept
    assert kept is not None  # last_consistent_target found it
    try:
        wanted = _wanted(archive, plan.backup, target)
    except DrillError:
        wanted = None  # beyond all the archive holds
    if target.mode == "latest" and wanted is not None \
            and parse_lsn(wanted.lsn) <= parse_lsn(kept.lsn):
        # `latest` wants the end of the archive, and no readable commit lies past the break:
        # what the unreadable WAL held, and when, is unknown.
        wanted, seconds = None, None
    elif wanted is not None:
        seconds = (wanted.commit_time - kept.commit_time).total_seconds()
    else:
        seconds = (target.utc - kept.commit_time).total_seconds() if target.utc else None
    counted = archive.commits_between(plan.backup, kept.lsn, wanted.lsn if wanted else None)
    # Commits inside the unreadable WAL cannot be counted: past the break, only a floor
    # (always so for `latest`, which wants everything up to the archive's end).
    exact = target.mode != "latest" and wanted is not None and plan.wal_break is not None \
        and parse_lsn(wanted.lsn) < parse_lsn(plan.wal_break.lsn)
    plan.fallback = FallbackUsed(
        step="last_consistent_before_gap", cause_code=failure.code, cause=failure.message,
        requested=target, used=used, seconds_given_up=seconds,
        transactions_given_up=counted if exact else None,
        transactions_given_up_at_least=counted,
    )
    return plan


_STEPS = {"earlier_backup": ({ErrorCode.BACKUP_CORRUPT}, _earlier_backup),
          "last_consistent_before_gap": (_UNREACHABLE, _last_consistent)}


def plan_with_fallback(backups: list[BaseBackup], target: ResolvedTarget,
                       archive: ArchiveView, options: PlanOptions = PlanOptions()) -> DrillPlan:
    """plan_recovery, then the spec's automatic fallback steps in order, each only for the
    failures it can mend; with none that applies, the original refusal stands."""
    try:
        return plan_recovery(backups, target, archive, options)
    except DrillError as failure:
        for step in options.fallback:
            mends, fallback = _STEPS[step]
            if failure.code in mends:
                return fallback(backups, target, archive, options, failure)
        raise


def restorable_window(backups: list[BaseBackup], archive: ArchiveView) -> RestorableWindow:
    oldest = min(backups, key=lambda b: parse_lsn(b.stop_lsn))
    latest = archive.predict(oldest, LATEST, archive.wal_break(oldest)).last_kept
    return RestorableWindow(earliest_lsn=oldest.stop_lsn, earliest_time=oldest.stop_time,
                            latest=latest)


def replayed_commits(plan: DrillPlan, archive: ArchiveView) -> int:
    """Commits PostgreSQL replays from the backup's redo point through the last one kept: what
    the report's transactions per second divides. A commit at the redo point itself counts."""
    kept = plan.predicted.last_kept
    if kept is None:
        return 0
    before_redo = format_lsn(parse_lsn(plan.backup.start_lsn) - 1)
    return archive.commits_between(plan.backup, before_redo, kept.lsn)


def last_consistent_target(plan_for_latest: DrillPlan, requested: ResolvedTarget
                           ) -> ResolvedTarget:
    """The last_consistent_before_gap fallback: stop right after the last commit that can be
    replayed, keeping the requested action. An inclusive xid target, not an LSN one: PostgreSQL
    stamps pg_last_xact_replay_timestamp() and names the commit in its stop line only then."""
    last = plan_for_latest.predicted.last_kept
    if last is None:
        raise DrillError(ErrorCode.TARGET_BEYOND_ARCHIVE,
                         "no commit can be replayed from any backup before the WAL breaks")
    return ResolvedTarget(mode="xid", xid=last.xid, inclusive=True, action=requested.action,
                          timeline=requested.timeline)


def estimate_seconds(plan: DrillPlan, restore_mb_per_s: float, replay_mb_per_s: float) -> float:
    replay = (plan.replay_bytes or 0) / 1e6 / replay_mb_per_s
    return round(plan.restore_bytes / 1e6 / restore_mb_per_s + replay, 1)


def check_budget(plan: DrillPlan, max_seconds: float | None) -> None:
    if max_seconds is not None and plan.estimate_seconds is not None \
            and plan.estimate_seconds > max_seconds:
        raise DrillError(ErrorCode.OVER_BUDGET,
                         f"the plan is estimated at {plan.estimate_seconds:g}s "
                         f"(restore {plan.restore_bytes / 1e6:.0f} MB, replay "
                         f"{(plan.replay_bytes or 0) / 1e6:.0f} MB), over the budget of "
                         f"{max_seconds:g}s")


def verify_prediction(predicted: Prediction, replay_lsn: str | None,
                      last_xact_time: datetime | None, reopened: bool = False) -> DrillError | None:
    """PREDICTION_MISMATCH when PostgreSQL stopped anywhere but where the WAL said it would.
    A server re-opened after shutting down at the target replayed only from its last
    restartpoint, so its last transaction time says nothing: only the position counts."""
    differences = []
    if predicted.replay_lsn is not None and predicted.replay_lsn != replay_lsn:
        differences.append(f"replay LSN {replay_lsn}, predicted {predicted.replay_lsn}")
    if not reopened and predicted.last_xact_replay_time != last_xact_time:
        differences.append(f"last transaction time {last_xact_time}, predicted "
                           f"{predicted.last_xact_replay_time}")
    if not differences:
        return None
    return DrillError(ErrorCode.PREDICTION_MISMATCH,
                      "PostgreSQL stopped elsewhere than predicted: " + "; ".join(differences))
