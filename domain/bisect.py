"""Bisection: find the first transaction after which a predicate ("the damage is present")
holds, in a logarithmic number of replays. Pure: no I/O, no clock, no Temporal.

The states bisected are the recovery targets between a good bound and a bad bound. The
candidates c_1 .. c_n are the commits (aborts are skipped: they change nothing) whose commit
records lie after the good bound's stop and up to the bad bound's stop, in WAL order.
Position j names the state "everything before c_{j+1}": position 0 is the good bound itself,
position n the bad bound, and a position 0 < j < n is reached by the exclusive xid target of
c_{j+1}, paused. With P(0) false and P(n) true, a binary search finds the smallest k with
P(k) true in ceil(log2 n) probes; c_k is the first bad commit, and the exclusive xid target of
c_k keeps everything before it (the state of position k - 1, observed clean).

Monotonic damage is the assumption: once present it stays. Every observation, the confirming
drill's included, is checked against every other: a state judged damaged that lies at or
before one judged clean is a contradiction, reported with both (BISECT_NOT_MONOTONIC).
"""

from __future__ import annotations

import math
import re
from datetime import datetime, timedelta, timezone, tzinfo
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from domain.checks import refuse_unsafe_check
from domain.errors import DrillError, ErrorCode
from domain.lsn import parse_lsn
from domain.prediction import CommitRef
from domain.report import DrillReport
from domain.spec import Check, DrillSpec
from domain.targets import ResolvedTarget, TargetSpec, resolve_target
from domain.timeparse import format_utc, load_zone, parse_target_time
from domain.wal_records import WalEvent

PREDICATE_CHECK = "damage absent (bisect predicate)"
_XID_BOUND = re.compile(r"^\s*xid\s*:\s*(?P<xid>\S+)\s*$", re.IGNORECASE)
_LSN_BOUND = re.compile(r"^\s*[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}\s*$")
_READING_ZONE = re.compile(
    r"^\S+ \S+ (?:(?P<zone>[^\s(]+) )?\((?:[^,()]+, )?(?P<offset>UTC[+-]\d\d:\d\d(?::\d\d)?)\)$")
_OFFSET = re.compile(r"^UTC(?P<sign>[+-])(?P<h>\d\d):(?P<m>\d\d)(?::(?P<s>\d\d))?$")

Role = Literal["good_bound", "bad_bound", "search", "confirm"]
StartFrom = Literal["restore", "forward", "good_state", "fresh_drill"]


# --- the bounds ------------------------------------------------------------------------------

BOUND_SYNTAX = ("an LSN (0/3000148), xid:N, or a time with its zone "
                "('2026-01-15 14:31:47.234 America/New_York', '...Z', '...-05:00')")


def parse_bound(text: str, timeline: int | str = "latest") -> TargetSpec:
    """A --good-at / --bad-at bound as the recovery target that reaches its state: an LSN,
    `xid:N` or a time with a zone, always exclusive and paused. So `xid:N` is the state just
    before N commits, an LSN the state before the first record at or after it, a time the
    state before the first commit at or after it."""
    common = {"inclusive": False, "action": "pause", "timeline": timeline}
    if match := _XID_BOUND.match(text):
        return TargetSpec(xid=match["xid"], **common)
    if _LSN_BOUND.match(text):
        parse_lsn(text)
        return TargetSpec(lsn=text.strip(), **common)
    if re.match(r"^\s*\d{4}-\d\d-\d\d", text):
        parse_target_time(text)  # refuses a zoneless, ambiguous or skipped time here
        return TargetSpec(time=text.strip(), **common)
    raise DrillError(ErrorCode.TARGET_UNPARSEABLE,
                     f"bound {text!r} is none of {BOUND_SYNTAX}",
                     f"Write the bound as {BOUND_SYNTAX}.")


def reading_zone(local_reading: str | None) -> str | None:
    """The zone a resolved time was typed in, from its reading ('2024-01-15 14:30:00
    America/New_York (EST, UTC-05:00)' -> America/New_York; '... (UTC-05:00)' -> UTC-05:00);
    None for UTC."""
    if not local_reading:
        return None
    match = _READING_ZONE.match(local_reading.strip())
    if match is None:
        return None
    return match["zone"] or match["offset"]


def zone_info(name: str) -> tzinfo:
    """An IANA zone (from the bundled tzdata) or a fixed 'UTC±hh:mm' offset."""
    if match := _OFFSET.match(name):
        size = timedelta(hours=int(match["h"]), minutes=int(match["m"]),
                         seconds=int(match["s"] or 0))
        return timezone(-size if match["sign"] == "-" else size)
    return load_zone(name)


