from datetime import datetime, timedelta, timezone

import pytest

from domain.prediction import CommitRef, Prediction
from domain.timelines import TimelineHistory, TimelineSwitch
from domain.wal_records import WalEvent
from domain.continuity import WalBreak, diverged, first_break, require_timeline
from domain.errors import DrillError, ErrorCode
from domain.plan import (
    DrillPlan,
    PlanOptions,
    check_budget,
    estimate_seconds,
    plan_with_fallback,
    verify_prediction,
)
from domain.targets import ResolvedTarget
from tests.unit.test_catalog import backup

SEG = 16 * 1024 * 1024
T0 = datetime(2026, 1, 1, 12, 0, 0, 250_000, tzinfo=timezone.utc)
XID = ResolvedTarget(mode="xid", xid=741)
BACKUPS = [backup("old", "0/1000100", 1), backup("mid", "0/2000100", 3), backup("new", "0/5000100", 5)]


def prediction(lsn: str = "0/3000128", at: datetime = T0, xid: int = 740) -> Prediction:
    return Prediction(stop=None, last_kept=CommitRef(xid=xid, lsn=lsn, commit_time=at),
                      first_dropped=None, replay_lsn=lsn, last_xact_replay_time=at, reason="t")


class FakeArchive:
    """An ArchiveView whose answers each test sets: (backup id, target mode) -> outcome."""

    def __init__(self, outcomes=None, breaks=None, corrupt=(), commits=0, elsewhere=()):
        self.outcomes, self.breaks, self.corrupt, self.commits = outcomes or {}, breaks or {}, corrupt, commits
        self.elsewhere = elsewhere
        self.predicted = []

    def wal_break(self, b):
        return self.breaks.get(b.id)

    def predict(self, b, target, before):
        self.predicted.append((b.id, target.mode, before is not None))
        outcome = self.outcomes.get((b.id, target.mode, target.xid),
                                    self.outcomes.get((b.id, target.mode), prediction()))
        if isinstance(outcome, DrillError):
            raise outcome
        return outcome

    def verify(self, b):
        return DrillError(ErrorCode.BACKUP_CORRUPT, f"{b.id} bad") if b.id in self.corrupt else None

    def commits_between(self, b, after_lsn, through_lsn):
        return self.commits

    def off_path(self, b):
        return DrillError(ErrorCode.TIMELINE_DIVERGED, f"{b.id} elsewhere") if b.id in self.elsewhere else None


def gap(segment="000000010000000000000004", lsn="0/4000000"):
    return WalBreak(code="WAL_GAP", segment=segment, lsn=lsn, detail="is missing from the archive")


def test_the_newest_backup_the_prediction_accepts_is_planned_and_the_skipped_are_explained():
    archive = FakeArchive({("new", "xid"): DrillError(ErrorCode.UNKNOWN_XID, "inside the backup")})
    plan = plan_with_fallback(BACKUPS, XID, archive)
    assert plan.backup.id == "mid" and plan.predicted == prediction()
    assert [(s.backup_id, s.code) for s in plan.skipped] == [("new", "UNKNOWN_XID")]
    assert plan.replay_bytes == 0x3000128 - 0x1000028 and plan.restore_bytes == 1


def test_when_no_backup_reaches_the_target_the_oldest_backups_reason_is_raised():
    archive = FakeArchive({(b.id, "xid"): DrillError(ErrorCode.TARGET_BEFORE_EARLIEST_BACKUP,
                                                     f"before {b.id}") for b in BACKUPS})
    with pytest.raises(DrillError) as raised:
        plan_with_fallback(BACKUPS, XID, archive)
    assert raised.value.message == "before old"


def test_a_reason_no_older_backup_can_fix_is_raised_at_once():
    archive = FakeArchive({(b.id, "xid"): DrillError(ErrorCode.XID_ABORTED, "aborted") for b in BACKUPS})
    with pytest.raises(DrillError) as raised:
        plan_with_fallback(BACKUPS, XID, archive)
    assert raised.value.code == ErrorCode.XID_ABORTED and archive.predicted == [("new", "xid", False)]


def test_a_target_beyond_a_gap_is_refused_naming_the_missing_segment():
    archive = FakeArchive({("new", "xid"): DrillError(ErrorCode.TARGET_BEYOND_ARCHIVE, "no xid")},
                          breaks={"new": gap("000000010000000000000009", "0/9000000")})
    with pytest.raises(DrillError) as raised:
        plan_with_fallback(BACKUPS, XID, archive)
    assert raised.value.code == ErrorCode.WAL_GAP
    assert "000000010000000000000009" in raised.value.message
    assert archive.predicted == [("new", "xid", True)]  # predicted on the WAL before the gap


def test_an_lsn_target_past_the_gap_is_refused_too():
    archive = FakeArchive({("new", "lsn"): prediction("0/9000200")},
                          breaks={"new": gap("000000010000000000000009", "0/9000000")})
    with pytest.raises(DrillError) as raised:
        plan_with_fallback(BACKUPS, ResolvedTarget(mode="lsn", lsn="0/9000100"), archive)
    assert raised.value.code == ErrorCode.WAL_GAP


