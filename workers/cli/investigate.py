"""`pitrdrill investigate`: where exactly to stop, from the archived WAL, before running a drill.

Shows the commits around the incident (in the zone the time was typed in, and UTC), the quiet
gaps between them, bursts of commits that look like a runaway job, and exact targets with what
each gives up; `--plot` draws the same as a timeline. Reads the archive; writes only the commit
index cache and the plot.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from datetime import datetime, timedelta, timezone, tzinfo
from pathlib import Path

from workers.cli import common as cli
from adapters.commit_store import CommitStore
from adapters.investigation import (
    InvestigateRequest,
    InvestigationReport,
    Investigator,
    RelationCatalog,
    WalRangeReader,
)
from domain.commits import CommitRef
from domain.errors import DrillError, ErrorCode
from domain.investigation import BurstRule, Candidate, CommitRow, Investigation, parse_window
from domain.lsn import parse_lsn
from domain.timeparse import ParsedTime, format_utc, load_zone, parse_target_time
from workers.worker import WorkerSettings

PLOT_FORMATS = (".png", ".svg")
MAX_ROWS = 100  # the human table; --json has every commit
_OVERVIEW_BINS = 60
_BIN_SECONDS = (0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1800, 3600)
_ZOOM_PAD_S = 0.25


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "investigate", help="commits, gaps and bursts around an incident, and exact targets")
    parser.add_argument("spec", nargs="?",
                        help="drill spec whose source.wal_archive to read ('-' for stdin)")
    parser.add_argument("--wal-archive", help="the WAL archive directory, instead of a spec")
    parser.add_argument("--around", help="the incident, with its zone: "
                                         "'2024-01-15 14:31:47.234 America/New_York'")
    parser.add_argument("--assume-timezone", help="zone for an --around written without one")
    parser.add_argument("--fold", choices=["earlier", "later"],
                        help="which reading of an --around that happened twice (DST fall-back)")
    parser.add_argument("--window", default="5m", help="how far either side to look: 30s, 5m, 1h")
    parser.add_argument("--relation", help="only transactions that touched it: schema.table "
                                           "(with --dsn) or tablespace/database/relfilenode")
    parser.add_argument("--dsn", help="libpq connection string of the relation's database")
    parser.add_argument("--exclude-xid", type=int,
                        help="the exact targets that keep everything before this transaction")
    parser.add_argument("--burst-commits", type=int, default=BurstRule().min_commits,
                        help="a burst is at least this many commits ...")
    parser.add_argument("--burst-seconds", type=float, default=BurstRule().within_seconds,
                        help="... within this many seconds")
    parser.add_argument("--plot", help="draw the commit timeline to FILE.png or FILE.svg")
    parser.add_argument("--json", action="store_true", help="print everything as JSON")
    parser.set_defaults(handler=investigate_command)


def _refuse(message: str, hint: str, code: ErrorCode = ErrorCode.SPEC_INVALID) -> cli.Refusal:
    return cli.refusal(DrillError(code, message, hint))


def _archive(args: argparse.Namespace) -> Path:
    if (args.spec is None) == (args.wal_archive is None):
        raise _refuse("give either a drill spec or --wal-archive, exactly one",
                      "pitrdrill investigate drill.yaml --around ... or "
                      "pitrdrill investigate --wal-archive DIR --around ...")
    archive = Path(args.wal_archive or cli.load_spec(args.spec).source.wal_archive)
    if not archive.is_dir():
        raise _refuse(f"WAL archive {archive} is not a directory",
                      "Point at the directory archive_command copies segments into.")
    return archive


def _around(args: argparse.Namespace) -> ParsedTime | None:
    if args.around is None:
        if args.exclude_xid is None:
            raise _refuse("nothing to investigate around", "Give --around TIME, --exclude-xid N "
                          "or both.", ErrorCode.TARGET_MISSING)
        return None
    try:
        return parse_target_time(args.around, args.assume_timezone, args.fold)
    except DrillError as error:
        raise cli.refusal(error) from error


def _rule(args: argparse.Namespace) -> BurstRule:
    if args.burst_commits < 2 or args.burst_seconds <= 0:
        raise _refuse(f"a burst of {args.burst_commits} commits within {args.burst_seconds}s "
                      "cannot be told from ordinary traffic",
                      "Use --burst-commits 2 or more and a positive --burst-seconds.")
    return BurstRule(min_commits=args.burst_commits, within_seconds=args.burst_seconds)


def _plot_path(args: argparse.Namespace) -> Path | None:
    if args.plot is None:
        return None
    path = Path(args.plot)
    if path.suffix.lower() not in PLOT_FORMATS:
        raise _refuse(f"cannot draw {path.name}: the plot is written as PNG or SVG",
                      "Name the file FILE.png or FILE.svg.")
    return path


def display_zone(parsed: ParsedTime | None) -> tzinfo:
    """The zone the incident time was typed in. ParsedTime keeps only its reading
    ('<wall> <zone> (<abbrev>, UTC±hh:mm)', '<wall> (UTC±hh:mm)', or None for UTC), so the
    zone, or the fixed offset, is read back from it."""
    if parsed is None or parsed.local_reading is None:
        return timezone.utc
    date, clock, place = parsed.local_reading.split(" ", 2)
    if not place.startswith("("):
        return load_zone(place.split(" (", 1)[0])
    wall = datetime.fromisoformat(f"{date} {clock}")
    return timezone(wall - parsed.utc.replace(tzinfo=None))


def build_investigator(settings: WorkerSettings) -> Investigator:
    settings.index_path.parent.mkdir(parents=True, exist_ok=True)
    reader = WalRangeReader(settings.runtime, CommitStore(settings.index_path))
    return Investigator(reader, RelationCatalog())


async def investigate_command(args: argparse.Namespace) -> int:
    archive, parsed = _archive(args), _around(args)
    try:
        request = InvestigateRequest(
            archive=str(archive), around=parsed.utc if parsed else None,
            window_seconds=parse_window(args.window).total_seconds(), rule=_rule(args),
            relation=args.relation, dsn=args.dsn, exclude_xid=args.exclude_xid)
        plot = _plot_path(args)
        report = build_investigator(WorkerSettings.from_env()).investigate(request)
    except DrillError as error:
        raise cli.refusal(error) from error
    zone = display_zone(parsed)
    if plot is not None:
        write_plot(report, zone, plot)
    if args.json:
        body = {"status": "investigated", "around_reading": parsed.local_reading if parsed
                else None, "plot": str(plot) if plot else None,
                **report.model_dump(mode="json", exclude={"index": {"timelines"}})}
        print(json.dumps(body, indent=2))
    else:
        print(investigation_text(report, zone, plot))
    return cli.EXIT_OK


# --- text ---------------------------------------------------------------------------------

def _local(instant: datetime, zone: tzinfo) -> str:
    local = instant.astimezone(zone)
    return f"{local:%Y-%m-%d %H:%M:%S.%f} {local.tzname()}"


def _ref(ref: CommitRef | None, zone: tzinfo) -> str:
    if ref is None:
        return "none"
    return f"xid {ref.xid} at {ref.lsn}, {_local(ref.commit_time, zone)}"


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
    zone_name = _zone_name(zone)
    lines = [f"Commits within {found.window_seconds:g}s of the incident: {len(found.commits)}"
             + (f" (the {len(shown)} nearest shown; --json has all)"
                if len(shown) < len(found.commits) else ""),
             f"  {'local (' + zone_name + ')':<34} {'UTC':<30} {'xid':>10}  {'commit LSN':<14}"
             f" {'gap before':>12} {'gap after':>12}  note"]
    lines += [f"  {_local(row.commit_time, zone):<34} {format_utc(row.commit_time):<30} "
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
        margin = f"{_duration(candidate.margin_seconds)} {candidate.strength[:3]}"
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
                f"({_local(exclusion.commit.commit_time, zone)}):",
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
             f"Incident at {_local(found.around, zone)} = {format_utc(found.around)}"]
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


# --- plot ---------------------------------------------------------------------------------

def _bin_seconds(span_seconds: float) -> float:
    """A round bar width giving about _OVERVIEW_BINS bars across the window."""
    wanted = span_seconds / _OVERVIEW_BINS
    return next((width for width in _BIN_SECONDS if width >= wanted), _BIN_SECONDS[-1])


def _zone_name(zone: tzinfo) -> str:
    return getattr(zone, "key", None) or str(zone)


def _boundary(found: Investigation) -> tuple[CommitRef | None, CommitRef | None]:
    """The recommended target's last kept and first dropped commits."""
    recommended = found.recommendations.recommended
    if recommended is None:
        return None, None
    return recommended.last_kept, recommended.first_dropped


