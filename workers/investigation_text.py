"""`pitrdrill investigate` as text: the commits around the incident in the zone the time was
typed in and in UTC, the largest gaps, bursts, and the exact targets with what each gives up.
"""

from __future__ import annotations

from datetime import datetime, tzinfo
from pathlib import Path

from adapters.investigation import InvestigationReport
from domain.investigation import Candidate, CommitRow, Investigation
from domain.prediction import CommitRef
from domain.timeparse import format_utc

MAX_ROWS = 100  # the human table; --json has every commit


def local_time(instant: datetime, zone: tzinfo) -> str:
    local = instant.astimezone(zone)
    return f"{local:%Y-%m-%d %H:%M:%S.%f} {local.tzname()}"


def zone_name(zone: tzinfo) -> str:
    return getattr(zone, "key", None) or str(zone)


def duration(seconds: float) -> str:
    """'10s', '2m', '1.5h': a margin as the table writes it."""
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


def _ref(ref: CommitRef | None, zone: tzinfo) -> str:
    if ref is None:
        return "none"
    return f"xid {ref.xid} at {ref.lsn}, {local_time(ref.commit_time, zone)}"


def _gap(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.6f}s"


def _marks(found: Investigation) -> dict[int, str]:
    """What the table says beside a commit: the recommended stop's two sides, bursts."""
    marks = {xid: f"burst {n}" for n, burst in enumerate(found.bursts, 1) for xid in burst.xids}
    recommended = found.recommendations.recommended
    if recommended is not None:
        for ref, what in ((recommended.last_kept, "last kept"),
                          (recommended.first_dropped, "first dropped")):
            if ref is not None:
                marks[ref.xid] = ", ".join(filter(None, (marks.get(ref.xid), what)))
    return marks


def _nearest_rows(found: Investigation) -> list[CommitRow]:
    """At most MAX_ROWS commits, those nearest the incident in time, in WAL order."""
    nearest = sorted(found.commits, key=lambda row: abs(row.commit_time - found.around))
    kept = {row.lsn for row in nearest[:MAX_ROWS]}
    return [row for row in found.commits if row.lsn in kept]


def _table(found: Investigation, zone: tzinfo) -> list[str]:
    shown, marks = _nearest_rows(found), _marks(found)
    zone_label = zone_name(zone)
    lines = [f"Commits within {found.window_seconds:g}s of the incident: {len(found.commits)}"
             + (f" (the {len(shown)} nearest shown; --json has all)"
                if len(shown) < len(found.commits) else ""),
             f"  {'local (' + zone_label + ')':<34} {'UTC':<30} {'xid':>10}  {'commit LSN':<14}"
             f" {'gap before':>12} {'gap after':>12}  note"]
    lines += [f"  {local_time(row.commit_time, zone):<34} {format_utc(row.commit_time):<30} "
              f"{row.xid:>10}  {row.lsn:<14} {_gap(row.gap_before_seconds):>12} "
              f"{_gap(row.gap_after_seconds):>12}  {marks.get(row.xid, '')}" for row in shown]
    return lines


def _before(ref: CommitRef | None, gap: float | None, zone: tzinfo) -> str:
    if ref is None:
        return "none: it is the archive's first commit"
    return f"{_ref(ref, zone)}, {_gap(gap)} earlier"


def _candidate_lines(candidate: Candidate, zone: tzinfo) -> list[str]:
    same = f"  (same stop: {candidate.same_as.describe()})" if candidate.same_as else ""
    lines = [f"  {candidate.label}", f"      {candidate.target.describe()}{same}",
             f"      keeps up to {_ref(candidate.last_kept, zone)}",
             f"      gives up {candidate.transactions_given_up} transaction(s), "
             f"{candidate.seconds_given_up:.6f}s of data before the incident"]
    return lines + ([f"      note: {candidate.note}"] if candidate.note else [])