def local_reading(instant: datetime, zone: str | None) -> str | None:
    """'2026-01-15 14:31:47.353912 America/New_York (EST)'; None when the zone is UTC."""
    if zone is None:
        return None
    local = instant.astimezone(zone_info(zone))
    abbreviation = local.tzname()
    named = f" ({abbreviation})" if abbreviation and abbreviation != zone else ""
    return f"{local:%Y-%m-%d %H:%M:%S.%f} {zone}{named}"


# --- the candidates --------------------------------------------------------------------------

class CommitSeen(BaseModel):
    """A commit as the report names it: xid, commit record LSN, time in UTC and in the zone
    the bounds were given in."""

    xid: int
    lsn: str
    commit_time: datetime
    local_time: str | None = None

    @classmethod
    def of(cls, ref: CommitRef | WalEvent, zone: str | None = None) -> CommitSeen:
        if isinstance(ref, WalEvent):
            ref = CommitRef.of(ref)
        return cls(xid=ref.xid, lsn=ref.lsn, commit_time=ref.commit_time,
                   local_time=local_reading(ref.commit_time, zone))

    def describe(self) -> str:
        local = f" = {self.local_time}" if self.local_time else ""
        return f"xid {self.xid} at {self.lsn}, {format_utc(self.commit_time)}{local}"


class Range(BaseModel):
    """The transaction ends between the bounds' stops, on one timeline path."""

    commits: list[WalEvent]  # WAL order
    aborted: int
    before_first: WalEvent | None  # the last commit the good bound keeps


def commits_between(events: list[WalEvent], good_stop_lsn: str, bad_stop_lsn: str) -> Range:
    """Commits whose record ends after the good bound's replay stop and no later than the bad
    bound's (what each of the two states keeps, as predict_stop counts it). Aborted
    transactions are counted and skipped."""
    good, bad = parse_lsn(good_stop_lsn), parse_lsn(bad_stop_lsn)
    inside = [e for e in events if e.ends_transaction and good < e.end <= bad]
    before = [e for e in events if e.is_commit and e.end <= good]
    return Range(commits=[e for e in inside if e.is_commit],
                 aborted=sum(1 for e in inside if not e.is_commit),
                 before_first=before[-1] if before else None)


def require_ordered(good_stop_lsn: str, bad_stop_lsn: str) -> None:
    """The good bound's state must come before the bad bound's."""
    if parse_lsn(good_stop_lsn) >= parse_lsn(bad_stop_lsn):
        raise DrillError(ErrorCode.BISECT_NO_CANDIDATES,
                         f"the good bound stops replay at {good_stop_lsn}, not before the bad "
                         f"bound ({bad_stop_lsn}): no transaction lies between them")


def require_candidates(count: int, relation: str | None = None,
                       scanned: int | None = None) -> None:
    if count > 0:
        return
    what = (f" that touched {relation} ({scanned} commit(s) between the bounds did not)"
            if relation else "")
    raise DrillError(ErrorCode.BISECT_NO_CANDIDATES,
                     f"no committed transaction{what} lies between the good and the bad bound")


def max_probes(candidates: int) -> int:
    """The two bounds, then a binary search over the candidates."""
    return (math.ceil(math.log2(candidates)) if candidates > 1 else 0) + 2


def probe_target(commit: CommitRef | CommitSeen | WalEvent, timeline: str = "latest",
                 ) -> ResolvedTarget:
    """Paused just before `commit`: everything committed before it in the WAL, nothing of it."""
    return ResolvedTarget(mode="xid", xid=commit.xid, inclusive=False, action="pause",
                          timeline=timeline)


def stop_matches(target: ResolvedTarget, stop_reason: str | None) -> bool:
    """Whether the server's own 'recovery stopping ...' line is the stop the target asks for
    (only xid and immediate targets name it exactly)."""
    if target.mode == "xid":
        side = "after" if target.inclusive else "before"
        return stop_reason is not None and \
            f"stopping {side} commit of transaction {target.xid & 0xFFFFFFFF}," in stop_reason
    if target.mode == "immediate":
        return stop_reason is not None and "after reaching consistency" in stop_reason
    return True


def predicate_verdict(value: object, where: str) -> bool:
    """The predicate's answer: exactly one boolean."""
    if isinstance(value, bool):
        return value
    raise DrillError(ErrorCode.BISECT_PREDICATE_FAILED,
                     f"the predicate returned {value!r} at {where}, not true or false")


# --- the search --------------------------------------------------------------------------------

