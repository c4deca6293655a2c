"""Bisection rules, pure: bounds, candidates, the search and its invariants, the finding."""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone

import pytest

from domain.bisect import (
    BisectRequest,
    CommitSeen,
    Probe,
    Search,
    bounds_refusal,
    commits_between,
    conclude,
    confirmation_probe,
    confirming_spec,
    contradiction,
    local_reading,
    max_probes,
    parse_bound,
    predicate_verdict,
    probe_target,
    reading_zone,
    require_candidates,
    require_ordered,
    stop_matches,
)
from domain.errors import DrillError
from domain.lsn import format_lsn
from domain.report import CheckResult, DrillReport, Recovered
from domain.spec import DrillSpec
from domain.targets import ResolvedTarget, resolve_target
from domain.wal_records import WalEvent

T0 = datetime(2026, 1, 15, 19, 31, 47, 119000, tzinfo=timezone.utc)
NOW = datetime(2026, 2, 1, tzinfo=timezone.utc)
SPEC = DrillSpec.model_validate({
    "database": "shop", "target": {"latest": True},
    "source": {"kind": "filesystem", "base_backups": "/b", "wal_archive": "/w"}})
GOOD = ResolvedTarget(mode="immediate", action="pause")
BAD = ResolvedTarget(mode="xid", xid=9999, inclusive=True, action="pause")


def event(n: int, kind: str = "commit", xid: int | None = None) -> WalEvent:
    start = 0x3000000 + n * 0x100
    return WalEvent(kind=kind, timeline=1, start_lsn=format_lsn(start),
                    end_lsn=format_lsn(start + 0x40), xid=xid or 1000 + n,
                    timestamp=T0 + timedelta(milliseconds=n), segment="000000010000000000000003")


def commit(n: int) -> CommitSeen:
    return CommitSeen.of(event(n))


# --- bounds ------------------------------------------------------------------------------------

def test_a_bound_is_an_lsn_an_xid_or_a_zoned_time_always_exclusive_and_paused():
    assert parse_bound("0/3000148").lsn == "0/3000148"
    assert parse_bound("xid:735").xid == "735"
    assert parse_bound(" XID : 735 ", "2").timeline == "2"
    at = parse_bound("2026-01-15 14:31:47.234 America/New_York")
    assert at.time == "2026-01-15 14:31:47.234 America/New_York"
    for bound in (parse_bound("0/1"), parse_bound("xid:5"), at):
        assert (bound.inclusive, bound.action) == (False, "pause")


@pytest.mark.parametrize("text, code", [
    ("2026-01-15 14:31:47", "TARGET_NAIVE_TIME"),
    ("yesterday", "TARGET_UNPARSEABLE"),
    ("2024-11-03 01:30:00 America/New_York", "TARGET_AMBIGUOUS_LOCAL_TIME"),
    ("0/XYZ", "TARGET_UNPARSEABLE"),
])
def test_a_bound_that_names_no_single_state_is_refused_with_its_code(text, code):
    with pytest.raises(DrillError) as refused:
        parse_bound(text)
    assert refused.value.code == code


def test_the_request_resolves_both_bounds_before_anything_starts():
    request = BisectRequest(spec=SPEC, bad_when="select true", good_at="xid:1")
    with pytest.raises(DrillError) as refused:
        request.validated(NOW)
    assert refused.value.code == "XID_INVALID"
    assert BisectRequest(spec=SPEC, bad_when="select true").bad_target().latest


def test_the_predicate_is_refused_like_a_check():
    request = BisectRequest(spec=SPEC, bad_when="select pg_read_file('/etc/passwd') <> ''")
    with pytest.raises(DrillError) as refused:
        request.validated(NOW)
    assert refused.value.code == "CHECK_UNSAFE"


def test_the_zone_the_bounds_were_given_in_is_read_back_from_the_resolved_reading():
    resolved = resolve_target(parse_bound("2026-01-15 14:31:47.234 America/New_York"), NOW)
    zone = reading_zone(resolved.local_reading)
    assert zone == "America/New_York"
    assert local_reading(T0, zone) == "2026-01-15 14:31:47.119000 America/New_York (EST)"
    fixed = resolve_target(parse_bound("2026-01-15 14:31:47-05:00"), NOW)
    assert reading_zone(fixed.local_reading) == "UTC-05:00"
    assert local_reading(T0, "UTC-05:00") == "2026-01-15 14:31:47.119000 UTC-05:00"
    assert reading_zone(resolve_target(parse_bound("2026-01-15 19:31:47Z"), NOW)
                        .local_reading) is None
    assert local_reading(T0, None) is None


