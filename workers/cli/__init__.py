"""`pitrdrill`: the command line, one module per command group. Every command takes --json;
exit codes mean something:

0 verified / ok · 1 failed while running · 2 rejected: bad input, nothing was created ·
3 Temporal unreachable · 4 cancelled.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys

from temporalio.service import RPCError

from domain.errors import DrillError, ErrorCode
from workers import output, telemetry
from workers.cli import bisect, drill, investigate, plan, recovery, report, sandbox, schedule, \
    schema, server, target, worker
from workers.cli.common import Refusal, refusal

GROUPS = (worker, server, drill, recovery, schedule, bisect, investigate, plan, target,
          sandbox, report, schema)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pitrdrill", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    for group in GROUPS:
        group.register(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    telemetry.configure(logging.INFO if args.command == "worker" else logging.WARNING)
    try:
        try:
            return asyncio.run(args.handler(args))
        except RPCError as exc:  # the server went away mid-command
            raise refusal(DrillError(ErrorCode.TEMPORAL_UNAVAILABLE, str(exc))) from exc
        except (DrillError, OSError) as exc:  # never a traceback at 3 a.m.
            error = exc if isinstance(exc, DrillError) else DrillError(
                ErrorCode.PREFLIGHT_FAILED, f"{type(exc).__name__}: {exc}")
            raise refusal(error) from exc
    except Refusal as refused:
        if getattr(args, "json", False):
            print(json.dumps({"status": refused.status, "errors": [refused.error.model_dump()]},
                             indent=2))
        elif args.command == "worker":  # a worker's stderr is its JSON log stream
            logging.getLogger("pitrdrill").error(refused.error.message, extra={
                "code": refused.error.code, "hint": refused.error.hint})
        else:
            print(output.error_text(refused.error), file=sys.stderr)
        return refused.exit_code
    except KeyboardInterrupt:
        return 130


def entry_point() -> None:
    """Console script. Exits without interpreter teardown: the SDK's native threads can abort
    a finalizing interpreter (temporalio/sdk-python#300), turning exit 3 into SIGABRT."""
    code = main()
    telemetry.flush()  # spans still in an exporter's batch: os._exit runs no atexit hook
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    entry_point()
