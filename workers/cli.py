"""`pitrdrill`: the command line. Every command takes --json; exit codes mean something:

0 verified / ok · 1 failed while running · 2 rejected: bad input, nothing was created ·
3 Temporal unreachable.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import uuid
from datetime import datetime, timezone
from pathlib import Path

import yaml
from pydantic import ValidationError
from temporalio.client import Client, WorkflowFailureError
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.client import WorkflowUpdateFailedError
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError

from domain.errors import DrillError, ErrorCode
from domain.escalation import Decision
from domain.report import DrillReport, ErrorEntry
from domain.spec import DrillSpec
from domain.targets import TargetSpec, recovery_settings, render_settings, resolve_target
from workers import investigate_cli, output, telemetry
from workers.client import connect, start_embedded
from activities.planning import PlanRequest
from workers.worker import WorkerSettings, build_planner, build_sources, build_worker
from workflows.drill import DrillProgress, DrillWorkflow

EXIT_OK, EXIT_FAILED, EXIT_REJECTED, EXIT_UNAVAILABLE = 0, 1, 2, 3
_EXIT_FOR_STATUS = {"verified": EXIT_OK, "failed": EXIT_FAILED, "rejected": EXIT_REJECTED}


class Refusal(Exception):
    """Ends a command with an error entry and an exit code (no traceback at 3 a.m.)."""

    def __init__(self, status: str, error: ErrorEntry, exit_code: int) -> None:
        super().__init__(error.message)
        self.status, self.error, self.exit_code = status, error, exit_code


def load_spec(path: str) -> DrillSpec:
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
        return DrillSpec.model_validate(yaml.safe_load(text))
    except (OSError, yaml.YAMLError) as exc:
        raise _input_refusal(DrillError(ErrorCode.SPEC_INVALID, f"cannot read {path}: {exc}"))
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'spec'}: {e['msg']}" for e in exc.errors()
        )
        raise _input_refusal(DrillError(ErrorCode.SPEC_INVALID, f"{path}: {problems}"))


def _input_refusal(error: DrillError) -> Refusal:
    if error.kind == "input":
        return Refusal("rejected", ErrorEntry.from_error(error), EXIT_REJECTED)
    return Refusal("failed", ErrorEntry.from_error(error), EXIT_FAILED)


def new_drill_id(spec: DrillSpec) -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"drill-{spec.database}-{stamp}-{uuid.uuid4().hex[:6]}"


async def run_drill(
    client: Client, spec: DrillSpec, drill_id: str, task_queue: str, show_progress: bool
) -> DrillReport:
    """Start a drill and wait for its report. Idempotent: with the id of a running drill this
    re-attaches to it; with the id of a finished one it returns that drill's report."""
    try:
        handle = await client.start_workflow(
            DrillWorkflow.run, spec, id=drill_id, task_queue=task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
        )
    except WorkflowAlreadyStartedError:
        handle = client.get_workflow_handle_for(DrillWorkflow.run, drill_id)
    result = asyncio.ensure_future(handle.result())
    last_stage = None
    while not result.done():
        await asyncio.wait([result], timeout=1.0)
        if show_progress and not result.done():
            try:
                progress: DrillProgress = await handle.query(DrillWorkflow.progress)
            except RPCError:
                continue
            if progress.stage != last_stage:
                last_stage = progress.stage
                print(f"  … {progress.stage}", file=sys.stderr, flush=True)
    try:
        return result.result()
    except WorkflowFailureError as exc:
        raise Refusal("failed", ErrorEntry.from_error(
            DrillError(ErrorCode.RECOVERY_FAILED, f"drill {drill_id} failed: {exc.cause}")
        ), EXIT_FAILED) from exc


