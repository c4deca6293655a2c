"""`python -m bench.bisect`: a whole bisection beside one drill to the same backup, on the
2,000-commit lab, and their ratio (the issue's goal: at most 3x).

The lab: an orders table, a base backup, then 2,000 small commits in autocommit, one of which
voids 20 orders (and a few aborted transactions). The drill recovers to the exclusive xid of
that transaction (the target the bisection ends with) with no checks; the bisection starts from
nothing known (default bounds: the backup's consistent point, the end of the archive) and
includes its confirming drill. Both run through one embedded Temporal dev server and one worker
in this process, alternating (drill, bisect, drill, bisect, ...) after one warm-up drill that
builds the WAL index, so both sides find it built.

It prints one row as `make bench` does (bench.stats: medians, ratio, PASS/MISS against the
goal), where a median bisection spent its time, and writes bench/results/<time>-bisect.json.
`make bench` runs it after the other figures.

BENCH_BISECT_RUNS (default 3) runs a side; BENCH_BISECT_BASE_MB (default 0) pads the backup
with that many MB of a table the workload never touches: both restores grow with it, the
probes and the kept clean states do not (they read untouched files from the backup).
Everything lives under one directory in /var/tmp, removed at the end.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import psycopg

from adapters.pg_runtime import PostgresRuntime, remove_tree
from bench.run import RESULTS
from bench.stats import Goal, Row, Sample
from bench.stats import render as render_rows
from domain.bisect import BisectReport
from domain.spec import DrillSpec
from lab.lab import Lab, Marker
from lab.workload import OrdersWorkload
from workers import telemetry
from workers.cli.bisect import bisect_request, run_bisect
from workers.cli.drill import run_drill
from workers.client import start_embedded
from workers.worker import WorkerSettings, running_workers

COMMITS = 2000
DAMAGE_AT = 1234
GOAL = 3.0
PREDICATE = "select count(*) > 0 from orders where status = 'void'"


@dataclass
class Haystack:
    lab: Lab
    damage: Marker
    backup_bytes: int

    def spec(self, target: dict) -> DrillSpec:
        return DrillSpec.model_validate({
            "database": "demo", "target": target,
            "source": {"kind": "filesystem", "base_backups": str(self.lab.base_backups),
                       "wal_archive": str(self.lab.wal_archive)}})


def build(lab: Lab, pad_mb: int) -> Haystack:
    orders = OrdersWorkload(lab, "demo")
    orders.create()
    orders.insert_batches(2, 100)
    if pad_mb:
        lab.sql("CREATE TABLE ballast (id int, pad text)", "demo")
        lab.sql("ALTER TABLE ballast ALTER COLUMN pad SET STORAGE PLAIN", "demo")
        lab.sql(f"INSERT INTO ballast SELECT g, repeat('x', 900) "
                f"FROM generate_series(1, {pad_mb * 1024}) g", "demo")
    backup = lab.base_backup("base")
    time.sleep(1.1)  # backup labels carry whole seconds
    damage = None
    with psycopg.connect(lab.primary.conninfo("demo"), autocommit=True) as conn:
        for n in range(COMMITS):
            if n == DAMAGE_AT:
                damage = lab.commit("demo", [
                    "UPDATE orders SET status = 'void' WHERE id BETWEEN 11 AND 30"], "damage", 0)
                continue
            if n % 400 == 17:
                with conn.transaction(force_rollback=True):
                    conn.execute("INSERT INTO orders (customer, amount) VALUES (7, 1.5)")
            conn.execute("INSERT INTO orders (customer, amount) VALUES (7, 1.5)")
    lab.archive_all()
    size = sum(f.stat().st_size for f in backup.rglob("*") if f.is_file())
    assert damage is not None
    return Haystack(lab=lab, damage=damage, backup_bytes=size)


@dataclass
class Runs:
    drills: list[float] = field(default_factory=list)
    drill_stages: list[dict] = field(default_factory=list)
    bisects: list[float] = field(default_factory=list)
    reports: list[BisectReport] = field(default_factory=list)


async def measure(data: Haystack, root: Path, runtime: PostgresRuntime, runs: int,
                  say) -> Runs:
    settings = dataclasses.replace(
        WorkerSettings.from_env(), task_queue="pitrdrill-bench-bisect", runtime=runtime,
        sandbox_root=root / "sandboxes", index_path=root / "wal-index.sqlite",
        ledger=str(root / "ledger.sqlite"))
    drill_spec = data.spec({"xid": data.damage.xid, "inclusive": False, "action": "pause"})
    request = bisect_request(data.spec({"latest": True}), PREDICATE)
    result = Runs()
    async with await start_embedded(ui=False) as env, running_workers(env.client, settings):
        async def drill() -> float:
            began = time.perf_counter()
            report = await run_drill(env.client, drill_spec, f"bench-{uuid.uuid4().hex[:8]}",
                                     settings.task_queue, show_progress=False)
            if report.status != "verified":
                raise RuntimeError(f"drill {report.drill_id} {report.status}: {report.errors}")
            result.drill_stages.append(dict(report.metrics.stage_seconds))
            return time.perf_counter() - began

        say("warm-up drill (builds the WAL index)")
        await drill()
        for n in range(runs):
            result.drills.append(await drill())
            began = time.perf_counter()
            report = await run_bisect(env.client, request, f"bench-bisect-{uuid.uuid4().hex[:8]}",
                                      settings.task_queue, show_progress=False)
            result.bisects.append(time.perf_counter() - began)
            if report.status != "verified" or report.finding.first_bad.xid != data.damage.xid:
                raise RuntimeError(f"bisect {report.drill_id} {report.status}: {report.errors}")
            result.reports.append(report)
            say(f"run {n + 1}/{runs}: drill {result.drills[-1]:.2f} s, "
                f"bisect {result.bisects[-1]:.2f} s")
    return result


def row(data: Haystack, runs: Runs) -> Row:
    """The bench row: bisect seconds beside one drill's (medians), the ratio against the goal,
    and where a median bisection spent its time."""
    report = runs.reports[len(runs.reports) // 2]
    probes = [p for p in report.probes if p.role != "confirm"]
    probe_s = [p.seconds for p in probes]
    keep_s = sum(p.keep_seconds for p in probes)
    return_s = sum(p.state_seconds for p in probes)
    confirm = report.confirmation
    confirm_s = (confirm.finished_at - confirm.started_at).total_seconds() if confirm else 0.0
    stages = report.metrics.stage_seconds
    drill_stages = runs.drill_stages[len(runs.drill_stages) // 2]
    return Row(
        section="B", figure=f"bisect, {COMMITS:,} commits, confirming drill incl.",
        baseline_name="one drill to the same backup", baseline=Sample(tuple(runs.drills)),
        candidate=Sample(tuple(runs.bisects)), goal=Goal(f"<= {GOAL:g}x one drill", GOAL, "ratio"),
        details=[
            f"backup {data.backup_bytes / 1e6:.0f} MB; {len(runs.drills)} runs a side, "
            "alternating; the drill recovers to the exclusive xid of the damage, no checks",
            "one drill, by stage:  " + ", ".join(f"{k} {v:.2f}" for k, v in drill_stages.items()),
            "one bisect, by stage: " + ", ".join(f"{k} {v:.2f}" for k, v in stages.items()),
            f"its probes: {len(probes)} (at most {report.max_probes}) for {report.candidates} "
            f"candidates: {sum(probe_s):.2f} s restarting, replaying and judging (median "
            f"{statistics.median(probe_s):.3f} s each), {keep_s:.2f} s keeping clean states, "
            f"{return_s:.2f} s returning to them; the confirming drill {confirm_s:.2f} s",
            "each probe: " + " ".join(
                f"{p.number}:{p.start[0]}{'D' if p.damaged else 'c'}"
                f"{p.seconds + p.state_seconds + p.keep_seconds:.2f}" for p in probes)
            + "  (r restore, f forward, g from the kept state; D damaged, c clean; seconds "
              "with its keep and return)",
        ],
        runs={"drill": runs.drill_stages,
              "bisect": [dict(r.metrics.stage_seconds) for r in runs.reports]},
    )


def render(data: Haystack, runs: Runs) -> tuple[Row, str]:
    measured = row(data, runs)
    ratio = f"ratio {measured.ratio:.2f}" if measured.ratio is not None else "no ratio"
    goal = f"  {measured.verdict:4} B   bisect among {COMMITS:,} commits  {ratio}  " \
           f"(goal {measured.goal.text})" if measured.goal else ""
    return measured, "\n".join([
        "pitrdrill bench: bisect beside one drill to the same backup; ratio = bisect time / "
        "drill time", "", render_rows([measured]), "", "goals:", goal])


def main() -> int:
    telemetry.configure(logging.WARNING)
    runs = int(os.environ.get("BENCH_BISECT_RUNS", "3"))
    pad_mb = int(os.environ.get("BENCH_BISECT_BASE_MB", "0"))
    runtime = PostgresRuntime.from_env()
    started = time.monotonic()

    def say(text: str) -> None:
        print(f"[{time.monotonic() - started:5.0f} s] {text}", file=sys.stderr, flush=True)

    root = Path(tempfile.mkdtemp(prefix="pitrdrill-bench-bisect-", dir="/var/tmp"))
    root.chmod(0o755)
    try:
        with Lab(root / "lab", runtime) as lab:
            say(f"building the {COMMITS:,}-commit lab" + (f" (+{pad_mb} MB)" if pad_mb else ""))
            data = build(lab, pad_mb)
            result = asyncio.run(measure(data, root, runtime, runs, say))
        measured, text = render(data, result)
        print(text)
    finally:
        remove_tree(root)
    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    out = RESULTS / f"{stamp}-bisect.json"
    out.write_text(json.dumps({"runs": runs, "base_pad_mb": pad_mb, "row": measured.as_json(),
                               "table": text}, indent=2, default=str))
    print(f"written: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
