"""`pitrdrill recover` and `pitrdrill recovery approve|abort|status|result`: a real recovery
into a destination data directory, promoted only when a human approves."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from pydantic import ValidationError
from temporalio.client import WorkflowUpdateFailedError
from temporalio.service import RPCError

from domain.errors import DrillError, ErrorCode
from domain.recovery import Abort, Approval, RecoverySpec
from domain.stages import Stage
from workers import api, output
from workers.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_REJECTED,
    add_json,
    connected,
    load_spec,
    refusal,
)
from workers.worker import WorkerSettings

_EXIT = {"verified": EXIT_OK, "promoted": EXIT_OK, "paused": EXIT_OK, "failed": EXIT_FAILED,
         "rejected": EXIT_REJECTED}


async def recover(args: argparse.Namespace) -> int:
    spec = load_spec(args.spec, RecoverySpec, destination=args.destination, host=args.host)
    client = await connected()
    recovery_id = await api.start_recovery(client, spec, args.recovery_id,
                                           WorkerSettings.from_env().task_queue)
    if not args.json:
        print(f"recovery {recovery_id} started into {spec.destination}", file=sys.stderr)
    while True:  # until it waits for a human, or ends without needing one
        progress = await api.drill_progress(client, recovery_id)
        if progress is not None and (progress.finished or
                                     progress.stage == Stage.AWAITING_APPROVAL):
            break
        await asyncio.sleep(0.5)
    if progress.finished:
        try:
            report = await api.recovery_result(client, recovery_id)
        except DrillError as error:
            raise refusal(error) from error
        print(report.model_dump_json(indent=2) if args.json else output.summary(report))
        return _EXIT[report.status]
    body = {"status": "awaiting_approval", "recovery_id": recovery_id,
            "destination": spec.destination,
            "approve": f"pitrdrill recovery approve {recovery_id} --by NAME --reason TEXT",
            "abort": f"pitrdrill recovery abort {recovery_id} --by NAME --reason TEXT"}
    print(json.dumps(body, indent=2) if args.json else
          f"recovery {recovery_id}: every check passed; paused, read-only, no TCP listener.\n"
          f"  promote: {body['approve']} [--listen-addresses A --port P]\n"
          f"  or keep it paused: {body['abort']}")
    return EXIT_OK


async def _decide(args: argparse.Namespace, send, answer) -> int:
    try:
        said = await send(await connected(), args.recovery_id, answer)
    except (RPCError, WorkflowUpdateFailedError) as exc:
        cause = getattr(exc, "cause", None) or exc
        raise refusal(DrillError(ErrorCode.SPEC_INVALID,
                                 f"recovery {args.recovery_id} refused: {cause}",
                                 "See `pitrdrill recovery status ID`.")) from exc
    report = await api.recovery_result(await connected(), args.recovery_id)
    if args.json:
        print(report.model_dump_json(indent=2))
    else:
        print(f"recovery {args.recovery_id}: {said}\n{output.summary(report)}")
    return _EXIT[report.status]


async def approve(args: argparse.Namespace) -> int:
    try:
        approval = Approval(by=args.by, reason=args.reason,
                            listen_addresses=args.listen_addresses, port=args.port)
    except ValidationError as exc:
        raise refusal(DrillError(ErrorCode.SPEC_INVALID, str(exc))) from exc
    return await _decide(args, api.approve_promotion, approval)


async def abort(args: argparse.Namespace) -> int:
    try:
        answer = Abort(by=args.by, reason=args.reason)
    except ValidationError as exc:
        raise refusal(DrillError(ErrorCode.SPEC_INVALID, str(exc))) from exc
    return await _decide(args, api.abort, answer)


async def status(args: argparse.Namespace) -> int:
    live = await api.drill_status(await connected(), args.recovery_id)
    print(live.model_dump_json(indent=2) if args.json else output.status_text(live))
    return EXIT_OK


async def result(args: argparse.Namespace) -> int:
    try:
        report = await api.recovery_result(await connected(), args.recovery_id)
    except DrillError as error:
        raise refusal(error) from error
    print(report.model_dump_json(indent=2) if args.json else output.summary(report))
    return _EXIT[report.status]


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "recover", help="a real recovery into --destination: proven like a drill, then paused "
                        "until `pitrdrill recovery approve`")
    parser.add_argument("spec", help="drill spec, YAML or JSON ('-' for stdin)")
    parser.add_argument("--destination", help="data directory to create: absent or empty")
    parser.add_argument("--host", help="host id (PITRDRILL_HOST_ID) whose worker restores")
    parser.add_argument("--recovery-id", help="workflow id; starting it twice attaches")
    add_json(parser)
    parser.set_defaults(handler=recover)

    recovery = commands.add_parser("recovery", help="answer or follow a recovery").add_subparsers(
        dest="recovery_command", required=True)
    for name, handler, help in (("approve", approve, "promote a recovery waiting for approval"),
                                ("abort", abort, "leave a waiting recovery paused, read-only")):
        sub = recovery.add_parser(name, help=help)
        sub.add_argument("recovery_id")
        sub.add_argument("--by", required=True, help="who decides (kept in the report)")
        sub.add_argument("--reason", required=True, help="why (kept in the report)")
        if name == "approve":
            sub.add_argument("--listen-addresses", default="localhost",
                             help="listen_addresses after promotion (default localhost)")
            sub.add_argument("--port", type=int, default=5432, help="port after promotion")
        add_json(sub)
        sub.set_defaults(handler=handler)
    for name, handler, help in (("status", status, "stage, progress and rate of a recovery"),
                                ("result", result, "wait for a recovery's report")):
        sub = recovery.add_parser(name, help=help)
        sub.add_argument("recovery_id")
        add_json(sub)
        sub.set_defaults(handler=handler)
