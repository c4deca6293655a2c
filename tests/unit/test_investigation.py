"""domain.investigation on hand-built WAL events: windows, gaps, bursts, exact exclusions and
the safety-margin recommendations, with exact transaction and second counts."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from domain.timelines import TimelineHistory, TimelineSwitch
from domain.wal_records import WalEvent, WalRecord
from domain.errors import DrillError, ErrorCode
from domain.investigation import (
    BurstRule,
    RelFileLocator,
    exclude_xid,
    find_bursts,
    investigate,
    largest_gaps,
    parse_window,
    recommend,
    relation_scan_range,
    timeline_spans,
    transactions_touching,
)
from domain.lsn import format_lsn, parse_lsn

INCIDENT = datetime(2026, 11, 22, 4, 46, 30, 16509, tzinfo=timezone.utc)
FIRST_LSN = 0x3000028
RECORD = 0x40  # each hand-built event takes this much WAL


def wal(*spec: tuple) -> list[WalEvent]:
    """Events in WAL order from (xid, seconds after INCIDENT[, kind]) tuples."""
    events = []
    for n, (xid, seconds, *kind) in enumerate(spec):
        start = FIRST_LSN + n * RECORD
        events.append(WalEvent(
            kind=kind[0] if kind else "commit", timeline=1, start_lsn=format_lsn(start),
            end_lsn=format_lsn(start + 0x22), xid=xid,
            timestamp=INCIDENT + timedelta(seconds=seconds), segment="000000010000000000000003",
        ))
    return events


def lsn_of(events: list[WalEvent], xid: int) -> str:
    return next(e.start_lsn for e in events if e.xid == xid)


def seed_incident() -> list[WalEvent]:
    """The seed: a legitimate commit (xid 700), 115 ms later a job of 47 transactions
    (xids 701-747, 36 ms apart), then ordinary traffic again."""
    before = [(690, -20.0), (691, -9.5), (692, -4.0)]
    job = [(701 + n, 0.115 + n * 0.036) for n in range(47)]
    after = [(760, 4.0), (761, 4.4), (762, 9.0)]
    return wal(*before, (700, 0.0), *job, *after)


# --- window, gaps ----------------------------------------------------------------------------

def test_the_window_holds_the_commits_either_side_with_gaps_to_their_neighbours():
    events = wal((10, -7.0), (11, -2.0), (12, 0, "abort"), (13, 0.5), (14, 3.0), (15, 9.0))
    found = investigate(events, INCIDENT, timedelta(seconds=5))
    assert [(r.xid, r.gap_before_seconds, r.gap_after_seconds) for r in found.commits] == [
        (11, 5.0, 2.5), (13, 2.5, 2.5), (14, 2.5, 6.0)]
    assert found.commits[0].lsn == lsn_of(events, 11)
    assert found.window_seconds == 5.0


def test_largest_gaps_are_between_consecutive_commits_biggest_first():
    events = wal((1, 0.0), (2, 0.5), (3, 3.5), (4, 3.6), (5, 5.6))
    gaps = largest_gaps(events, 3)
    assert [(g.before.xid, g.after.xid, g.seconds) for g in gaps] == [
        (2, 3, 3.0), (4, 5, 2.0), (1, 2, 0.5)]


def test_a_window_can_be_written_in_seconds_minutes_or_hours():
    assert parse_window("30s") == timedelta(seconds=30)
    assert parse_window("5m") == timedelta(minutes=5)
    assert parse_window("1.5h") == timedelta(minutes=90)
    for bad in ("5", "0m", "-1m", "5 minutes", ""):
        with pytest.raises(DrillError) as refused:
            parse_window(bad)
        assert refused.value.code == ErrorCode.SPEC_INVALID


# --- bursts ----------------------------------------------------------------------------------

def test_the_seed_batch_job_is_one_burst_of_47_after_the_legitimate_commit():
    events = seed_incident()
    [burst] = find_bursts(events, events, BurstRule())
    assert burst.commits == 47 and burst.xids == list(range(701, 748))
    assert (burst.first.xid, burst.last.xid) == (701, 747)
    assert burst.previous.xid == 700
    assert burst.gap_before_seconds == pytest.approx(0.115, abs=1e-6)
    assert burst.seconds == pytest.approx(46 * 0.036, abs=1e-6)
    assert burst.pace_seconds == pytest.approx(0.036, abs=1e-6)


def test_fewer_commits_than_the_rule_or_slower_ones_are_no_burst():
    nine = wal(*[(100 + n, n * 0.1) for n in range(9)])
    assert find_bursts(nine, nine, BurstRule()) == []
    assert [b.commits for b in find_bursts(nine, nine, BurstRule(min_commits=9))] == [9]
    slow = wal(*[(100 + n, n * 0.25) for n in range(10)])  # 10 commits over 2.25 s
    assert find_bursts(slow, slow, BurstRule()) == []
    assert [b.commits for b in find_bursts(slow, slow, BurstRule(within_seconds=2.25))] == [10]


def test_two_jobs_apart_are_two_bursts():
    events = wal(*[(100 + n, n * 0.05) for n in range(12)],
                 *[(200 + n, 10 + n * 0.05) for n in range(15)])
    bursts = find_bursts(events, events, BurstRule())
    assert [(b.first.xid, b.commits) for b in bursts] == [(100, 12), (200, 15)]
    assert bursts[0].previous is None and bursts[1].previous.xid == 111


def test_a_burst_among_relation_commits_names_the_last_commit_of_any_transaction_before_it():
    events = seed_incident()
    job_only = [e for e in events if 701 <= e.xid <= 747]
    [burst] = find_bursts(job_only, events, BurstRule())
    assert (burst.first.xid, burst.previous.xid) == (701, 700)


# --- exact exclusion --------------------------------------------------------------------------

def test_excluding_a_transaction_targets_its_commit_record_exclusive():
    events = seed_incident()
    exclusion = exclude_xid(events, 701)
    assert exclusion.lsn_target.model_dump(exclude_none=True) == {
        "lsn": lsn_of(events, 701), "inclusive": False}
    assert exclusion.time_target.time == "2026-11-22 04:46:30.131509+00"
    assert exclusion.time_target_exact and exclusion.time_target_also_drops == []
    assert exclusion.same_microsecond == []
    assert exclusion.last_kept.xid == 700
    assert exclusion.gap_seconds == pytest.approx(0.115, abs=1e-6)


def test_a_commit_sharing_the_microsecond_earlier_in_the_wal_makes_only_the_lsn_exact():
    events = wal((1, -1.0), (2, 0.0), (3, 0.0), (4, 0.0), (5, 1.0))
    exclusion = exclude_xid(events, 3)
    assert not exclusion.time_target_exact
    assert exclusion.time_target_also_drops == [2]
    assert exclusion.same_microsecond == [2, 4]
    assert exclusion.last_kept.xid == 2
    assert exclusion.lsn_target.lsn == lsn_of(events, 3)
    assert "use recovery_target_lsn" in exclusion.advice


def test_ties_only_after_it_leave_the_time_target_exact_but_are_reported():
    events = wal((1, -1.0), (2, 0.0), (3, 0.0))
    exclusion = exclude_xid(events, 2)
    assert exclusion.time_target_exact and exclusion.same_microsecond == [3]
    assert "share this microsecond" in exclusion.advice


def test_an_earlier_wal_commit_with_a_later_timestamp_is_lost_by_the_time_target():
    # Commit timestamps are taken before the commit record is inserted: WAL order can differ.
    events = wal((1, 0.000002), (2, 0.000001))
    assert exclude_xid(events, 2).time_target_also_drops == [1]


def test_excluding_an_unknown_or_aborted_xid_is_refused():
    events = wal((1, 0.0), (2, 1.0, "abort"))
    with pytest.raises(DrillError) as unknown:
        exclude_xid(events, 99)
    assert unknown.value.code == ErrorCode.UNKNOWN_XID
    with pytest.raises(DrillError) as aborted:
        exclude_xid(events, 2)
    assert aborted.value.code == ErrorCode.XID_ABORTED


# --- recommendations --------------------------------------------------------------------------

def margin_events() -> list[WalEvent]:
    minutes = 60.0
    return wal((1, -20 * minutes), (2, -12 * minutes), (3, -6 * minutes), (4, -3 * minutes),
               (5, -45.0), (6, -20.0), (7, -5.0), (8, -0.1), (9, 0.0), (10, 1.0))


def test_each_safety_margin_gives_up_exactly_the_commits_between_it_and_the_incident():
    advice = recommend(margin_events(), INCIDENT)
    assert [(c.label, c.margin_seconds, c.transactions_given_up, c.seconds_given_up,
             c.last_kept and c.last_kept.xid, c.first_dropped.xid) for c in advice.margins] == [
        ("high-confidence timing from logs: minimum margin", 10, 2, 5.0, 6, 7),
        ("high-confidence timing from logs: recommended margin", 30, 3, 20.0, 5, 6),
        ("estimated from user reports: minimum margin", 120, 4, 45.0, 4, 5),
        ("estimated from user reports: recommended margin", 300, 5, 180.0, 3, 4),
        ("unknown timing, narrow corruption: minimum margin", 300, 5, 180.0, 3, 4),
        ("unknown timing, narrow corruption: recommended margin", 600, 6, 360.0, 2, 3),
        ("major incident, unclear scope: minimum margin", 900, 7, 720.0, 1, 2),
        ("major incident, unclear scope: recommended margin", 1800, 8, 1200.0, None, 1),
    ]
    assert advice.margins[0].target.model_dump(exclude_none=True) == {
        "time": "2026-11-22 04:46:20.016509+00", "inclusive": False}
    assert advice.margins[0].note is None
    assert "no commit before this target" in advice.margins[-1].note


def test_the_tightest_target_excludes_the_first_commit_at_the_incident_and_gives_up_nothing():
    events = margin_events()
    advice = recommend(events, INCIDENT)
    tightest = advice.tightest
    assert tightest.target.model_dump(exclude_none=True) == {
        "lsn": lsn_of(events, 9), "inclusive": False}
    assert tightest.same_as.time == "2026-11-22 04:46:30.016509+00"
    assert (tightest.last_kept.xid, tightest.first_dropped.xid) == (8, 9)
    assert (tightest.transactions_given_up, tightest.seconds_given_up) == (0, 0.0)
    assert advice.recommended == tightest and advice.before_burst is None


def test_an_incident_typed_late_still_recommends_cutting_off_the_burst():
    events = seed_incident()
    reported = INCIDENT + timedelta(seconds=1)  # a user noticed a second into the job
    advice = recommend(events, reported, find_bursts(events, events, BurstRule()))
    recommended = advice.recommended
    assert recommended == advice.before_burst
    assert recommended.target.lsn == lsn_of(events, 701)
    assert (recommended.last_kept.xid, recommended.first_dropped.xid) == (700, 701)
    # Job commits 701.. at 0.115 + n * 0.036 s: n = 0..24 are before the reported second.
    assert recommended.transactions_given_up == 25
    assert recommended.seconds_given_up == pytest.approx(1 - 0.115, abs=1e-6)
    assert advice.tightest.first_dropped.xid == 726 and advice.tightest.transactions_given_up == 0


def test_without_a_commit_at_or_after_the_incident_nothing_is_recommended():
    advice = recommend(wal((1, -30.0), (2, -20.0)), INCIDENT)
    assert advice.tightest is None and advice.recommended is None
    assert "no commit at or after the incident" in advice.why
    assert "replay the whole archive" in advice.margins[0].note


# --- relation filter --------------------------------------------------------------------------

def record(xid: int, start: int, desc: str = "UPDATE off 3", rmgr: str = "Heap") -> WalRecord:
    return WalRecord(rmgr=rmgr, start=start, end=start + 0x40, xid=xid, desc=desc)


def test_a_relation_names_its_storage_as_wal_block_references_do():
    locator = RelFileLocator.parse("1663/16384/16386")
    assert (locator.tablespace, locator.database, locator.relfilenode) == (1663, 16384, 16386)
    assert str(locator) == "1663/16384/16386"
    assert RelFileLocator.parse("public.orders") is None


def test_subtransaction_writes_count_for_their_top_level_transaction():
    events = wal((20, 0.0), (21, 0.1))
    commits = [record(20, parse_lsn(events[0].start_lsn), "COMMIT 2026-11-22 04:46:30.016509 "
                      "UTC; subxacts: 30 31", "Transaction")]
    touched = [record(31, 0x100), record(22, 0x140), record(0, 0x180, "PRUNE")]
    assert transactions_touching(touched, commits, events) == {20, 22}


def test_only_the_relation_transactions_are_shown_and_searched_for_bursts():
    events = seed_incident()
    found = investigate(events, INCIDENT, timedelta(minutes=5),
                        relation_xids={692, *range(701, 748)}, exclude=701)
    assert [r.xid for r in found.commits] == [692, *range(701, 748)]
    assert found.commits[0].gap_after_seconds == 4.0  # to xid 700, which is not shown
    assert [b.commits for b in found.bursts] == [47]
    assert found.exclusion.commit.xid == 701
    assert found.recommendations.recommended.last_kept.xid == 700


def test_the_relation_scan_reads_back_one_window_and_up_to_the_windows_last_commit():
    events = seed_incident()
    start, end = relation_scan_range(events, INCIDENT, timedelta(seconds=5))
    assert format_lsn(start) == lsn_of(events, 691)  # -9.5 s: the first end after -10 s
    assert format_lsn(end) == next(e.end_lsn for e in events if e.xid == 761)  # at +4.4 s
    assert relation_scan_range(events, INCIDENT + timedelta(hours=1), timedelta(seconds=5)) is None


def test_a_scan_across_a_timeline_switch_is_cut_there():
    history = TimelineHistory(timeline=2, switches=[
        TimelineSwitch(parent=1, switch_lsn="0/3000100", reason="")])
    assert timeline_spans(history, 0x3000000, 0x3000200) == [
        (1, 0x3000000, 0x3000100), (2, 0x3000100, 0x3000200)]
    assert timeline_spans(history, 0x3000100, 0x3000200) == [(2, 0x3000100, 0x3000200)]