class Probe(BaseModel):
    """One observation of the predicate in one recovered state."""

    number: int  # 1-based, in the order made; the confirming drill's is the last
    role: Role
    position: int  # 0 = the good bound, n = the bad bound
    target: ResolvedTarget
    damaged: bool
    stopped_before: CommitSeen | None = None  # c_{position+1}: the commit it excludes
    last_kept: CommitSeen | None = None  # the last commit the state holds
    commits_kept: int | None = None  # how many of the commits between the bounds it holds
    start: StartFrom = "forward"
    replay_lsn: str | None = None
    stop_reason: str | None = None
    seconds: float = 0.0  # restart (or restore), replay to the target, predicate
    state_seconds: float = 0.0  # bringing the kept good state back first, if needed
    keep_seconds: float = 0.0  # keeping this (clean) state for later backward probes

    def describe(self) -> str:
        where = (f"before {self.stopped_before.describe()}" if self.stopped_before
                 else self.target.describe())
        verdict = "damaged" if self.damaged else "clean"
        return f"probe {self.number} ({self.role}, position {self.position}) {where}: {verdict}"


def contradiction(earlier: list[Probe], probe: Probe) -> DrillError | None:
    """BISECT_NOT_MONOTONIC when `probe` disagrees with an earlier observation: a damaged
    state at or before a clean one (one position judged both ways included)."""
    for other in earlier:
        clean, damaged = (other, probe) if probe.damaged else (probe, other)
        if clean.damaged or not damaged.damaged or damaged.position > clean.position:
            continue
        return DrillError(
            ErrorCode.BISECT_NOT_MONOTONIC,
            f"{damaged.describe()}, yet {clean.describe()}: the damage is not monotonic (or "
            "the predicate depends on more than the data), so no single first bad transaction "
            "exists")
    return None


class Search(BaseModel):
    """Binary search over positions 0..n: lo is known clean, hi known damaged."""

    candidates: int
    lo: int = 0
    hi: int = 0
    probes: list[Probe] = Field(default_factory=list)

    @classmethod
    def over(cls, candidates: int) -> Search:
        require_candidates(candidates)
        return cls(candidates=candidates, lo=0, hi=candidates)

    def next_position(self) -> int | None:
        """The middle of what is still open; None once lo and hi are neighbours."""
        if not self._bounds_seen() or self.hi - self.lo <= 1:
            return None
        return (self.lo + self.hi) // 2

    def _bounds_seen(self) -> bool:
        roles = {p.role for p in self.probes}
        return {"good_bound", "bad_bound"} <= roles

    def record(self, probe: Probe) -> DrillError | None:
        """Add an observation; a contradiction with an earlier one is returned (and the
        search does not move)."""
        problem = contradiction(self.probes, probe)
        self.probes.append(probe)
        if problem is not None:
            return problem
        if probe.role == "search":
            if not self.lo < probe.position < self.hi:
                return DrillError(ErrorCode.BISECT_NOT_MONOTONIC,
                                  f"{probe.describe()} lies outside the open range "
                                  f"({self.lo}, {self.hi})")
            if probe.damaged:
                self.hi = probe.position
            else:
                self.lo = probe.position
        return None

    def bound(self, role: Role) -> Probe | None:
        return next((p for p in self.probes if p.role == role), None)

    def at(self, position: int) -> Probe | None:
        """The latest observation of a position."""
        return next((p for p in reversed(self.probes) if p.position == position), None)

    @property
    def done(self) -> bool:
        return self._bounds_seen() and self.hi - self.lo <= 1

    def next_number(self) -> int:
        return len(self.probes) + 1


def bounds_refusal(good: Probe, bad: Probe) -> DrillError | None:
    """The predicate must be false at the good bound and true at the bad one; else the
    bisection is refused with both observations."""
    seen = f"at the good bound ({good.target.describe()}) it is {str(good.damaged).lower()}, " \
           f"at the bad bound ({bad.target.describe()}) {str(bad.damaged).lower()}"
    if good.damaged:
        return DrillError(ErrorCode.BISECT_BAD_AT_GOOD_BOUND,
                          f"the predicate is already true at the good bound: {seen}")
    if not bad.damaged:
        return DrillError(ErrorCode.BISECT_GOOD_AT_BAD_BOUND,
                          f"the predicate is still false at the bad bound: {seen}")
    return None


class Finding(BaseModel):
    first_bad: CommitSeen
    last_good: CommitSeen | None
    probes: int  # made by the search, the bounds included (not the confirming drill)
    target: ResolvedTarget  # exclusive xid of the first bad commit, paused
    target_spec: TargetSpec  # the same, as a drill spec's `target:`


