"""`pitrdrill report show|list|summary`: the drill ledger, as an auditor reads it. Reads only
the ledger (--ledger, default PITRDRILL_LEDGER as the workers use it): no Temporal needed.

Exit codes: 0 shown; 2 no such drill (REPORT_NOT_FOUND) or an unreadable query
(LEDGER_QUERY_INVALID); 1 the ledger cannot be read (LEDGER_UNAVAILABLE).
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from pathlib import Path

from adapters.ledger import Ledger, open_ledger
from domain.errors import DrillError, ErrorCode
from domain.ledger import LedgerListing, LedgerQuery, LedgerSummary, since_instant, summary
from domain.targets import format_utc
from workers import output
from workers.cli.common import EXIT_OK, add_json, refusal
from workers.report_page import render_html, render_markdown
from workers.worker import WorkerSettings


def _ledger(args: argparse.Namespace) -> Ledger:
    return open_ledger(args.ledger or WorkerSettings.from_env().ledger)


def _query(args: argparse.Namespace, now: datetime) -> LedgerQuery:
    since = since_instant(args.since, now) if args.since else None
    return LedgerQuery(database=args.database, since=since)


async def show(args: argparse.Namespace) -> int:
    ledger = _ledger(args)
    record = ledger.record(args.drill_id)
    if record is None:
        raise refusal(DrillError(ErrorCode.REPORT_NOT_FOUND,
                                 f"no drill {args.drill_id!r} in the ledger {ledger.where}"))
    report = record.report
    if args.html:
        Path(args.html).write_text(render_html(report), encoding="utf-8")
    if args.json:
        print(report.model_dump_json(indent=2))
    elif args.markdown:
        print(render_markdown(report), end="")
    else:
        print(output.summary(report))
    return EXIT_OK


async def list_(args: argparse.Namespace) -> int:
    query = _query(args, datetime.now(UTC))
    listings = [LedgerListing.of(r) for r in _ledger(args).records(query)]
    if args.json:
        print(json.dumps([listing.model_dump(mode="json") for listing in listings], indent=2))
    else:
        print(listing_text(listings))
    return EXIT_OK


async def summary_(args: argparse.Namespace) -> int:
    now = datetime.now(UTC)
    query = _query(args, now)
    result = summary(_ledger(args).records(query), query.since, now)
    print(result.model_dump_json(indent=2) if args.json else summary_text(result))
    return EXIT_OK


def listing_text(listings: list[LedgerListing]) -> str:
    if not listings:
        return "no drills in the ledger for that query"
    rows = [f"{'FINISHED':<29} {'DRILL':<44} {'KIND':<8} {'DATABASE':<12} {'STATUS':<9} "
            f"{'VERIFY':>9} {'GIVEN UP':>10}"]
    rows += [f"{format_utc(x.finished_at):<29} {x.drill_id:<44} {x.kind:<8} {x.database:<12} "
             f"{x.status:<9} {output.seconds_text(x.time_to_verify_seconds):>9} "
             f"{output.seconds_text(x.data_given_up_seconds):>10}" for x in listings]
    return "\n".join(rows)


def summary_text(result: LedgerSummary) -> str:
    since = format_utc(result.since) if result.since else "the first entry"
    lines = [f"Ledger from {since} to {format_utc(result.until)}: {result.records} finished"]
    for d in result.databases:
        rate = "-" if d.pass_rate is None else f"{d.pass_rate:.0%}"
        lines += [f"  {d.database}: drills {d.drills}, recoveries {d.recoveries}, "
                  f"passed {d.passed} ({rate})",
                  "    median time to verify "
                  f"{output.seconds_text(d.median_time_to_verify_seconds)}; worst data given up "
                  f"{output.seconds_text(d.worst_data_given_up_seconds)}"
                  + (f" ({d.worst_data_given_up_by})" if d.worst_data_given_up_by else "")]
        if d.fallbacks:
            lines.append(f"    {d.fallbacks} fell back; worst gave up at least "
                         f"{d.worst_transactions_given_up} transactions")
        if d.window and d.window.share is not None:
            w = d.window
            lines.append(f"    window proven {w.share:.1%}: {output.span(w.proven_seconds)} of "
                         f"{output.span(w.window_seconds)} ({format_utc(w.earliest)} .. "
                         f"{format_utc(w.latest)})")
    return "\n".join(lines)


def register(commands: argparse._SubParsersAction) -> None:
    group = commands.add_parser(
        "report", help="finished drills and recoveries from the drill ledger").add_subparsers(
        dest="report_command", required=True)

    def command(name: str, handler, help: str) -> argparse.ArgumentParser:
        parser = group.add_parser(name, help=help)
        parser.add_argument("--ledger", help="SQLite file or postgresql:// DSN "
                                             "(default: PITRDRILL_LEDGER, as the workers)")
        add_json(parser)
        parser.set_defaults(handler=handler)
        return parser

    show_ = command("show", show, "one report: text, --json, --markdown, and/or --html FILE")
    show_.add_argument("drill_id", metavar="ID", help="drill or recovery id")
    show_.add_argument("--html", metavar="FILE",
                       help="also write a self-contained HTML page with a stage timeline")
    show_.add_argument("--markdown", action="store_true", help="print Markdown")
    for name, handler, help in (
            ("list", list_, "finished drills and recoveries, newest first"),
            ("summary", summary_, "per database: pass rate, median time to verify, worst "
                                  "data given up, share of the restorable window proven")):
        parser = command(name, handler, help)
        parser.add_argument("--database")
        parser.add_argument("--since", help="30d, 12h, 90m, 2w, a date, or a zoned time")