async def _drill_run(args: argparse.Namespace) -> int:
    spec = load_spec(args.spec)
    drill_id = args.drill_id or new_drill_id(spec)
    telemetry.bind_drill(drill_id)
    settings = WorkerSettings.from_env()
    if args.embedded:
        async with await start_embedded() as env:
            if not args.json:
                print(f"Temporal dev server started; UI at http://localhost:8233 "
                      f"(drill {drill_id})", file=sys.stderr)
            async with build_worker(env.client, settings):
                report = await run_drill(env.client, spec, drill_id, settings.task_queue,
                                         not args.json)
    else:
        client = await _connect()
        report = await run_drill(client, spec, drill_id, settings.task_queue, not args.json)
    print(report.model_dump_json(indent=2) if args.json else output.summary(report))
    return _EXIT_FOR_STATUS[report.status]


async def _connect() -> Client:
    try:
        return await connect()
    except RuntimeError as exc:
        raise Refusal("failed", ErrorEntry.from_error(
            DrillError(ErrorCode.TEMPORAL_UNAVAILABLE, str(exc))
        ), EXIT_UNAVAILABLE) from exc


def _given_target(args: argparse.Namespace) -> dict:
    given = {
        "time": args.time, "lsn": args.lsn, "xid": args.xid, "name": args.name,
        "immediate": args.immediate, "latest": args.latest, "inclusive": args.inclusive,
        "action": args.action, "timeline": args.timeline,
        "assume_timezone": args.assume_timezone, "fold": args.fold,
    }
    return {k: v for k, v in given.items() if v is not None}


async def _drill_decide(args: argparse.Namespace) -> int:
    given = _given_target(args)
    try:
        decision = Decision(action=args.decision, by=args.by, note=args.note,
                            target=TargetSpec.model_validate(given) if given else None)
    except ValidationError as exc:
        raise _input_refusal(DrillError(ErrorCode.SPEC_INVALID, str(exc))) from exc
    handle = (await _connect()).get_workflow_handle(args.drill_id)
    try:
        answer = await handle.execute_update(DrillWorkflow.decide, decision)
    except (RPCError, WorkflowUpdateFailedError) as exc:
        raise _input_refusal(DrillError(
            ErrorCode.SPEC_INVALID, f"drill {args.drill_id} took no decision: {exc}")) from exc
    print(json.dumps({"status": "decided", "drill_id": args.drill_id, "answer": answer})
          if args.json else f"drill {args.drill_id}: {answer}")
    return EXIT_OK


def _add_target_arguments(parser: argparse.ArgumentParser, required: bool) -> None:
    modes = parser.add_mutually_exclusive_group(required=required)
    modes.add_argument("--time", help="e.g. '2024-01-15 14:30:00.123 America/New_York'")
    modes.add_argument("--lsn", help="e.g. 0/3000148")
    modes.add_argument("--xid", help="transaction id (32-bit or epoch-qualified 64-bit)")
    modes.add_argument("--name", help="restore point name")
    modes.add_argument("--immediate", action="store_true", default=None,
                       help="stop at the end of the base backup")
    modes.add_argument("--latest", action="store_true", default=None,
                       help="replay the whole archive")
    parser.add_argument("--inclusive", action="store_true", default=None,
                        help="replay the target transaction too (default: exclusive)")
    parser.add_argument("--action", choices=["pause", "promote", "shutdown"])
    parser.add_argument("--timeline", help="current | latest | N")
    parser.add_argument("--assume-timezone", help="zone for a time written without one")
    parser.add_argument("--fold", choices=["earlier", "later"],
                        help="which reading of a time that happened twice (DST fall-back)")


def _target_spec(args: argparse.Namespace) -> TargetSpec:
    return TargetSpec.model_validate(_given_target(args))


async def _target_resolve(args: argparse.Namespace) -> int:
    try:
        target = resolve_target(_target_spec(args), datetime.now(timezone.utc))
    except DrillError as error:
        raise _input_refusal(error) from error
    settings = recovery_settings(target)
    if args.json:
        body = {"target": target.model_dump(mode="json", exclude_none=True),
                "recovery_settings": settings}
        print(json.dumps(body, indent=2))
    else:
        print(output.target_text(target, render_settings(settings)))
    return EXIT_OK