def conclude(search: Search, timeline: str = "latest") -> Finding:
    """The first bad commit: the one the last clean state (position lo) stops before."""
    assert search.done, "the search is still open"
    clean = search.at(search.lo)
    assert clean is not None and not clean.damaged and clean.stopped_before is not None
    first_bad = clean.stopped_before
    return Finding(
        first_bad=first_bad, last_good=clean.last_kept, probes=len(search.probes),
        target=probe_target(first_bad, timeline),
        target_spec=TargetSpec(xid=first_bad.xid, inclusive=False, action="pause",
                               timeline=timeline),
    )


# --- the request and the report --------------------------------------------------------------

class BisectRequest(BaseModel):
    """What `pitrdrill bisect` starts: a drill spec (its source, database, db_user, sandbox
    options), the predicate, and the bounds as typed (None: the defaults)."""

    model_config = ConfigDict(extra="forbid")

    spec: DrillSpec
    bad_when: str
    good_at: str | None = None  # default: the chosen backup's consistent point
    bad_at: str | None = None  # default: the end of the archive (its last commit, inclusive)
    relation: str | None = None  # schema.table or tablespace/database/relfilenode

    @property
    def timeline(self) -> str:
        return str(self.spec.target.timeline)

    def good_target(self) -> TargetSpec | None:
        return None if self.good_at is None else parse_bound(self.good_at, self.timeline)

    def bad_target(self) -> TargetSpec:
        if self.bad_at is None:
            return TargetSpec(latest=True, timeline=self.timeline)
        return parse_bound(self.bad_at, self.timeline)

    def refuse_unsafe_predicate(self) -> None:
        """CHECK_UNSAFE for a predicate a check could not run either."""
        refuse_unsafe_check("bad-when", self.bad_when)

    def validated(self, now: datetime) -> BisectRequest:
        """The predicate is one query a check may run, and both bounds resolve (CHECK_UNSAFE,
        TARGET_*, LSN_INVALID, XID_INVALID otherwise): refused before anything starts."""
        self.refuse_unsafe_predicate()
        for bound in (self.good_target(), self.bad_target()):
            if bound is not None:
                resolve_target(bound, now)
        return self


def confirming_spec(request: BisectRequest, finding: Finding) -> DrillSpec:
    """One normal drill to the found target, the predicate as a check expecting false."""
    return request.spec.model_copy(update={
        "target": finding.target_spec,
        "checks": [Check(name=PREDICATE_CHECK, sql=request.bad_when, expect=False)],
        "fallback": [step for step in request.spec.fallback if step != "escalate"],
    })


def confirmation_probe(drill: DrillReport, finding: Finding, position: int,
                       number: int) -> Probe | None:
    """The confirming drill's predicate check as one more observation of position k - 1;
    None when the check did not run or gave no boolean."""
    check = next((c for c in drill.checks if c.name == PREDICATE_CHECK), None)
    if check is None or check.error or not isinstance(check.observed, bool):
        return None
    return Probe(number=number, role="confirm", position=position, target=finding.target,
                 damaged=check.observed, stopped_before=finding.first_bad,
                 last_kept=finding.last_good, start="fresh_drill",
                 replay_lsn=drill.recovered.replay_lsn if drill.recovered else None,
                 stop_reason=drill.recovered.stop_reason if drill.recovered else None,
                 seconds=(drill.finished_at - drill.started_at).total_seconds()
                 if drill.finished_at and drill.started_at else 0.0)


class Bound(BaseModel):
    given: str | None  # as typed; None: the default
    target: ResolvedTarget  # what reaches the state (paused)
    replay_lsn: str | None  # where that stop is predicted
    description: str


class RelationFilter(BaseModel):
    relation: str
    locator: str  # tablespace/database/relfilenode at the good bound
    scanned_from_lsn: str
    scanned_to_lsn: str
    commits_between: int  # all commits between the bounds
    candidates: int  # those that touched the relation


class BisectReport(DrillReport):
    """A drill report (resolve, plan, sandbox, metrics) plus the bisection and the
    confirming drill. verified: the first bad commit was found and one normal drill to the
    target before it proved the damage absent; rejected: the bounds (or the input) were
    refused; failed: anything else."""

    predicate: str = ""
    good: Bound | None = None
    bad: Bound | None = None
    zone: str | None = None  # where the bounds were given; local times are in it
    candidates: int = 0
    aborted_skipped: int = 0
    relation: RelationFilter | None = None
    max_probes: int = 0  # ceil(log2(candidates)) + 2
    probes: list[Probe] = Field(default_factory=list)
    finding: Finding | None = None
    confirmation: DrillReport | None = None
    bisect_seconds: float | None = None  # from the first probe to the finding
    # With --relation, commits that did not touch it between the first bad candidate and the
    # next one: they were applied with it and not judged on their own.
    untested_commits_after_first_bad: int = 0
