"""`pitrdrill schedule create|list|describe|delete|trigger`: drills that Temporal fires by
itself (Temporal Schedules), e.g. every night at another point of the restorable window:

    pitrdrill schedule create shop-nightly --spec drill.yaml --cron "30 2 * * *" \\
        --timezone Europe/Paris --synthetic-target random-in-window
"""

from __future__ import annotations

import argparse
import json

from domain.errors import DrillError, ErrorCode
from domain.synthetic import FORMS, parse_duration
from domain.timeparse import format_utc, load_zone
from workers import schedules
from workers.cli.common import EXIT_OK, add_json, connected, load_spec, refusal
from workers.worker import WorkerSettings


def _when(schedule: schedules.DrillSchedule) -> str:
    if schedule.cron:
        return f"cron {schedule.cron!r} ({schedule.timezone or 'UTC'})"
    if schedule.every_seconds:
        return f"every {schedule.every_seconds:g}s"
    return "?"


def _text(schedule: schedules.DrillSchedule, full: bool) -> str:
    lines = [f"schedule {schedule.name}: drills of {schedule.database or '?'}, {_when(schedule)}"
             + (", PAUSED" if schedule.paused else "")]
    lines.append(f"  target       {schedule.synthetic_target or 'as the spec says'}"
                 + (" (synthetic: each run picks its own instant)"
                    if schedule.synthetic_target else ""))
    if schedule.next_runs:
        upcoming = schedule.next_runs[0]
        local = f" (= {upcoming.astimezone(load_zone(schedule.timezone)):%Y-%m-%d %H:%M:%S} " \
                f"{schedule.timezone})" if schedule.timezone else ""
        lines.append(f"  next         {format_utc(upcoming)}{local}")
    if full:
        lines.append(f"  policy       overlap {schedule.overlap}, catch-up window "
                     f"{schedule.catchup_window_seconds or 0:g}s; task queue "
                     f"{schedule.task_queue}")
        lines.append(f"  runs         {schedule.runs_total} started, "
                     f"{schedule.skipped_overlapping} skipped (previous still running), "
                     f"{schedule.missed_catchup_window} missed")
        lines += [f"  running      {drill_id}" for drill_id in schedule.running]
    lines += [f"  ran          {run.drill_id} (scheduled {format_utc(run.scheduled_at)})"
              for run in schedule.recent_runs[-5:]]
    return "\n".join(lines)


def _print(value, as_json: bool, text: str) -> None:
    print(json.dumps(value, indent=2) if as_json else text)


async def create(args: argparse.Namespace) -> int:
    spec = load_spec(args.spec, synthetic_target=args.synthetic_target)
    try:
        every = parse_duration(args.every) if args.every else None
    except ValueError as exc:
        raise refusal(DrillError(ErrorCode.SPEC_INVALID, f"--every: {exc}")) from exc
    try:
        created = await schedules.create(
            await connected(), args.name, spec, cron=args.cron, every=every,
            timezone=args.timezone, task_queue=WorkerSettings.from_env().task_queue)
    except DrillError as error:
        raise refusal(error) from error
    _print({"status": "created", "schedule": created.model_dump(mode="json")}, args.json,
           _text(created, full=False) + f"\n  created: pitrdrill schedule describe {args.name}")
    return EXIT_OK


async def list_(args: argparse.Namespace) -> int:
    found = await schedules.list_schedules(await connected(), args.database)
    _print([s.model_dump(mode="json", exclude_none=True) for s in found], args.json,
           "\n".join(_text(s, full=False) for s in found) or "no drill schedules")
    return EXIT_OK


async def describe(args: argparse.Namespace) -> int:
    try:
        found = await schedules.describe(await connected(), args.name)
    except DrillError as error:
        raise refusal(error) from error
    _print(found.model_dump(mode="json"), args.json, _text(found, full=True))
    return EXIT_OK


async def delete(args: argparse.Namespace) -> int:
    try:
        await schedules.delete(await connected(), args.name)
    except DrillError as error:
        raise refusal(error) from error
    _print({"status": "deleted", "schedule": args.name}, args.json,
           f"schedule {args.name} deleted; drills it started run on")
    return EXIT_OK


async def trigger(args: argparse.Namespace) -> int:
    try:
        drill_id = await schedules.trigger(await connected(), args.name)
    except DrillError as error:
        raise refusal(error) from error
    _print({"status": "triggered", "schedule": args.name, "drill_id": drill_id}, args.json,
           f"schedule {args.name} fired: drill {drill_id or '(starting)'}"
           + (f"; follow it with: pitrdrill drill watch {drill_id}" if drill_id else ""))
    return EXIT_OK


def register(commands: argparse._SubParsersAction) -> None:
    group = commands.add_parser("schedule", help="drills Temporal runs by itself (cron or "
                                "interval), optionally at a synthetic target").add_subparsers(
        dest="schedule_command", required=True)

    def command(name: str, handler, help: str, named: bool = True) -> argparse.ArgumentParser:
        parser = group.add_parser(name, help=help)
        if named:
            parser.add_argument("name", help="schedule name (its Temporal schedule id)")
        add_json(parser)
        parser.set_defaults(handler=handler)
        return parser

    create_ = command("create", create, "schedule a drill")
    create_.add_argument("--spec", required=True, help="drill spec, YAML or JSON ('-' for stdin)")
    when = create_.add_mutually_exclusive_group(required=True)
    when.add_argument("--cron", help="cron expression, e.g. '30 2 * * *' (02:30 every day)")
    when.add_argument("--every", help="fixed interval instead, e.g. 6h, 30m, 5s")
    create_.add_argument("--timezone", help="IANA zone the cron expression is read in "
                         "(default UTC), e.g. Europe/Paris")
    create_.add_argument("--synthetic-target", metavar="MODE",
                         help=f"each run picks its own target: {FORMS}")
    listing = command("list", list_, "drill schedules on this server", named=False)
    listing.add_argument("--database")
    command("describe", describe, "a schedule: spec, policy, next and recent runs")
    command("delete", delete, "delete a schedule (drills it started run on)")
    command("trigger", trigger, "run a schedule's drill now (even while one runs)")
