"""Finished reports as the workflow writes them, for the ledger and report-page tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from domain.catalog import BaseBackup
from domain.plan import DrillPlan, FallbackUsed, RestorableWindow
from domain.prediction import CommitRef, Prediction, StopPoint
from domain.recovery import RecoveryReport
from domain.report import CheckResult, DrillReport, Metrics, Recovered
from domain.stages import Stage, StageSpan
from domain.targets import ResolvedTarget

T0 = datetime(2026, 11, 1, 2, 30, tzinfo=UTC)
DRILL_STAGES = [Stage.RESOLVE, Stage.PLAN, Stage.PROVISION, Stage.RESTORE, Stage.REPLAY,
                Stage.CHECKS, Stage.TEARDOWN]


def hours(n: float) -> datetime:
    return T0 + timedelta(hours=n)


def backup(stop: datetime, backup_id: str = "nightly") -> BaseBackup:
    return BaseBackup(id=backup_id, path=f"/backups/{backup_id}", timeline=1,
                      start_lsn="0/2000028", stop_lsn="0/2000100", start_time=stop,
                      stop_time=stop, size_bytes=47_800_000, has_manifest=True)


def commit(xid: int, at: datetime, lsn: str = "0/3028E30") -> CommitRef:
    return CommitRef(xid=xid, lsn=lsn, commit_time=at)


def fallback_to_xid_731() -> FallbackUsed:
    """last_consistent_before_gap moved a target of xid 800 back to xid 731."""
    return FallbackUsed(
        step="last_consistent_before_gap", cause_code="WAL_GAP", cause="gap",
        requested=ResolvedTarget(mode="xid", xid=800),
        used=ResolvedTarget(mode="xid", xid=731, inclusive=True), seconds_given_up=42.5,
        transactions_given_up=69, transactions_given_up_at_least=69)


def stages(began: datetime, seconds: list[float], failed_last: bool = False) -> list[StageSpan]:
    spans, at = [], began
    for i, (stage, length) in enumerate(zip(DRILL_STAGES, seconds)):
        outcome = "failed" if failed_last and i == len(seconds) - 1 else "done"
        spans.append(StageSpan(stage=stage, started_at=at, seconds=length, outcome=outcome))
        at += timedelta(seconds=length)
    return spans


def report(drill_id: str, *, database: str = "shop", status: str = "verified",
           finished: datetime = T0, backup_stop: datetime | None = None,
           last_commit: datetime | None = None, window: tuple[datetime, datetime] | None = None,
           time_to_verify: float | None = 40.0, data_lost: float | None = 0.1,
           fallback: FallbackUsed | None = None, recovery: bool = False) -> DrillReport:
    """A drill that restored `backup_stop`'s backup and recovered to `last_commit`."""
    backup_stop = backup_stop or finished - timedelta(hours=2)
    last_commit = last_commit or finished - timedelta(hours=1)
    target = ResolvedTarget(mode="time", utc=last_commit + timedelta(seconds=data_lost or 0))
    kept = commit(731, last_commit)
    plan = DrillPlan(
        backup=backup(backup_stop),
        predicted=Prediction(stop=StopPoint(after=False, record_lsn="0/302DC90",
                                            record="commit of xid 732"),
                             last_kept=kept, first_dropped=commit(732, last_commit
                                                                  + timedelta(seconds=1)),
                             replay_lsn="0/302DC90", last_xact_replay_time=last_commit,
                             reason="the first commit after the target"),
        restore_bytes=47_800_000, replay_bytes=16_000_000, replay_commits=4100,
        window=RestorableWindow(earliest_lsn="0/2000100", earliest_time=window[0],
                                latest=commit(900, window[1])) if window else None,
        fallback=fallback)
    began = finished - timedelta(seconds=60)
    model = RecoveryReport if recovery else DrillReport
    extra = {"destination": "/srv/recovered"} if recovery else {}
    return model(
        drill_id=drill_id, status=status, database=database,
        target=fallback.used if fallback else target, base_backup=plan.backup, plan=plan,
        recovered=Recovered(replay_lsn="0/302DC90", last_commit_time=last_commit,
                            stop_reason="recovery stopping before commit of transaction 732",
                            in_recovery=True, matches_prediction=True),
        checks=[CheckResult(name="orders at target", passed=status != "failed",
                            observed=4100, expected=4100)],
        metrics=Metrics(bytes_restored=47_800_000, restore_mb_per_s=120.5,
                        wal_bytes_replayed=16_000_000, replay_mb_per_s=80.25,
                        transactions_replayed=4100, replay_transactions_per_s=20500.0,
                        checks_passed=1, checks_total=1, validation_pass_rate=1.0,
                        time_to_verify_seconds=time_to_verify, data_lost_seconds=data_lost),
        stages=stages(began, [0.01, 1.2, 0.5, 3.1, 2.2, 0.3, 0.4]),
        started_at=began, finished_at=finished, workflow_run_id=f"run-{drill_id}", **extra)
