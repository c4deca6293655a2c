from datetime import datetime, timezone

import pytest

from domain.commits import CommitRef, Prediction
from domain.errors import DrillError, ErrorCode
from domain.plan import plan_recovery, verify_prediction
from domain.targets import ResolvedTarget
from tests.unit.test_catalog import backup

T0 = datetime(2026, 1, 1, 12, 0, 0, 250_000, tzinfo=timezone.utc)
PREDICTED = Prediction(
    stop=None, last_kept=CommitRef(xid=740, lsn="0/3000100", commit_time=T0), first_dropped=None,
    replay_lsn="0/3000128", last_xact_replay_time=T0, reason="test",
)
XID = ResolvedTarget(mode="xid", xid=741)
BACKUPS = [backup("old", "0/1000100", 1), backup("mid", "0/2000100", 3), backup("new", "0/5000100", 5)]


def test_the_newest_backup_the_prediction_accepts_is_planned_and_the_skipped_are_explained():
    def predict(b):
        if b.id == "new":
            raise DrillError(ErrorCode.UNKNOWN_XID, "xid 741 ended before the backup's redo point")
        return PREDICTED

    plan = plan_recovery(BACKUPS, XID, predict)
    assert plan.backup.id == "mid" and plan.predicted == PREDICTED
    assert [(s.backup_id, s.code) for s in plan.skipped] == [("new", "UNKNOWN_XID")]


def test_when_no_backup_reaches_the_target_the_oldest_backups_reason_is_raised():
    def predict(b):
        raise DrillError(ErrorCode.TARGET_BEFORE_EARLIEST_BACKUP, f"before {b.id}")

    with pytest.raises(DrillError) as raised:
        plan_recovery(BACKUPS, XID, predict)
    assert raised.value.message == "before old"


def test_a_reason_no_older_backup_can_fix_is_raised_at_once():
    seen = []

    def predict(b):
        seen.append(b.id)
        raise DrillError(ErrorCode.XID_ABORTED, "aborted")

    with pytest.raises(DrillError) as raised:
        plan_recovery(BACKUPS, XID, predict)
    assert raised.value.code == ErrorCode.XID_ABORTED and seen == ["new"]


def test_a_recovery_where_predicted_is_verified():
    assert verify_prediction(PREDICTED, "0/3000128", T0) is None


def test_any_difference_from_the_prediction_is_prediction_mismatch():
    error = verify_prediction(PREDICTED, "0/3000200", T0)
    assert error.code == ErrorCode.PREDICTION_MISMATCH
    assert "0/3000200" in error.message and "0/3000128" in error.message


def test_latest_has_no_predicted_lsn_but_its_last_transaction_is_still_checked():
    latest = PREDICTED.model_copy(update={"replay_lsn": None})
    assert verify_prediction(latest, "0/9000000", T0) is None
    assert verify_prediction(latest, "0/9000000", None)