def _target_instant(found: Investigation) -> datetime | None:
    """Where the recommended LSN target falls on a time axis: between the commit it keeps
    last and the one it drops first."""
    kept, dropped = _boundary(found)
    if dropped is None:
        return None
    if kept is None:
        return dropped.commit_time
    return kept.commit_time + (dropped.commit_time - kept.commit_time) / 2


def _zoom_range(found: Investigation) -> tuple[datetime, datetime]:
    """The incident, the recommended stop's two sides and the burst it cuts off, padded."""
    kept, dropped = _boundary(found)
    instants = [found.around] + [ref.commit_time for ref in (kept, dropped) if ref is not None]
    instants += [b.last.commit_time for b in found.bursts if dropped and b.first.xid == dropped.xid]
    low, high = min(instants), max(instants)
    pad = max((high - low) * 0.15, timedelta(seconds=_ZOOM_PAD_S))
    return low - pad, high + pad


def _duration(seconds: float) -> str:
    """'10s', '2m', '1.5h': a margin as the table writes it."""
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


_LABEL_BOX = {"boxstyle": "round,pad=0.2", "facecolor": "white", "edgecolor": "none",
              "alpha": 0.85}


def _mark(axes, found: Investigation, low: datetime, high: datetime) -> None:
    """The incident, the bursts in [low, high] and the recommended target, the same on both
    panels (a burst outside the panel would only crowd its legend)."""
    axes.axvline(found.around, color="black", linestyle="--", linewidth=1.2,
                 label="incident (--around)")
    for n, burst in enumerate(found.bursts, 1):
        if burst.last.commit_time >= low and burst.first.commit_time <= high:
            axes.axvspan(burst.first.commit_time, burst.last.commit_time, color="tab:red",
                         alpha=0.15, label=f"burst {n}: {burst.commits} commits in "
                                           f"{burst.seconds:.3f}s, xid {burst.first.xid}.."
                                           f"{burst.last.xid}")
    target = _target_instant(found)
    if target is not None:
        axes.axvline(target, color="tab:green", linewidth=2.2, label="recommended: "
                     + found.recommendations.recommended.target.describe())


