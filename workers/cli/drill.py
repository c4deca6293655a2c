"""`pitrdrill drill run|start|status|watch|result|cancel|list|decide`: drills on a Temporal
server. The drill id is the idempotency key: starting an id twice attaches to the first."""

from __future__ import annotations

import argparse
import json
import sys

from pydantic import ValidationError
from temporalio.client import WorkflowUpdateFailedError
from temporalio.service import RPCError

from domain.errors import DrillError, ErrorCode
from domain.escalation import Decision
from domain.report import DrillReport
from domain.spec import DrillSpec
from domain.targets import TargetSpec
from workers import api, output, telemetry
from workers.cli.common import (
    EXIT_FOR_STATUS,
    EXIT_OK,
    add_json,
    add_target_arguments,
    connected,
    given_target,
    load_spec,
    refusal,
)
from workers.cli.watch import watch_until_done
from workers.client import start_embedded
from workers.worker import WorkerSettings, running_workers


async def run_drill(client, spec: DrillSpec, drill_id: str, task_queue: str,
                    show_progress: bool) -> DrillReport:
    """Start (or attach to) a drill and wait for its report, naming stages as they start."""
    await api.start_drill(client, spec, drill_id, task_queue)
    last_stage = [None]

    async def say_stage() -> None:
        try:
            progress = await api.drill_progress(client, drill_id)
        except RPCError:
            return
        stage = progress.stage if progress else None
        if stage and stage != last_stage[0]:
            last_stage[0] = stage
            print(f"  … {stage}", file=sys.stderr, flush=True)

    try:
        return await api.drill_result(client, drill_id, say_stage if show_progress else None)
    except DrillError as error:
        raise refusal(error) from error


def _report_exit(report: DrillReport, as_json: bool) -> int:
    print(report.model_dump_json(indent=2) if as_json else output.summary(report))
    return EXIT_FOR_STATUS[report.status]


async def run(args: argparse.Namespace) -> int:
    spec = load_spec(args.spec)
    drill_id = args.drill_id or api.new_drill_id(spec)
    telemetry.bind_drill(drill_id)
    settings = WorkerSettings.from_env()
    if args.embedded:
        async with await start_embedded() as env:
            if not args.json:
                print(f"Temporal dev server started; UI at http://localhost:8233 "
                      f"(drill {drill_id})", file=sys.stderr)
            async with running_workers(env.client, settings):
                report = await run_drill(env.client, spec, drill_id, settings.task_queue,
                                         not args.json)
    else:
        client = await connected()
        if not args.json:
            print(f"drill {drill_id} started; follow it with: pitrdrill drill watch {drill_id}",
                  file=sys.stderr)
        report = await run_drill(client, spec, drill_id, settings.task_queue, not args.json)
    return _report_exit(report, args.json)


async def start(args: argparse.Namespace) -> int:
    spec = load_spec(args.spec)
    client = await connected()
    drill_id = await api.start_drill(client, spec, args.drill_id,
                                     WorkerSettings.from_env().task_queue)
    print(json.dumps({"status": "started", "drill_id": drill_id}) if args.json else drill_id)
    return EXIT_OK


async def status(args: argparse.Namespace) -> int:
    live = await api.drill_status(await connected(), args.drill_id)
    print(live.model_dump_json(indent=2) if args.json else output.status_text(live))
    return EXIT_OK


async def result(args: argparse.Namespace) -> int:
    try:
        report = await api.drill_result(await connected(), args.drill_id)
    except DrillError as error:
        raise refusal(error) from error
    return _report_exit(report, args.json)


async def watch(args: argparse.Namespace) -> int:
    client = await connected()
    await watch_until_done(client, args.drill_id)
    return await result(args)


async def cancel(args: argparse.Namespace) -> int:
    await api.cancel_drill(await connected(), args.drill_id)
    print(json.dumps({"status": "cancel requested", "drill_id": args.drill_id}) if args.json
          else f"drill {args.drill_id}: cancel requested; it tears its sandbox down and ends "
               f"cancelled (pitrdrill drill result {args.drill_id})")
    return EXIT_OK


async def list_(args: argparse.Namespace) -> int:
    drills = await api.list_drills(await connected(), args.database, args.status)
    if args.json:
        print(json.dumps([d.model_dump(mode="json") for d in drills], indent=2))
    else:
        print(output.drill_list_text(drills))
    return EXIT_OK


async def decide(args: argparse.Namespace) -> int:
    given = given_target(args)
    try:
        decision = Decision(action=args.decision, by=args.by, note=args.note,
                            target=TargetSpec.model_validate(given) if given else None)
    except ValidationError as exc:
        raise refusal(DrillError(ErrorCode.SPEC_INVALID, str(exc))) from exc
    try:
        answer = await api.decide(await connected(), args.drill_id, decision)
    except (RPCError, WorkflowUpdateFailedError) as exc:
        raise refusal(DrillError(
            ErrorCode.SPEC_INVALID, f"drill {args.drill_id} took no decision: {exc}")) from exc
    print(json.dumps({"status": "decided", "drill_id": args.drill_id, "answer": answer})
          if args.json else f"drill {args.drill_id}: {answer}")
    return EXIT_OK


def register(commands: argparse._SubParsersAction) -> None:
    drill = commands.add_parser("drill", help="recovery drills").add_subparsers(
        dest="drill_command", required=True)

    def command(name: str, handler, help: str, spec: bool = False, drill_id: bool = False,
                json_help: str = "print JSON") -> argparse.ArgumentParser:
        parser = drill.add_parser(name, help=help)
        if spec:
            parser.add_argument("spec", help="drill spec, YAML or JSON ('-' for stdin)")
        if drill_id:
            parser.add_argument("drill_id")
        add_json(parser, json_help)
        parser.set_defaults(handler=handler)
        return parser

    run_ = command("run", run, "run a drill from a spec and wait for the report", spec=True,
                   json_help="print only the report, as JSON")
    run_.add_argument("--embedded", action="store_true",
                      help="start a Temporal dev server and a worker in-process for this run")
    run_.add_argument("--drill-id", help="workflow id; re-running with it re-attaches")
    start_ = command("start", start, "start a drill and print its id", spec=True)
    start_.add_argument("--drill-id", help="workflow id; starting it twice attaches")
    command("status", status, "where a drill is: stage, bytes, replay LSN, rate, ETA",
            drill_id=True)
    command("watch", watch, "follow a drill live until it ends, then print its report",
            drill_id=True, json_help="print the final report as JSON")
    command("result", result, "wait for a drill's report (exit code as `run`)", drill_id=True,
            json_help="print only the report, as JSON")
    command("cancel", cancel, "cancel a drill: it tears down its sandbox", drill_id=True)
    listing = command("list", list_, "drills on this server, newest first")
    listing.add_argument("--database")
    listing.add_argument("--status", help="verified, failed, rejected, cancelled or a stage")
    decide_ = command("decide", decide, "answer an escalated drill: proceed (optionally to "
                      "another target) or abort", drill_id=True)
    decide_.add_argument("decision", choices=["proceed", "abort"])
    add_target_arguments(decide_, required=False)
    decide_.add_argument("--by", help="who decided (kept in the report)")
    decide_.add_argument("--note", help="why (kept in the report)")