def test_a_gap_before_a_backups_consistency_rules_out_that_backup_not_older_ones():
    archive = FakeArchive(breaks={"new": gap("000000010000000000000005", "0/5000000")})
    plan = plan_with_fallback(BACKUPS, XID, archive)
    assert plan.backup.id == "mid"
    assert [(s.backup_id, s.code) for s in plan.skipped] == [("new", "WAL_GAP")]
    assert "cannot even become consistent" in plan.skipped[0].reason
    every = FakeArchive(breaks={b.id: gap("000000010000000000000000", "0/0") for b in BACKUPS})
    with pytest.raises(DrillError) as raised:
        plan_with_fallback(BACKUPS, XID, every)
    assert raised.value.code == ErrorCode.WAL_GAP and "backup old" in raised.value.message


def test_a_corrupt_backup_is_refused_unless_earlier_backup_is_in_the_chain():
    archive = FakeArchive(corrupt={"new"})
    with pytest.raises(DrillError) as raised:
        plan_with_fallback(BACKUPS, XID, archive)
    assert raised.value.code == ErrorCode.BACKUP_CORRUPT
    plan = plan_with_fallback(BACKUPS, XID, archive, PlanOptions(fallback=["earlier_backup"]))
    assert plan.backup.id == "mid"
    assert plan.fallback.step == "earlier_backup" and plan.fallback.skipped_backups == ["new"]
    assert plan.fallback.cause_code == "BACKUP_CORRUPT" and plan.fallback.used == XID


def test_last_consistent_before_gap_moves_the_target_and_counts_the_cost():
    kept_at, wanted_at = T0, T0 + timedelta(seconds=42)
    target = ResolvedTarget(mode="time", utc=T0 + timedelta(minutes=5))
    archive = FakeArchive(
        {("new", "time"): DrillError(ErrorCode.TARGET_BEYOND_ARCHIVE, "no commit"),
         ("new", "latest"): prediction("0/8FFFF00", kept_at, 900),
         ("new", "xid"): prediction("0/8FFFF00", kept_at, 900)},
        breaks={"new": gap("000000010000000000000009", "0/9000000")}, commits=17)
    archive.outcomes[("new", "time")] = DrillError(ErrorCode.TARGET_BEYOND_ARCHIVE, "no commit")
    options = PlanOptions(fallback=["earlier_backup", "last_consistent_before_gap"])
    # predict(target, before=None), ignoring the gap, says what was wanted:
    original_predict = archive.predict

    def predict(b, t, before):
        if t.mode == "time" and before is None:
            return prediction("0/A000000", wanted_at, 950)
        return original_predict(b, t, before)

    archive.predict = predict
    plan = plan_with_fallback(BACKUPS, target, archive, options)
    used = plan.fallback.used
    assert (used.mode, used.xid, used.inclusive) == ("xid", 900, True)
    assert plan.fallback.step == "last_consistent_before_gap" and plan.fallback.cause_code == "WAL_GAP"
    assert plan.fallback.seconds_given_up == 42.0
    # The wanted commit lies past the gap: what the gap held cannot be counted, only a floor.
    assert plan.fallback.transactions_given_up is None
    assert plan.fallback.transactions_given_up_at_least == 17


def test_last_consistent_never_uses_a_backup_that_already_holds_the_target():
    # xid 741 lies after the gap and inside `new`; the fallback must not replay `new`'s WAL,
    # which would carry the recovery past the target.
    archive = FakeArchive(
        {("new", "xid"): DrillError(ErrorCode.UNKNOWN_XID, "inside the backup"),
         ("mid", "xid", 741): DrillError(ErrorCode.TARGET_BEYOND_ARCHIVE, "past the gap"),
         ("new", "latest"): prediction("0/9100000", T0, 999),
         ("mid", "latest"): prediction("0/3000128", T0, 740)},
        breaks={"mid": gap("000000010000000000000004", "0/4000000")})
    plan = plan_with_fallback(BACKUPS, XID, archive,
                              PlanOptions(fallback=["last_consistent_before_gap"]))
    assert plan.backup.id == "mid" and plan.fallback.used.xid == 740


def test_a_backup_on_another_timeline_branch_is_skipped_for_an_older_one():
    plan = plan_with_fallback(BACKUPS, XID, FakeArchive(elsewhere={"new"}))
    assert plan.backup.id == "mid"
    assert [(s.backup_id, s.code) for s in plan.skipped] == [("new", "TIMELINE_DIVERGED")]


def test_fallback_steps_only_mend_what_they_can():
    archive = FakeArchive({(b.id, "xid"): DrillError(ErrorCode.XID_ABORTED, "x") for b in BACKUPS})
    with pytest.raises(DrillError) as raised:
        plan_with_fallback(BACKUPS, XID, archive,
                           PlanOptions(fallback=["earlier_backup", "last_consistent_before_gap"]))
    assert raised.value.code == ErrorCode.XID_ABORTED


