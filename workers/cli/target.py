"""`pitrdrill target resolve`: a target normalized, and the exact recovery settings."""

from __future__ import annotations

import argparse
import json
from datetime import datetime, timezone

from domain.errors import DrillError
from domain.targets import TargetSpec, recovery_settings, render_settings, resolve_target
from workers import output
from workers.cli.common import EXIT_OK, add_json, add_target_arguments, given_target, refusal


async def resolve(args: argparse.Namespace) -> int:
    try:
        target = resolve_target(TargetSpec.model_validate(given_target(args)),
                                datetime.now(timezone.utc))
    except DrillError as error:
        raise refusal(error) from error
    settings = recovery_settings(target)
    if args.json:
        print(json.dumps({"target": target.model_dump(mode="json", exclude_none=True),
                          "recovery_settings": settings}, indent=2))
    else:
        print(output.target_text(target, render_settings(settings)))
    return EXIT_OK


def register(commands: argparse._SubParsersAction) -> None:
    target = commands.add_parser("target", help="recovery targets").add_subparsers(
        dest="target_command", required=True)
    parser = target.add_parser(
        "resolve", help="normalize a target and print the exact recovery settings")
    add_target_arguments(parser, required=True)
    add_json(parser)
    parser.set_defaults(handler=resolve)