def _margins_table(margins: list[Candidate]) -> list[str]:
    """The safety-margin rows, one line each; a note is printed once, under the table."""
    notes = list(dict.fromkeys(c.note for c in margins if c.note))
    lines = ["Safety margins (time targets, exclusive; 'gives up': commits before the incident "
             "that they drop):",
             f"  {'situation':<36} {'margin':>11}  {'recovery_target_time':<30} "
             f"{'last kept':>10}  gives up"]
    for candidate in margins:
        last = candidate.last_kept.xid if candidate.last_kept else "none"
        mark = f" [{notes.index(candidate.note) + 1}]" if candidate.note else ""
        margin = f"{duration(candidate.margin_seconds)} {candidate.strength[:3]}"
        lines.append(f"  {candidate.situation:<36} {margin:>11}  "
                     f"{candidate.target.time:<30} {last:>10}  "
                     f"{candidate.transactions_given_up} txn, {candidate.seconds_given_up:.6f}s"
                     f"{mark}")
    return lines + [f"  [{n}] {note}" for n, note in enumerate(notes, 1)]


def _bursts_text(found: Investigation, zone: tzinfo) -> list[str]:
    if not found.bursts:
        return ["No burst of commits in the window."]
    lines = []
    for n, burst in enumerate(found.bursts, 1):
        lines += [f"Burst {n}: {burst.commits} commits in {burst.seconds:.6f}s (median gap "
                  f"{burst.pace_seconds:.6f}s), xid {burst.first.xid} .. {burst.last.xid}",
                  f"  first                  {_ref(burst.first, zone)}",
                  f"  last commit before it  "
                  f"{_before(burst.previous, burst.gap_before_seconds, zone)}"]
    return lines


def _exclusion_text(found: Investigation, zone: tzinfo) -> list[str]:
    exclusion = found.exclusion
    if exclusion is None:
        return []
    exact = "exact" if exclusion.time_target_exact else "NOT exact"
    return ["", f"To exclude xid {exclusion.commit.xid} "
                f"({local_time(exclusion.commit.commit_time, zone)}):",
            f"  {exclusion.lsn_target.describe()}",
            f"  {exclusion.time_target.describe()}  ({exact})",
            f"  keeps up to {_before(exclusion.last_kept, exclusion.gap_seconds, zone)}",
            f"  {exclusion.advice}"]


def _recommendations_text(found: Investigation, zone: tzinfo) -> list[str]:
    advice = found.recommendations
    lines = ["", f"Recommended: {advice.why}"]
    if advice.recommended is not None:
        lines += _candidate_lines(advice.recommended, zone)
    others = [c for c in (advice.tightest, advice.before_burst)
              if c is not None and c.target != getattr(advice.recommended, "target", None)]
    if others:
        lines += ["", "Other exact targets:"]
        for candidate in others:
            lines += _candidate_lines(candidate, zone)
    return lines + [""] + _margins_table(advice.margins)


def investigation_text(report: InvestigationReport, zone: tzinfo, plot: Path | None) -> str:
    found = report.investigation
    lines = [f"WAL archive {report.archive}: {report.index.segments} segments "
             f"({report.index.segments_indexed} newly indexed), timeline {report.timeline}",
             f"Incident at {local_time(found.around, zone)} = {format_utc(found.around)}"]
    if report.relation is not None:
        lines.append(f"Only transactions that touched {report.relation.relation} "
                     f"(rel {report.relation.locator}), read from WAL "
                     f"{report.relation.scanned_from_lsn} to {report.relation.scanned_to_lsn}")
    lines += ["", *_table(found, zone), "", "Largest gaps between commits in the window:"]
    lines += [f"  {gap.seconds:.6f}s  after {_ref(gap.before, zone)}" for gap in found.largest_gaps]
    lines += ["", *_bursts_text(found, zone), *_exclusion_text(found, zone),
              *_recommendations_text(found, zone)]
    if plot is not None:
        lines += ["", f"Timeline drawn to {plot}"]
    return "\n".join(lines)
