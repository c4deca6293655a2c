"""`make demo`: an incident and its recovery, on a real PostgreSQL lab and an embedded Temporal.

A legitimate commit, then 115 ms later a runaway batch job of 47 transactions voids orders.
The drill restores the base backup into a sandbox and replays to just before the first bad
commit, then proves the damage is absent and the legitimate commit is kept.

The lab, the sandboxes and the WAL index live under PITRDRILL_WORK_ROOT (default
/var/tmp/pitrdrill/demo), where the PostgreSQL OS user can reach them even when the clone sits in
a private home directory; the spec and the report are copied to var/demo/ in the clone.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from pathlib import Path
from zoneinfo import ZoneInfo

import yaml

from adapters.pg_runtime import PostgresRuntime
from adapters.reachability import ensure_reachable
from domain.errors import DrillError
from domain.report import ErrorEntry
from domain.spec import DrillSpec
from lab.lab import Lab
from lab.workload import OrdersWorkload
from workers import output, telemetry
from workers.api import new_drill_id
from workers.cli.drill import run_drill
from workers.client import start_embedded
from workers.report_page import render_html
from workers.worker import WorkerSettings, running_workers

ROOT = Path("var/demo").resolve()  # the spec and report copies: written by us, in the clone
DEFAULT_WORK_ROOT = "/var/tmp/pitrdrill/demo"
ZONE = ZoneInfo("America/New_York")


def say(text: str = "") -> None:
    print(text, flush=True)


def local(instant) -> str:
    return instant.astimezone(ZONE).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " New York"


def stage_incident(lab: Lab) -> dict:
    orders = OrdersWorkload(lab, "shop")
    orders.create()
    orders.insert_batches(3, 1000)
    lab.sql("CREATE EXTENSION pg_prewarm", "shop")  # so the drill's warm stage can use it
    say("  3000 orders written; taking a base backup with pg_basebackup")
    lab.base_backup("nightly")
    time.sleep(1.1)  # the backup's label records whole seconds
    orders.insert_batches(2, 500)
    legit = orders.insert_batch(100, "month-end close")
    time.sleep(0.115)
    damage = []
    for _ in range(47):
        damage += orders.damage(1, 20)
        time.sleep(0.03)
    orders.insert_batches(2, 50)  # business goes on after the incident
    lab.archive_all()
    return {"legit": legit, "damage": damage, "rows_at_target": legit.rows}


def work_root() -> Path:
    """Where the server user works: the lab, the sandboxes, the WAL index."""
    return Path(os.environ.get("PITRDRILL_WORK_ROOT") or DEFAULT_WORK_ROOT).resolve()


def check_reachable(work: Path, runtime: PostgresRuntime) -> None:
    """Refuse, before initdb, a work root the server user cannot reach (PATH_UNREACHABLE)."""
    for path in (work / "lab", work / "sandboxes", work / "wal-index.sqlite"):
        ensure_reachable(path, runtime.os_user, setting="PITRDRILL_WORK_ROOT",
                         example=DEFAULT_WORK_ROOT)


async def drill(spec: DrillSpec, work: Path):
    settings = WorkerSettings.from_env(sandbox_root=work / "sandboxes",
                                       index_path=work / "wal-index.sqlite",
                                       ledger=str(work / "ledger.sqlite"))
    async with await start_embedded(ui=True) as env:
        say("  Temporal dev server up: watch the workflow at http://localhost:8233")
        async with running_workers(env.client, settings):
            return await run_drill(env.client, spec, new_drill_id(spec), settings.task_queue,
                                   show_progress=True)


def main() -> int:
    telemetry.configure(logging.WARNING)
    try:
        return demo()
    except DrillError as error:  # a typed refusal with what to do, never a traceback
        print(output.error_text(ErrorEntry.from_error(error)), file=sys.stderr, flush=True)
        return 2 if error.kind == "input" else 1


def demo() -> int:
    work, runtime = work_root(), PostgresRuntime.from_env()
    check_reachable(work, runtime)
    say("pitrdrill demo: an incident, and a proven point-in-time recovery\n")
    say(f"1. Building a PostgreSQL 15 lab under {work / 'lab'} (primary with WAL archiving)")
    ROOT.mkdir(parents=True, exist_ok=True)
    with Lab(work / "lab", runtime) as lab:
        incident = stage_incident(lab)
        legit, damage = incident["legit"], incident["damage"]
        say("\n2. The incident")
        say(f"  {local(legit.commit_time)}  legitimate commit (xid {legit.xid}): keep it")
        say(f"  {local(damage[0].commit_time)}  batch job starts: 47 transactions void "
            f"{47 * 20} orders, until {local(damage[-1].commit_time)}")
        target = damage[0].commit_time.astimezone(ZONE).strftime(
            "%Y-%m-%d %H:%M:%S.%f America/New_York")
        spec = DrillSpec.model_validate({
            "database": "shop",
            "source": {"kind": "filesystem", "base_backups": str(lab.base_backups),
                       "wal_archive": str(lab.wal_archive)},
            "target": {"time": target, "inclusive": False, "action": "pause"},
            "checks": [
                {"name": "orders at target", "sql": "select count(*) from orders",
                 "expect": incident["rows_at_target"]},
                {"name": "no voided orders", "expect": 0,
                 "sql": "select count(*) from orders where status = 'void'"},
                {"name": "amounts in range", "sql": "select max(amount) from orders",
                 "expect": {"min": 0, "max": 1000}},
            ],
            # Loaded into the sandbox's cache once every check passed.
            "warm": {"relations": ["orders"]},
        })
        spec_file = ROOT / "drill.yaml"
        spec_file.write_text(yaml.safe_dump(spec.model_dump(exclude_defaults=True),
                                            sort_keys=False))
        say(f"\n3. Drill: recover to just before the first bad commit ({target}, exclusive)")
        say(f"  spec written to {spec_file}")
        report = asyncio.run(drill(spec, work))
        (ROOT / "report.json").write_text(report.model_dump_json(indent=2))
        (ROOT / "report.html").write_text(render_html(report))
    say("\n4. Report (full JSON in var/demo/report.json; a page with its stage timeline in "
        f"var/demo/report.html; in the ledger: pitrdrill report list --ledger "
        f"{work / 'ledger.sqlite'})")
    say(output.summary(report))
    if report.status != "verified":
        say("\nThe drill did not verify: see the errors above.")
        return 1
    kept = report.recovered.last_commit_time == legit.commit_time
    say(f"\nResult: the recovered database holds {report.checks[0].observed} orders and no voided "
        f"ones; the last commit kept is the legitimate one at {local(legit.commit_time)}"
        f"{'' if kept else ' (NOT as expected)'}; all 47 bad transactions are absent.")
    say("The sandbox and the lab were removed; nothing was written to the backups or the archive.")
    return 0 if kept else 1


if __name__ == "__main__":
    sys.exit(main())
