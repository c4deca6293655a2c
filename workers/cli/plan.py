"""`pitrdrill plan`: pre-flight only — the backup, exactly where recovery will stop, the
restorable window and an estimate. Restores nothing."""

from __future__ import annotations

import argparse
import json
from datetime import datetime, timezone

from activities.models import PlanRequest
from domain.errors import DrillError
from domain.targets import resolve_target
from workers import output
from workers.cli.common import EXIT_OK, add_json, load_spec, refusal
from workers.worker import WorkerSettings, build_planner, build_sources


async def plan(args: argparse.Namespace) -> int:
    spec = load_spec(args.spec)
    try:
        target = resolve_target(spec.target, datetime.now(timezone.utc))
        settings = WorkerSettings.from_env()
        planned = build_planner(settings, build_sources(settings)).plan(
            PlanRequest.for_spec(spec, target))
    except DrillError as error:
        raise refusal(error) from error
    if args.json:
        print(json.dumps({"status": "planned", "target": target.model_dump(mode="json"),
                          "plan": planned.plan.model_dump(mode="json"),
                          "index": planned.index.model_dump(mode="json",
                                                            exclude={"timelines"})}, indent=2))
    else:
        print(output.plan_text(target, planned))
    return EXIT_OK


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "plan", help="pre-flight: the backup, and exactly where recovery will stop; restores nothing")
    parser.add_argument("spec", help="drill spec, YAML or JSON ('-' for stdin)")
    add_json(parser)
    parser.set_defaults(handler=plan)
