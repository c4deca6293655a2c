"""`pitrdrill investigate`: where exactly to stop, from the archived WAL, before running a drill.

Shows the commits around the incident (in the zone the time was typed in, and UTC), the quiet
gaps between them, bursts of commits that look like a runaway job, and exact targets with what
each gives up; `--plot` draws the same as a timeline. Reads the archive; writes only the WAL
index cache and the plot. Rendering lives in workers.investigation_text and
workers.investigation_plot.
"""

from __future__ import annotations

import argparse
import json
from datetime import datetime, timezone, tzinfo
from pathlib import Path

from adapters.investigation import InvestigateRequest, Investigator, RelationCatalog, WalRangeReader
from adapters.wal_index import WalIndex
from adapters.wal_index_store import WalIndexStore
from adapters.waldump import PgWaldump
from domain.errors import DrillError, ErrorCode
from domain.investigation import BurstRule, parse_window
from domain.timeparse import ParsedTime, load_zone, parse_target_time
from workers.cli import common as cli
from workers.cli.bisect import bisect_suggestion
from workers.investigation_plot import PLOT_FORMATS, require_matplotlib, write_plot
from workers.investigation_text import investigation_text
from workers.worker import WorkerSettings


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
    require_matplotlib()
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
    waldump = PgWaldump(settings.runtime)
    index = WalIndex(waldump, WalIndexStore(settings.index_path))
    return Investigator(index, WalRangeReader(waldump), RelationCatalog())


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
        body["bisect_command"] = bisect_suggestion(report, args.spec)
        print(json.dumps(body, indent=2))
    else:
        print(investigation_text(report, zone, plot))
        if (suggestion := bisect_suggestion(report, args.spec)) is not None:
            print(f"\nTo find the first bad transaction by replaying (a logarithmic number of "
                  f"probes, each a real recovery):\n  {suggestion}")
    return cli.EXIT_OK