def test_estimates_and_budgets():
    plan = DrillPlan(backup=BACKUPS[0], predicted=prediction(), restore_bytes=100_000_000,
                     replay_bytes=40_000_000)
    plan.estimate_seconds = estimate_seconds(plan, restore_mb_per_s=50, replay_mb_per_s=20)
    assert plan.estimate_seconds == 4.0
    check_budget(plan, 4.0)
    check_budget(plan, None)
    with pytest.raises(DrillError) as raised:
        check_budget(plan, 3.5)
    assert raised.value.code == ErrorCode.OVER_BUDGET and "4s" in raised.value.message


# --- continuity ----------------------------------------------------------------------------

TL2 = TimelineHistory(timeline=2, switches=[TimelineSwitch(parent=1, switch_lsn="0/5000060", reason="")])


def test_first_break_finds_the_first_missing_segment_and_ignores_the_archive_end():
    present = {(1, n) for n in (2, 3, 5, 6)}
    found = first_break(TimelineHistory(timeline=1), "0/2000028", present, {})
    assert (found.code, found.segment, found.lsn) == ("WAL_GAP", "000000010000000000000004", "0/4000000")
    assert first_break(TimelineHistory(timeline=1), "0/5000028", present, {}) is None


def test_first_break_reports_a_corrupt_segment_recovery_would_read():
    present = {(1, n) for n in (2, 3, 4)}
    found = first_break(TimelineHistory(timeline=1), "0/2000028", present,
                        {(1, 3): ("0/30076B8", "bad crc")})
    # Recovery replays every good record before the damaged one: the break is that record.
    assert (found.code, found.segment, found.lsn) == ("WAL_CORRUPT", "000000010000000000000003",
                                                       "0/30076B8")
    assert "bad crc" in found.error("x").message


def test_the_old_timelines_wal_after_the_switch_is_not_a_gap_on_the_new_one():
    present = {(1, 2), (1, 3), (1, 4), (1, 5), (1, 6), (1, 7), (2, 5)}
    assert first_break(TL2, "0/2000028", present, {}) is None


def test_first_break_follows_the_timeline_path_like_recovery():
    # Segment 5 holds the switch: recovery reads timeline 2's copy; 6 and on are timeline 2's.
    present = {(1, 2), (1, 3), (1, 4), (1, 5), (1, 6), (2, 5), (2, 6)}
    assert first_break(TL2, "0/2000028", present, {}) is None
    found = first_break(TL2, "0/2000028", present | {(1, 7), (2, 8)}, {})
    assert found.segment == "000000020000000000000007"  # timeline 1's 7 is not on the path


def test_a_numbered_timeline_must_exist():
    require_timeline("latest", {}, set())
    require_timeline("2", {2: TL2}, {(1, 1)})
    require_timeline("1", {}, {(1, 1)})
    with pytest.raises(DrillError) as raised:
        require_timeline("3", {2: TL2}, {(1, 1), (2, 5)})
    assert raised.value.code == ErrorCode.TIMELINE_NOT_FOUND and "[1, 2]" in raised.value.message


def event(tl, lsn, xid, kind="commit", name=None, segment="s"):
    start = int(lsn.split("/")[1], 16)
    return WalEvent(kind=kind, timeline=tl, start_lsn=lsn, end_lsn=f"0/{start + 40:X}", xid=xid,
                    timestamp=T0, name=name, segment=segment)


def test_a_target_only_on_another_branch_is_timeline_diverged():
    events = [event(1, "0/5000100", 900), event(1, "0/6000100", 901), event(2, "0/6000200", 950)]
    error = diverged(events, TL2, ResolvedTarget(mode="xid", xid=901))
    assert error.code == ErrorCode.TIMELINE_DIVERGED and "timeline 1 at 0/6000100" in error.message
    assert diverged(events, TL2, ResolvedTarget(mode="xid", xid=950)) is None
    assert diverged(events, TL2, ResolvedTarget(mode="xid", xid=12345)) is None


# --- after replay --------------------------------------------------------------------------

def test_a_recovery_where_predicted_is_verified():
    assert verify_prediction(prediction(), "0/3000128", T0) is None


def test_any_difference_from_the_prediction_is_prediction_mismatch():
    error = verify_prediction(prediction(), "0/3000200", T0)
    assert error.code == ErrorCode.PREDICTION_MISMATCH
    assert "0/3000200" in error.message and "0/3000128" in error.message


def test_a_server_reopened_after_shutdown_is_held_to_its_position_only():
    assert verify_prediction(prediction(), "0/3000128", None, reopened=True) is None
    assert verify_prediction(prediction(), "0/3000200", T0, reopened=True).code == "PREDICTION_MISMATCH"


def test_latest_has_no_predicted_lsn_but_its_last_transaction_is_still_checked():
    latest = prediction().model_copy(update={"replay_lsn": None})
    assert verify_prediction(latest, "0/9000000", T0) is None
    assert verify_prediction(latest, "0/9000000", None)