def _overview(axes, found: Investigation, zone: tzinfo) -> None:
    """Commits per interval across the whole window, with the margin targets that fall in it."""
    window = timedelta(seconds=found.window_seconds)
    start, end = found.around - window, found.around + window
    width = _bin_seconds(2 * found.window_seconds)
    counts = Counter(int((row.commit_time - start).total_seconds() // width)
                     for row in found.commits)
    bins = sorted(counts)
    axes.bar([start + timedelta(seconds=i * width) for i in bins], [counts[i] for i in bins],
             width=width / 86400, align="edge", color="tab:blue",  # date axes count in days
             label=f"commits per {_duration(width)}")
    _mark(axes, found, start, end)
    for margin in sorted({c.margin_seconds for c in found.recommendations.margins}):
        at = found.around - timedelta(seconds=margin)
        if start <= at:
            axes.axvline(at, color="grey", linestyle=":", linewidth=1)
            axes.annotate(f"-{_duration(margin)}", (at, 0.98), xycoords=("data", "axes fraction"),
                          rotation=90, va="top", ha="right", fontsize=8, color="dimgrey")
    axes.set_xlim(start, end)
    axes.set_ylabel("commits")
    axes.set_title(f"Commits within {_duration(found.window_seconds)} of the incident at "
                   f"{_local(found.around, zone)} (dotted grey: safety-margin time targets)")
    axes.legend(loc="upper right", fontsize=8)


def _zoom(axes, found: Investigation, zone: tzinfo) -> None:
    """Each commit near the recommended stop as a stem: kept green, dropped red."""
    low, high = _zoom_range(found)
    kept, dropped = _boundary(found)
    rows = [row for row in found.commits if low <= row.commit_time <= high]
    cut = None if dropped is None else parse_lsn(dropped.lsn)
    colours = ["tab:green" if cut is None or parse_lsn(row.lsn) < cut else "tab:red"
               for row in rows]
    axes.vlines([row.commit_time for row in rows], 0, 1, colors=colours, linewidth=1)
    axes.scatter([row.commit_time for row in rows], [1] * len(rows), c=colours, s=12, zorder=3)
    _mark(axes, found, low, high)
    for ref, what, height in ((kept, "last kept", 1.2), (dropped, "first dropped", 1.45)):
        if ref is not None:
            axes.annotate(f"{what}: xid {ref.xid}\n{_local(ref.commit_time, zone)}",
                          (ref.commit_time, 1), (ref.commit_time, height), fontsize=8,
                          ha="center", bbox=_LABEL_BOX,
                          arrowprops={"arrowstyle": "->", "color": "dimgrey"})
    if kept is not None and dropped is not None:
        gap = dropped.commit_time - kept.commit_time
        axes.annotate("", (kept.commit_time, 0.5), (dropped.commit_time, 0.5),
                      arrowprops={"arrowstyle": "<->"})
        axes.annotate(f"gap {gap.total_seconds() * 1000:.3f} ms",
                      (kept.commit_time + gap / 2, 0.56), fontsize=9, ha="center",
                      bbox=_LABEL_BOX)
    axes.set_xlim(low, high)
    axes.set_ylim(0, 1.75)
    axes.set_yticks([])
    axes.set_xlabel(f"commit time ({_zone_name(zone)})")
    axes.set_title("Each commit near the recommended stop (green: kept, red: dropped)")
    axes.legend(loc="upper right", fontsize=8)


def write_plot(report: InvestigationReport, zone: tzinfo, path: Path) -> None:
    # matplotlib takes about a second to import: only --plot pays for it. Agg draws to files
    # with no display.
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import dates, pyplot, ticker

    found = report.investigation
    figure, (overview, zoom) = pyplot.subplots(2, 1, figsize=(13, 8.5), layout="constrained")
    try:
        _overview(overview, found, zone)
        overview.xaxis.set_major_formatter(dates.DateFormatter("%H:%M:%S", tz=zone))
        _zoom(zoom, found, zone)
        zoom.xaxis.set_major_formatter(ticker.FuncFormatter(
            lambda x, _: dates.num2date(x, tz=zone).strftime("%H:%M:%S.%f")[:-3]))
        figure.suptitle(f"pitrdrill investigate: {report.archive} (timeline {report.timeline})"
                        + (f", only {report.relation.relation}" if report.relation else ""))
        figure.savefig(path, dpi=110)
    finally:
        pyplot.close(figure)
