"""Incident investigation on the commit index: where to stop recovery, with evidence.

Given the archive's WAL events (WAL order, one timeline path) and a moment the user names, this
finds the commits around it with the gaps between them, runs of commits dense enough to be a
runaway job (a burst), and candidate recovery targets, each with exactly which commit it keeps
last, which it drops first, and how many transactions and seconds of data before the incident
it gives up.

Targets follow PostgreSQL 15's stop rules: an exclusive time target stops before the first
commit or abort whose timestamp is >= the target (commit timestamps can share a microsecond and
are not strictly ordered in the WAL); an exclusive LSN target stops before the first record at
or after the LSN, so the start of a commit record excludes exactly that transaction and keeps
every commit before it. Pure: no I/O, no clock.
"""

from __future__ import annotations

import re
import statistics
from datetime import datetime, timedelta
from typing import Literal

from pydantic import BaseModel

from domain.errors import DrillError, ErrorCode
from domain.lsn import parse_lsn
from domain.prediction import CommitRef
from domain.targets import format_utc
from domain.timelines import TimelineHistory
from domain.wal_records import WalEvent, WalRecord

LARGEST_GAPS = 5
# Commit timestamps have microsecond resolution; a burst's pace is never taken below this, so
# a burst of commits sharing a clock tick does not shed members over a microsecond.
_CLOCK_TICK = timedelta(milliseconds=1)
_WINDOW = re.compile(r"^\s*(?P<amount>\d+(?:\.\d+)?)\s*(?P<unit>[smh])\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600}
_LOCATOR = re.compile(r"^(?P<tablespace>\d+)/(?P<database>\d+)/(?P<relfilenode>\d+)$")
_SUBXACTS = re.compile(r"; subxacts:(?P<xids>(?: \d+)+)")


# --- inputs ----------------------------------------------------------------------------------

class SafetyMargin(BaseModel):
    """One row of the safety-margin table: how far before the incident to aim when the timing
    is only as good as its source."""

    situation: str
    minimum: timedelta
    recommended: timedelta


SAFETY_MARGINS = (
    SafetyMargin(situation="high-confidence timing from logs",
                 minimum=timedelta(seconds=10), recommended=timedelta(seconds=30)),
    SafetyMargin(situation="estimated from user reports",
                 minimum=timedelta(minutes=2), recommended=timedelta(minutes=5)),
    SafetyMargin(situation="unknown timing, narrow corruption",
                 minimum=timedelta(minutes=5), recommended=timedelta(minutes=10)),
    SafetyMargin(situation="major incident, unclear scope",
                 minimum=timedelta(minutes=15), recommended=timedelta(minutes=30)),
)


class BurstRule(BaseModel):
    """A burst: at least `min_commits` commits, none further from the one before than their
    average gap at `min_commits` within `within_seconds`. Its edges are where the pace breaks:
    a commit more than `edge_factor` times the burst's median gap away from its neighbour is
    not part of it (the legitimate commit that triggered a job, say)."""

    min_commits: int = 10
    within_seconds: float = 2.0
    edge_factor: float = 2.0


def parse_window(text: str) -> timedelta:
    """'5m', '30s', '1.5h': how far either side of the moment to look."""
    match = _WINDOW.match(text)
    if match is None or float(match["amount"]) <= 0:
        raise DrillError(ErrorCode.SPEC_INVALID,
                         f"window {text!r} is not a positive duration such as 30s, 5m or 2h",
                         "Write the window as a number followed by s, m or h.")
    return timedelta(seconds=float(match["amount"]) * _UNIT_SECONDS[match["unit"]])


class RelFileLocator(BaseModel):
    """A relation's storage as WAL block references name it: tablespace/database/relfilenode
    (pg_waldump's `rel T/D/R`). Database 0 is a shared catalog."""

    tablespace: int
    database: int
    relfilenode: int

    @classmethod
    def parse(cls, text: str) -> RelFileLocator | None:
        """The locator `text` spells as T/D/R; None when it is not in that form."""
        match = _LOCATOR.match(text.strip())
        return None if match is None else cls(**{k: int(v) for k, v in match.groupdict().items()})

    def __str__(self) -> str:
        return f"{self.tablespace}/{self.database}/{self.relfilenode}"


# --- what pg_waldump says about a relation -----------------------------------------------------

def transactions_touching(relation_records: list[WalRecord], commit_records: list[WalRecord],
                          commits: list[WalEvent]) -> set[int]:
    """The top-level xids whose changes touched the relation. `relation_records` are the heap
    records pg_waldump kept for the relation; a subtransaction writes under its own xid, which
    its top-level commit record lists after 'subxacts:'. `commits` are the indexed events for
    `commit_records` (they carry the committed xid, also for prepared transactions)."""
    committed_xid = {event.start: event.xid for event in commits if event.is_commit}
    top_of: dict[int, int] = {}
    for record in commit_records:
        top = committed_xid.get(record.start)
        match = _SUBXACTS.search(record.desc)
        if top is not None and match:
            top_of.update({int(sub): top for sub in match["xids"].split()})
    return {top_of.get(record.xid, record.xid) for record in relation_records if record.xid}


def timeline_spans(history: TimelineHistory, start: int, end: int) -> list[tuple[int, int, int]]:
    """[start, end) cut where the timeline path switches: (timeline, from, to) pieces, since one
    pg_waldump run reads one timeline's segment files."""
    switches = sorted(parse_lsn(s.switch_lsn) for s in history.switches)
    bounds = [start, *(lsn for lsn in switches if start < lsn < end), end]
    return [(history.timeline_at(low), low, high) for low, high in zip(bounds, bounds[1:])]


def relation_scan_range(events: list[WalEvent], around: datetime,
                        window: timedelta) -> tuple[int, int] | None:
    """The WAL to read for heap records of the window's transactions: from the first
    transaction end one window before the window opens (a transaction writes before it
    commits; earlier writes of a longer one are not seen) to the end of the window's last
    commit. None when no commit falls in the window."""
    in_window = _in_window(_commits(events), around, window)
    if not in_window:
        return None
    lookback = around - 2 * window
    first = next(e for e in _ends(events) if e.timestamp >= lookback)
    return first.start, in_window[-1].end


# --- what the investigation finds -----------------------------------------------------------

class TargetChoice(BaseModel):
    """A target as a drill spec's `target:` takes it."""

    lsn: str | None = None
    time: str | None = None  # UTC, as format_utc writes it
    inclusive: bool = False

    def describe(self) -> str:
        setting = (f"recovery_target_lsn = '{self.lsn}'" if self.lsn
                   else f"recovery_target_time = '{self.time}'")
        return f"{setting}, {'inclusive' if self.inclusive else 'exclusive'}"


class CommitRow(BaseModel):
    xid: int
    lsn: str  # start of the commit record
    commit_time: datetime
    gap_before_seconds: float | None  # to the previous commit in the WAL (any transaction)
    gap_after_seconds: float | None


class Gap(BaseModel):
    """A quiet stretch between two commits: a time target anywhere in it stops the same way."""

    seconds: float
    before: CommitRef
    after: CommitRef


class Burst(BaseModel):
    commits: int
    xids: list[int]
    first: CommitRef
    last: CommitRef
    seconds: float
    pace_seconds: float  # median gap between its commits
    previous: CommitRef | None  # the last commit before it, of any transaction
    gap_before_seconds: float | None


class Exclusion(BaseModel):
    """The targets that keep every commit before `commit` and nothing of it."""

    commit: CommitRef
    last_kept: CommitRef | None
    gap_seconds: float | None  # from last_kept to commit
    lsn_target: TargetChoice
    time_target: TargetChoice
    time_target_exact: bool
    time_target_also_drops: list[int]  # earlier commits the time target loses too
    same_microsecond: list[int]  # other commits with exactly this commit time
    advice: str


class Candidate(BaseModel):
    """One target, and what recovering to it gives up relative to the incident."""

    label: str
    situation: str | None = None  # margin targets: the row of the safety-margin table ...
    strength: Literal["minimum", "recommended"] | None = None  # ... and which of its margins
    margin_seconds: float | None = None
    target: TargetChoice
    same_as: TargetChoice | None = None  # an equivalent time target, when one is exact
    last_kept: CommitRef | None
    first_dropped: CommitRef | None
    transactions_given_up: int  # commits before the incident that the target drops
    seconds_given_up: float  # from the earliest of them to the incident
    note: str | None = None


class Recommendations(BaseModel):
    incident: datetime
    margins: list[Candidate]
    tightest: Candidate | None  # keeps every commit before the incident
    before_burst: Candidate | None  # keeps every commit before the burst nearest the incident
    recommended: Candidate | None
    why: str


class Investigation(BaseModel):
    around: datetime
    window_seconds: float
    commits: list[CommitRow]
    largest_gaps: list[Gap]
    bursts: list[Burst]
    exclusion: Exclusion | None
    recommendations: Recommendations


# --- rules -----------------------------------------------------------------------------------

def _ends(events: list[WalEvent]) -> list[WalEvent]:
    """Commits and aborts: the records a time target is checked against."""
    return [e for e in events if e.ends_transaction]


def _commits(events: list[WalEvent]) -> list[WalEvent]:
    return [e for e in events if e.is_commit]


def _seconds(earlier: WalEvent, later: WalEvent) -> float:
    return (later.timestamp - earlier.timestamp).total_seconds()


def _in_window(commits: list[WalEvent], around: datetime, window: timedelta) -> list[WalEvent]:
    return [c for c in commits if around - window <= c.timestamp <= around + window]


def _time_stop(ends: list[WalEvent], at: datetime) -> int:
    """Index in `ends` of the record an exclusive time target `at` stops before."""
    return next((i for i, e in enumerate(ends) if e.timestamp >= at), len(ends))


def _rows(commits: list[WalEvent], shown: list[WalEvent]) -> list[CommitRow]:
    position = {c.start: i for i, c in enumerate(commits)}
    rows = []
    for commit in shown:
        i = position[commit.start]
        rows.append(CommitRow(
            xid=commit.xid, lsn=commit.start_lsn, commit_time=commit.timestamp,
            gap_before_seconds=_seconds(commits[i - 1], commit) if i > 0 else None,
            gap_after_seconds=_seconds(commit, commits[i + 1]) if i + 1 < len(commits) else None,
        ))
    return rows


def largest_gaps(commits: list[WalEvent], count: int = LARGEST_GAPS) -> list[Gap]:
    gaps = [Gap(seconds=_seconds(a, b), before=CommitRef.of(a), after=CommitRef.of(b))
            for a, b in zip(commits, commits[1:])]
    return sorted(gaps, key=lambda gap: gap.seconds, reverse=True)[:count]


def _runs(commits: list[WalEvent], rule: BurstRule) -> list[list[WalEvent]]:
    """Commits cut wherever one comes later after the previous than the rule's own average
    pace (`within_seconds` over `min_commits - 1` gaps): a burst may not pause longer."""
    longest = rule.within_seconds / (rule.min_commits - 1)
    runs: list[list[WalEvent]] = []
    for commit in commits:
        if runs and _seconds(runs[-1][-1], commit) <= longest:
            runs[-1].append(commit)
        else:
            runs.append([commit])
    return runs


def _pace(run: list[WalEvent]) -> float:
    return statistics.median(_seconds(a, b) for a, b in zip(run, run[1:]))


def _trim_edges(run: list[WalEvent], factor: float) -> list[WalEvent]:
    """Shed edge commits that keep their own time rather than the burst's pace."""
    while len(run) > 2:
        limit = max(factor * _pace(run), _CLOCK_TICK.total_seconds())
        if _seconds(run[0], run[1]) > limit:
            run = run[1:]
        elif _seconds(run[-2], run[-1]) > limit:
            run = run[:-1]
        else:
            break
    return run


def find_bursts(commits: list[WalEvent], all_commits: list[WalEvent],
                rule: BurstRule) -> list[Burst]:
    """Bursts among `commits`; the commit before each is looked up in `all_commits` (what a
    target just before the burst keeps)."""
    runs = (_trim_edges(run, rule.edge_factor) for run in _runs(commits, rule))
    bursts = []
    for run in (r for r in runs if len(r) >= rule.min_commits):
        before = [c for c in all_commits if c.start < run[0].start]
        previous = before[-1] if before else None
        bursts.append(Burst(
            commits=len(run), xids=[c.xid for c in run],
            first=CommitRef.of(run[0]), last=CommitRef.of(run[-1]),
            seconds=_seconds(run[0], run[-1]), pace_seconds=_pace(run),
            previous=CommitRef.of(previous) if previous else None,
            gap_before_seconds=_seconds(previous, run[0]) if previous else None,
        ))
    return bursts


def exclude_xid(events: list[WalEvent], xid: int) -> Exclusion:
    """Keep everything committed before xid's commit and nothing of it. The LSN target (the
    commit record's start, exclusive) always does exactly that; the time target (its commit
    time, exclusive) does too unless an earlier commit or abort has a timestamp >= it."""
    ends = _ends(events)
    at = next((i for i, e in enumerate(ends) if e.xid == xid), None)
    if at is None:
        raise DrillError(ErrorCode.UNKNOWN_XID,
                         f"xid {xid} neither commits nor aborts in the indexed WAL")
    event = ends[at]
    if not event.is_commit:
        raise DrillError(ErrorCode.XID_ABORTED,
                         f"xid {xid} aborted at {event.start_lsn} ({format_utc(event.timestamp)})"
                         "; it changed nothing, so there is nothing to exclude")
    also_drops = [e.xid for e in _commits(ends[_time_stop(ends, event.timestamp):at])]
    ties = [e.xid for e in _commits(ends) if e.timestamp == event.timestamp and e.xid != xid]
    kept = _commits(ends[:at])
    last_kept = kept[-1] if kept else None
    lsn_target = TargetChoice(lsn=event.start_lsn)
    time_target = TargetChoice(time=format_utc(event.timestamp))
    if also_drops:
        advice = (f"use {lsn_target.describe()}: the time target would also drop xid(s) "
                  f"{', '.join(map(str, also_drops))}, committed earlier in the WAL with a "
                  "timestamp at or after this one")
    elif ties:
        advice = (f"both are exact here, but xid(s) {', '.join(map(str, ties))} share this "
                  f"microsecond; prefer {lsn_target.describe()}")
    else:
        advice = f"both are exact; {time_target.describe()} is the same stop"
    return Exclusion(
        commit=CommitRef.of(event),
        last_kept=CommitRef.of(last_kept) if last_kept else None,
        gap_seconds=_seconds(last_kept, event) if last_kept else None,
        lsn_target=lsn_target, time_target=time_target, time_target_exact=not also_drops,
        time_target_also_drops=also_drops, same_microsecond=ties, advice=advice,
    )


def _candidate(label: str, target: TargetChoice, ends: list[WalEvent], stop: int,
               incident: datetime, **extra) -> Candidate:
    """What a target that stops before ends[stop] keeps and gives up."""
    kept, dropped = _commits(ends[:stop]), _commits(ends[stop:])
    given_up = [c for c in dropped if c.timestamp < incident]
    earliest = min((c.timestamp for c in given_up), default=incident)
    return Candidate(
        label=label, target=target,
        last_kept=CommitRef.of(kept[-1]) if kept else None,
        first_dropped=CommitRef.of(dropped[0]) if dropped else None,
        transactions_given_up=len(given_up),
        seconds_given_up=(incident - earliest).total_seconds(), **extra,
    )


def _margin_note(ends: list[WalEvent], stop: int) -> str | None:
    if stop == len(ends):
        return ("no commit or abort at or after this target: PostgreSQL would replay the whole "
                "archive and fail (TARGET_BEYOND_ARCHIVE)")
    if stop == 0:
        return ("the indexed WAL has no commit before this target: what it gives up is counted "
                "from the archive's start, and a drill needs a base backup older than that")
    return None


def _margin_candidates(ends: list[WalEvent], incident: datetime) -> list[Candidate]:
    candidates = []
    for row in SAFETY_MARGINS:
        for strength, margin in (("minimum", row.minimum), ("recommended", row.recommended)):
            at = incident - margin
            stop = _time_stop(ends, at)
            candidates.append(_candidate(
                f"{row.situation}: {strength} margin", TargetChoice(time=format_utc(at)),
                ends, stop, incident, situation=row.situation, strength=strength,
                margin_seconds=margin.total_seconds(), note=_margin_note(ends, stop),
            ))
    return candidates


def _exclusion_candidate(label: str, events: list[WalEvent], xid: int,
                         incident: datetime) -> Candidate:
    exclusion = exclude_xid(events, xid)
    ends = _ends(events)
    stop = next(i for i, e in enumerate(ends) if e.start_lsn == exclusion.commit.lsn)
    same_as = exclusion.time_target if exclusion.time_target_exact else None
    return _candidate(label, exclusion.lsn_target, ends, stop, incident, same_as=same_as)


def recommend(events: list[WalEvent], incident: datetime,
              bursts: list[Burst] = ()) -> Recommendations:
    """Every margin of the table, the tightest exact target (the first commit at or after the
    incident excluded by LSN) and, when there is a burst, the target just before the one
    nearest the incident: the recommended one, since it is evidence rather than a margin."""
    first_after = next((c for c in _commits(events) if c.timestamp >= incident), None)
    tightest = None if first_after is None else _exclusion_candidate(
        f"tightest: exclude xid {first_after.xid}, the first commit at or after the incident",
        events, first_after.xid, incident)
    suspect = min(bursts, key=lambda b: abs(b.first.commit_time - incident), default=None)
    before_burst = None if suspect is None else _exclusion_candidate(
        f"before the burst: exclude xid {suspect.first.xid} and the {suspect.commits - 1} "
        "commits after it", events, suspect.first.xid, incident)
    if before_burst is not None:
        recommended, why = before_burst, (
            f"a burst of {suspect.commits} commits in {suspect.seconds:.3f}s starts at xid "
            f"{suspect.first.xid}: exclude it exactly")
    elif tightest is not None:
        recommended, why = tightest, "no burst found: keep every commit before the incident"
    else:
        recommended, why = None, "the indexed WAL has no commit at or after the incident"
    return Recommendations(
        incident=incident, margins=_margin_candidates(_ends(events), incident),
        tightest=tightest, before_burst=before_burst, recommended=recommended, why=why,
    )


def investigate(events: list[WalEvent], around: datetime, window: timedelta,
                rule: BurstRule = BurstRule(), relation_xids: set[int] | None = None,
                exclude: int | None = None) -> Investigation:
    """The commits within `window` either side of `around` (only those in `relation_xids`
    when given), the largest gaps among all commits there, the bursts among the shown
    commits, the exclusion of `exclude`, and the recommendations for an incident at `around`."""
    commits = _commits(events)
    in_window = _in_window(commits, around, window)
    shown = [c for c in in_window if relation_xids is None or c.xid in relation_xids]
    bursts = find_bursts(shown, commits, rule)
    return Investigation(
        around=around, window_seconds=window.total_seconds(),
        commits=_rows(commits, shown), largest_gaps=largest_gaps(in_window), bursts=bursts,
        exclusion=None if exclude is None else exclude_xid(events, exclude),
        recommendations=recommend(events, around, bursts),
    )