# --- candidates --------------------------------------------------------------------------------

def test_candidates_are_the_commits_between_the_stops_and_aborts_are_skipped():
    events = [event(0), event(1), event(2, "abort"), event(3), event(4, "commit_prepared"),
              event(5, "restore_point"), event(6), event(7)]
    good_stop, bad_stop = events[1].end_lsn, events[6].end_lsn
    found = commits_between(events, good_stop, bad_stop)
    assert [e.xid for e in found.commits] == [1003, 1004, 1006]
    assert found.aborted == 1
    assert found.before_first.xid == 1001
    assert commits_between(events, events[0].start_lsn, bad_stop).before_first is None


def test_no_commit_between_the_bounds_is_refused():
    with pytest.raises(DrillError) as refused:
        require_candidates(0, "public.orders", 12)
    assert refused.value.code == "BISECT_NO_CANDIDATES"
    assert "public.orders" in refused.value.message and "12" in refused.value.message
    with pytest.raises(DrillError):
        Search.over(0)


def test_a_good_bound_at_or_after_the_bad_one_is_refused():
    require_ordered("0/3000100", "0/3000200")
    for good in ("0/3000200", "0/3000300"):
        with pytest.raises(DrillError) as refused:
            require_ordered(good, "0/3000200")
        assert refused.value.code == "BISECT_NO_CANDIDATES"
        assert "not before the bad bound" in refused.value.message


def test_probes_are_logarithmic_plus_the_two_bounds():
    assert [max_probes(n) for n in (1, 2, 3, 4, 5, 2000, 2048, 2049)] == \
        [2, 3, 4, 4, 5, 13, 13, 14]


def test_a_probe_pauses_just_before_its_commit_and_the_server_must_say_so():
    target = probe_target(commit(7), "3")
    assert (target.mode, target.xid, target.inclusive, target.action, target.timeline) == \
        ("xid", 1007, False, "pause", "3")
    said = "recovery stopping before commit of transaction 1007, time 2026-01-15 19:31:47+00"
    assert stop_matches(target, said)
    assert not stop_matches(target, said.replace("1007", "10071"))
    assert not stop_matches(target, None)
    assert stop_matches(GOOD, "recovery stopping after reaching consistency")
    assert stop_matches(BAD, "recovery stopping after commit of transaction 9999, time x")


def test_the_predicate_answers_exactly_one_boolean():
    assert predicate_verdict(True, "here") is True
    for value in (1, None, "t", 0):
        with pytest.raises(DrillError) as refused:
            predicate_verdict(value, "xid 5, exclusive")
        assert refused.value.code == "BISECT_PREDICATE_FAILED"


# --- the search -----------------------------------------------------------------------------------

def observe(search: Search, commits: list[CommitSeen], position: int, damaged: bool,
            role: str = "search") -> Probe:
    n = len(commits)
    before = commits[position] if position < n else None
    probe = Probe(number=search.next_number(), role=role, position=position,
                  target=probe_target(before) if before else BAD, damaged=damaged,
                  stopped_before=before, last_kept=commits[position - 1] if position else None,
                  commits_kept=position)
    assert search.record(probe) is None
    return probe


def bisect(n: int, first_bad: int) -> tuple[Search, list[CommitSeen]]:
    """What the workflow does, with the damage appearing with candidate number first_bad."""
    commits = [commit(i) for i in range(n)]
    search = Search.over(n)
    observe(search, commits, 0, False, "good_bound")
    assert search.next_position() is None  # the bad bound is not seen yet
    observe(search, commits, n, True, "bad_bound")
    while (position := search.next_position()) is not None:
        observe(search, commits, position, position >= first_bad)
    return search, commits


