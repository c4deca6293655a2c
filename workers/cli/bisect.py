"""`pitrdrill bisect SPEC --bad-when SQL [--good-at TARGET] [--bad-at TARGET]
[--relation schema.table] [--json]`: find the first bad transaction automatically.

SQL is one read-only query returning true when the damage is present (refused like a check's
SQL otherwise). A TARGET is an LSN (0/3000148), `xid:N` or a time with its zone
('2026-01-15 14:31:47.234 America/New_York', '...Z', '...-05:00'); it names the state a
recovery to it (exclusive, then pause) gives: `xid:N` is everything before N commits. The good
bound defaults to the chosen backup's consistent point, the bad one to the end of the archive.
The spec gives the source, database, db_user and sandbox options; its target and checks are
not used. `--relation` keeps only the transactions whose row changes touched the table.

The bisection is a Temporal workflow (BisectWorkflow, visible and cancellable like a drill:
`pitrdrill drill cancel ID` tears its sandbox down). It ends with the first bad commit, the
last good one, every probe, the exact target that keeps everything before the first bad
commit, and one normal drill to that target proving the predicate false there.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone

from temporalio.client import Client, WorkflowHandle
from temporalio.service import RPCError
from pydantic import ValidationError

from domain.bisect import BisectReport, BisectRequest, Probe
from domain.errors import DrillError, ErrorCode
from domain.spec import DrillSpec
from domain.targets import format_utc
from workers import api, output, telemetry
from workers.cli.common import EXIT_FOR_STATUS, connected, load_spec, refusal
from workers.client import start_embedded
from workers.worker import TASK_QUEUE, WorkerSettings, running_workers
from workflows.bisect import BisectWorkflow


def new_bisect_id(spec: DrillSpec) -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"bisect-{spec.database}-{stamp}-{uuid.uuid4().hex[:6]}"


def bisect_request(spec: DrillSpec, bad_when: str, good_at: str | None = None,
                   bad_at: str | None = None, relation: str | None = None) -> BisectRequest:
    """The workflow's input, with the predicate and both bounds checked (a DrillError with
    the code of what is wrong, before anything starts)."""
    try:
        request = BisectRequest(spec=spec, bad_when=bad_when, good_at=good_at, bad_at=bad_at,
                                relation=relation)
    except ValidationError as exc:
        raise DrillError(ErrorCode.SPEC_INVALID, str(exc)) from None
    return request.validated(datetime.now(timezone.utc))


async def start_bisect(client: Client, request: BisectRequest, bisect_id: str | None = None,
                       task_queue: str = TASK_QUEUE) -> str:
    """Start (or attach to: the id is the idempotency key) a bisection; returns its id."""
    return await api.start_workflow_once(
        client, BisectWorkflow.run, request, bisect_id or new_bisect_id(request.spec),
        task_queue, request.spec.database, "bisect",
        f"BISECT {request.spec.database}: first commit where {request.bad_when[:80]}")


async def bisect_result(client: Client, bisect_id: str,
                        while_waiting: Callable[[], Awaitable[None]] | None = None
                        ) -> BisectReport:
    return await api.drill_result(client, bisect_id, while_waiting,
                                  result_type=BisectReport)  # type: ignore[return-value]


async def run_bisect(client: Client, request: BisectRequest, bisect_id: str, task_queue: str,
                     show_progress: bool) -> BisectReport:
    """Start (or attach to) a bisection and wait for its report, naming probes as they end."""
    await start_bisect(client, request, bisect_id, task_queue)
    handle: WorkflowHandle = client.get_workflow_handle(bisect_id)
    said = [0, None]

    async def say() -> None:
        try:
            progress = await api.drill_progress(client, bisect_id)
            probes = await handle.query(BisectWorkflow.probes)
        except RPCError:
            return
        stage = progress.stage if progress else None
        if stage and stage != said[1]:
            said[1] = stage
            print(f"  … {stage}", file=sys.stderr, flush=True)
        for probe in probes[said[0]:]:
            print(f"    {_probe_line(Probe.model_validate(probe))}", file=sys.stderr, flush=True)
        said[0] = len(probes)

    try:
        return await bisect_result(client, bisect_id, say if show_progress else None)
    except DrillError as error:
        raise refusal(error) from error


# --- rendering ---------------------------------------------------------------------------------

def _probe_line(probe: Probe) -> str:
    if probe.role in ("good_bound", "bad_bound"):
        where = probe.role.replace("_", " ")
    else:
        where = f"before {probe.stopped_before.describe()}" if probe.stopped_before \
            else probe.target.describe()
    extra = "".join(f", +{value:.3f}s {what}" for what, value in
                    (("back to the clean state", probe.state_seconds),
                     ("keeping it", probe.keep_seconds)) if value)
    verdict = "DAMAGED" if probe.damaged else "clean"
    return (f"probe {probe.number:>2} {probe.role:<10} pos {probe.position:>6}  "
            f"{verdict:<7} {where}  [{probe.start}, {probe.seconds:.3f}s{extra}]")


def bisect_text(report: BisectReport) -> str:
    mark = {"verified": "VERIFIED", "failed": "FAILED", "rejected": "REJECTED"}
    lines = [f"Bisect {report.drill_id}: {mark.get(report.status, report.status.upper())}",
             f"  predicate     {report.predicate}"]
    if report.base_backup:
        lines.append(f"  base backup   {report.base_backup.id} (WAL {report.base_backup.start_lsn}"
                     f" .. {report.base_backup.stop_lsn})")
    for name, bound in (("good bound", report.good), ("bad bound", report.bad)):
        if bound is not None:
            lines.append(f"  {name:<13} {bound.description}")
    if report.candidates:
        skipped = f"; {report.aborted_skipped} aborted transaction(s) skipped" \
            if report.aborted_skipped else ""
        lines.append(f"  candidates    {report.candidates} commit(s) between the bounds{skipped}")
    if report.relation:
        lines.append(f"  relation      {report.relation.relation} (rel {report.relation.locator}):"
                     f" {report.relation.candidates} of {report.relation.commits_between} "
                     "commits touched it")
    finding = report.finding
    if finding is not None:
        last_good = finding.last_good.describe() if finding.last_good else "none"
        lines += [f"  FIRST BAD     {finding.first_bad.describe()}",
                  f"  last good     {last_good}",
                  f"  target        {finding.target.describe()}: keeps everything before the "
                  "first bad commit",
                  f"                (a drill spec's target: {{xid: {finding.first_bad.xid}, "
                  f"inclusive: false, action: pause}})"]
        if report.untested_commits_after_first_bad:
            lines.append(f"  note          {report.untested_commits_after_first_bad} commit(s) "
                         "that did not touch the relation were applied with the first bad one")
    if report.probes:
        searched = sum(1 for p in report.probes if p.role != "confirm")
        lines.append(f"  probes        {searched} (at most {report.max_probes} = "
                     f"ceil(log2 {report.candidates}) + 2)")
        lines += [f"    {_probe_line(p)}" for p in report.probes]
    if report.confirmation is not None:
        drill = report.confirmation
        lines.append(f"  confirmed by  drill {drill.drill_id}: "
                     f"{mark.get(drill.status, drill.status)}")
        for check in drill.checks:
            lines.append(f"    check [{'pass' if check.passed else 'FAIL'}] {check.name}: "
                         f"observed {check.observed!r}, expected {check.expected!r}"
                         + (f" ({check.error})" if check.error else ""))
    timing = [f"{stage} {seconds:.2f}s" for stage, seconds in report.metrics.stage_seconds.items()]
    if timing:
        total = (report.finished_at - report.started_at).total_seconds() \
            if report.finished_at and report.started_at else None
        lines.append("  took          " + ", ".join(timing)
                     + (f"; total {total:.2f}s" if total is not None else ""))
    if report.finished_at:
        lines.append(f"  finished      {format_utc(report.finished_at)}")
    lines += [output.error_text(error) for error in report.errors]
    return "\n".join(lines)


def bisect_suggestion(report, spec: str | None) -> str | None:
    """For `pitrdrill investigate` (an InvestigationReport): when it found a burst, the
    bisect command that finds the first bad transaction from the state just before the burst
    nearest the incident (refused, saying so, if the damage is older). None without one."""
    found = report.investigation
    if not found.bursts:
        return None
    burst = min(found.bursts, key=lambda b: abs(b.first.commit_time - found.around))
    spec_arg = shlex.quote(spec) if spec and spec != "-" else "SPEC"
    return (f"pitrdrill bisect {spec_arg} --good-at xid:{burst.first.xid} "
            "--bad-when '<one query, true once the damage is there>'")


# --- the command -----------------------------------------------------------------------------

async def bisect_command(args: argparse.Namespace) -> int:
    spec = load_spec(args.spec)
    try:
        request = bisect_request(spec, args.bad_when, args.good_at, args.bad_at, args.relation)
    except DrillError as error:
        raise refusal(error) from error
    bisect_id = args.bisect_id or new_bisect_id(spec)
    telemetry.bind_drill(bisect_id)
    settings = WorkerSettings.from_env()
    if args.embedded:
        async with await start_embedded() as env:
            async with running_workers(env.client, settings):
                report = await run_bisect(env.client, request, bisect_id, settings.task_queue,
                                          not args.json)
    else:
        client = await connected()
        if not args.json:
            print(f"bisect {bisect_id} started; cancel with: pitrdrill drill cancel {bisect_id}",
                  file=sys.stderr)
        report = await run_bisect(client, request, bisect_id, settings.task_queue,
                                  not args.json)
    print(report.model_dump_json(indent=2) if args.json else bisect_text(report))
    return EXIT_FOR_STATUS[report.status]


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "bisect", help="find the first bad transaction: replay, judge, halve",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("spec", help="drill spec, YAML or JSON ('-' for stdin): source, "
                                     "database, db_user")
    parser.add_argument("--bad-when", required=True, metavar="SQL",
                        help="one read-only query, true when the damage is present")
    parser.add_argument("--good-at", metavar="TARGET",
                        help="a clean state (default: the backup's consistent point)")
    parser.add_argument("--bad-at", metavar="TARGET",
                        help="a damaged state (default: the end of the archive)")
    parser.add_argument("--relation", help="only transactions that changed rows of this table: "
                                           "schema.table or tablespace/database/relfilenode")
    parser.add_argument("--bisect-id", help="workflow id; starting it twice attaches")
    parser.add_argument("--embedded", action="store_true",
                        help="start a Temporal dev server and a worker in-process for this run")
    parser.add_argument("--json", action="store_true", help="print only the report, as JSON")
    parser.set_defaults(handler=bisect_command)