async def _plan(args: argparse.Namespace) -> int:
    spec = load_spec(args.spec)
    try:
        target = resolve_target(spec.target, datetime.now(timezone.utc))
        settings = WorkerSettings.from_env()
        planned = build_planner(settings, build_sources(settings)).plan(
            PlanRequest.for_spec(spec, target))
    except DrillError as error:
        raise _input_refusal(error) from error
    if args.json:
        print(json.dumps({"status": "planned", "target": target.model_dump(mode="json"),
                          "plan": planned.plan.model_dump(mode="json"),
                          "index": planned.index.model_dump(mode="json",
                                                            exclude={"timelines"})}, indent=2))
    else:
        print(output.plan_text(target, planned))
    return EXIT_OK


async def _worker(args: argparse.Namespace) -> int:
    settings = WorkerSettings.from_env()
    client = await _connect()
    worker = build_worker(client, settings)
    logging.getLogger("pitrdrill").info(
        "worker started", extra={"task_queue": settings.task_queue,
                                 "sandbox_root": str(settings.sandbox_root)}
    )
    await worker.run()
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pitrdrill", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    worker = commands.add_parser("worker", help="run a worker on TEMPORAL_ADDRESS")
    worker.add_argument("--json", action="store_true", help="(logs are always JSON)")
    worker.set_defaults(handler=_worker)

    drill = commands.add_parser("drill", help="recovery drills").add_subparsers(
        dest="drill_command", required=True)
    run = drill.add_parser("run", help="run a drill from a spec and wait for the report")
    run.add_argument("spec", help="drill spec, YAML or JSON ('-' for stdin)")
    run.add_argument("--json", action="store_true", help="print only the report, as JSON")
    run.add_argument("--embedded", action="store_true",
                     help="start a Temporal dev server and a worker in-process for this run")
    run.add_argument("--drill-id", help="workflow id; re-running with it re-attaches")
    run.set_defaults(handler=_drill_run)
    decide = drill.add_parser(
        "decide", help="answer an escalated drill: proceed (optionally to another target) or abort")
    decide.add_argument("drill_id")
    decide.add_argument("decision", choices=["proceed", "abort"])
    _add_target_arguments(decide, required=False)
    decide.add_argument("--by", help="who decided (kept in the report)")
    decide.add_argument("--note", help="why (kept in the report)")
    decide.add_argument("--json", action="store_true")
    decide.set_defaults(handler=_drill_decide)
    investigate_cli.register(commands)

    plan = commands.add_parser(
        "plan", help="pre-flight: the backup, and exactly where recovery will stop; restores nothing")
    plan.add_argument("spec", help="drill spec, YAML or JSON ('-' for stdin)")
    plan.add_argument("--json", action="store_true")
    plan.set_defaults(handler=_plan)

    target = commands.add_parser("target", help="recovery targets").add_subparsers(
        dest="target_command", required=True)
    resolve = target.add_parser(
        "resolve", help="normalize a target and print the exact recovery settings")
    _add_target_arguments(resolve, required=True)
    resolve.add_argument("--json", action="store_true")
    resolve.set_defaults(handler=_target_resolve)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    telemetry.configure(logging.INFO if args.command == "worker" else logging.WARNING)
    try:
        try:
            return asyncio.run(args.handler(args))
        except RPCError as exc:  # the server went away mid-command
            raise Refusal("failed", ErrorEntry.from_error(
                DrillError(ErrorCode.TEMPORAL_UNAVAILABLE, str(exc))), EXIT_UNAVAILABLE) from exc
        except (DrillError, OSError) as exc:  # never a traceback at 3 a.m.
            error = exc if isinstance(exc, DrillError) else DrillError(
                ErrorCode.PREFLIGHT_FAILED, f"{type(exc).__name__}: {exc}")
            raise _input_refusal(error) from exc
    except Refusal as refusal:
        if getattr(args, "json", False):
            print(json.dumps({"status": refusal.status,
                              "errors": [refusal.error.model_dump()]}, indent=2))
        else:
            print(output.error_text(refusal.error), file=sys.stderr)
        return refusal.exit_code
    except KeyboardInterrupt:
        return 130


def entry_point() -> None:
    """Console script. Exits without interpreter teardown: the SDK's native threads can abort
    a finalizing interpreter (temporalio/sdk-python#300), turning exit 3 into SIGABRT."""
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    entry_point()
