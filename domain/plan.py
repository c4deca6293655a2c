"""The drill plan: which backup, and exactly where recovery will stop, decided before restore.

`plan_recovery` walks the candidate backups newest first and keeps the first one from which the
target is reachable: a prediction can rule a backup out (the stop lies before its consistency
point, or the xid/restore point is already inside it). `verify_prediction` holds PostgreSQL to
the prediction afterwards.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from pydantic import BaseModel, Field

from domain.catalog import BaseBackup, candidate_backups
from domain.commits import Prediction
from domain.errors import DrillError, ErrorCode
from domain.targets import ResolvedTarget

# Errors that say "this backup is too new for the target": an older one may still reach it.
_TOO_NEW = {ErrorCode.TARGET_BEFORE_EARLIEST_BACKUP, ErrorCode.UNKNOWN_XID,
            ErrorCode.UNKNOWN_RESTORE_POINT}


class SkippedBackup(BaseModel):
    backup_id: str
    code: str
    reason: str


class DrillPlan(BaseModel):
    backup: BaseBackup
    predicted: Prediction
    skipped: list[SkippedBackup] = Field(default_factory=list)


def plan_recovery(
    backups: list[BaseBackup], target: ResolvedTarget,
    predict: Callable[[BaseBackup], Prediction],
) -> DrillPlan:
    skipped: list[SkippedBackup] = []
    last_error: DrillError | None = None
    for backup in candidate_backups(backups, target):
        try:
            return DrillPlan(backup=backup, predicted=predict(backup), skipped=skipped)
        except DrillError as error:
            if error.code not in _TOO_NEW:
                raise
            skipped.append(SkippedBackup(backup_id=backup.id, code=error.code,
                                         reason=error.message))
            last_error = error
    assert last_error is not None  # candidate_backups raises when there is none
    raise last_error


def verify_prediction(predicted: Prediction, replay_lsn: str | None,
                      last_xact_time: datetime | None) -> DrillError | None:
    """PREDICTION_MISMATCH when PostgreSQL stopped anywhere but where the WAL said it would."""
    differences = []
    if predicted.replay_lsn is not None and predicted.replay_lsn != replay_lsn:
        differences.append(f"replay LSN {replay_lsn}, predicted {predicted.replay_lsn}")
    if predicted.last_xact_replay_time != last_xact_time:
        differences.append(f"last transaction time {last_xact_time}, predicted "
                           f"{predicted.last_xact_replay_time}")
    if not differences:
        return None
    return DrillError(ErrorCode.PREDICTION_MISMATCH,
                      "PostgreSQL stopped elsewhere than predicted: " + "; ".join(differences))