@pytest.mark.parametrize("n", [1, 2, 3, 7, 8, 9, 100, 2000])
def test_the_search_finds_every_first_bad_commit_within_the_bound(n):
    for first_bad in sorted({1, 2, n // 2, n - 1, n} & set(range(1, n + 1))):
        search, commits = bisect(n, first_bad)
        assert search.done and (search.lo, search.hi) == (first_bad - 1, first_bad)
        assert len(search.probes) <= max_probes(n) == \
            (math.ceil(math.log2(n)) if n > 1 else 0) + 2
        finding = conclude(search, "latest")
        assert finding.first_bad == commits[first_bad - 1]
        assert finding.last_good == (commits[first_bad - 2] if first_bad > 1 else None)
        assert (finding.target.xid, finding.target.inclusive) == (commits[first_bad - 1].xid,
                                                                  False)
        assert finding.target_spec.xid == commits[first_bad - 1].xid


def test_a_later_probe_that_contradicts_an_earlier_one_is_not_monotonic():
    commits = [commit(i) for i in range(16)]
    search = Search.over(16)
    observe(search, commits, 0, False, "good_bound")
    observe(search, commits, 16, True, "bad_bound")
    observe(search, commits, 8, True)
    # The same state judged again, now clean: the damage came and went, or the predicate
    # depends on more than the data.
    again = Probe(number=4, role="confirm", position=8, target=probe_target(commits[8]),
                  damaged=False, stopped_before=commits[8])
    problem = search.record(again)
    assert problem.code == "BISECT_NOT_MONOTONIC"
    assert "probe 3" in problem.message and "probe 4" in problem.message
    assert contradiction(search.probes[:2], search.probes[2]) is None


def test_a_clean_observation_after_a_damaged_one_is_not_monotonic():
    damaged = Probe(number=1, role="search", position=3, target=GOOD, damaged=True)
    clean = Probe(number=2, role="search", position=5, target=GOOD, damaged=False)
    assert contradiction([damaged], clean).code == "BISECT_NOT_MONOTONIC"
    assert contradiction([clean], damaged).code == "BISECT_NOT_MONOTONIC"
    later_damage = Probe(number=3, role="search", position=6, target=GOOD, damaged=True)
    assert contradiction([clean], later_damage) is None


def test_the_confirming_drill_is_one_more_observation_of_the_last_clean_state():
    search, commits = bisect(10, 4)
    finding = conclude(search)
    spec = confirming_spec(BisectRequest(spec=SPEC, bad_when="select false"), finding)
    assert (spec.target.xid, spec.target.inclusive, spec.target.action) == \
        (commits[3].xid, False, "pause")
    assert [(c.sql, c.expect) for c in spec.checks] == [("select false", False)]
    drill = DrillReport(drill_id="d", status="failed", database="shop",
                        started_at=T0, finished_at=T0 + timedelta(seconds=2),
                        recovered=Recovered(replay_lsn="0/1", stop_reason="stopping"),
                        checks=[CheckResult(name=spec.checks[0].name, passed=False,
                                            observed=True, expected=False)])
    observed = confirmation_probe(drill, finding, search.lo, search.next_number())
    assert (observed.position, observed.damaged, observed.seconds) == (3, True, 2.0)
    assert search.record(observed).code == "BISECT_NOT_MONOTONIC"
    drill.checks[0].error, drill.checks[0].observed = "boom", None
    assert confirmation_probe(drill, finding, 3, 99) is None


def test_bounds_the_predicate_contradicts_are_refused_with_both_observations():
    good = Probe(number=1, role="good_bound", position=0, target=GOOD, damaged=True)
    bad = Probe(number=2, role="bad_bound", position=9, target=BAD, damaged=True)
    refused = bounds_refusal(good, bad)
    assert refused.code == "BISECT_BAD_AT_GOOD_BOUND"
    assert "good bound (immediate" in refused.message and "bad bound (xid 9999" in refused.message
    good.damaged, bad.damaged = False, False
    refused = bounds_refusal(good, bad)
    assert refused.code == "BISECT_GOOD_AT_BAD_BOUND"
    assert "it is false" in refused.message
    bad.damaged = True
    assert bounds_refusal(good, bad) is None


def test_a_probe_outside_the_open_range_is_refused():
    commits = [commit(i) for i in range(8)]
    search = Search.over(8)
    observe(search, commits, 0, False, "good_bound")
    observe(search, commits, 8, True, "bad_bound")
    observe(search, commits, 4, False)
    stray = Probe(number=4, role="search", position=2, target=GOOD, damaged=False)
    assert search.record(stray).code == "BISECT_NOT_MONOTONIC"
