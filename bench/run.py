"""`python -m bench.run` (`make bench`): build the labs, measure, print the table, write JSON.

BENCH_SCALE=small is a smoke run of about two minutes; full (the default) restores a base
backup of over 1 GiB and replays over 1 GiB of WAL, within 30 minutes on 2 cores. Everything
lives under one directory in /var/tmp, removed at the end, on failure and on SIGTERM.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import signal
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from adapters.pg_runtime import PostgresRuntime, remove_tree
from bench import machine
from bench.baseline import BareRecovery, PgBackRestRecovery
from bench.cache import PageCache
from bench.candidate import Pitrdrill
from bench.dataset import archiving_to_pgbackrest, build_large, build_tiny
from bench.machine import Noise
from bench.profile import GiB, Profile, from_env, sections_from_env
from bench.sections import Bench, run_sections
from bench.stats import Row, render, size
from lab.lab import Lab
from workers import telemetry

RESULTS = Path(__file__).resolve().parent / "results"
PGBACKREST = Path("/usr/bin/pgbackrest")
WORK_PARENT = Path("/var/tmp")


def _say(started: float):
    def say(text: str) -> None:
        print(f"[{time.monotonic() - started:5.0f} s] {text}", file=sys.stderr, flush=True)
    return say


def _stop_servers_under(root: Path, runtime: PostgresRuntime) -> None:
    """Whatever a failed or interrupted run left running (bare recoveries, sandboxes)."""
    for pid_file in root.rglob("postmaster.pid"):
        runtime.run("pg_ctl", "stop", "-D", str(pid_file.parent), "-m", "immediate",
                    check=False)


async def _measure(profile: Profile, root: Path, runtime: PostgresRuntime, say,
                   deadline: float) -> tuple[list[Row], dict]:
    task = asyncio.current_task()
    assert task is not None
    # SIGTERM (a CI timeout, kill) cancels like Ctrl-C does, so every cleanup below runs.
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    large_lab = Lab(root / "large", runtime)
    # The same cluster also archived into, and backed up to, a pgBackRest repository.
    repo = archiving_to_pgbackrest(large_lab, root / "pgbackrest" / "repo") \
        if PGBACKREST.exists() else None
    with large_lab, Lab(root / "tiny", runtime) as tiny_lab:
        say(f"building the {profile.name} recovery set")
        large, tiny = build_large(large_lab, profile, repo), build_tiny(tiny_lab)
        say(f"base backup {size(large.backup_bytes)}, WAL targets "
            + ", ".join(size(t.wal_bytes) for t in large.targets))
        async with Pitrdrill(runtime, root / "pitrdrill", profile.drill_timeout_s) as pitrdrill:
            bench = Bench(profile, runtime, PageCache(), Noise(),
                          BareRecovery(runtime, root / "bare"),
                          PgBackRestRecovery(runtime, root / "bare"), pitrdrill, large, tiny,
                          root / "wal-index")
            rows = await run_sections(bench, deadline, say, sections_from_env())
    data = {
        name: {"backup_bytes": s.backup_bytes, "start_lsn": s.start_lsn,
               "targets": [dataclasses.asdict(t) for t in s.targets]}
        for name, s in (("large", large), ("tiny", tiny))
    }
    return rows, {"data": data, "page_cache": bench.cache.method,
                  "noise": bench.noise.as_json(), "noise_summary": bench.noise.summary()}


def _report(profile: Profile, rows: list[Row], meta: dict, wall: float) -> str:
    table = render(rows)
    verdicts = [row.verdict for row in rows if row.verdict]
    header = [
        f"pitrdrill bench, BENCH_SCALE={profile.name}: {profile.runs} runs a side, ABAB; "
        "ratio = pitrdrill time / baseline time (below 1: pitrdrill faster)",
        "machine: " + ", ".join(f"{key} {value}" for key, value in meta["machine"].items()),
        f"page cache: {meta['page_cache']}",
        f"noise: {meta['noise_summary']}",
    ]
    goals = [f"  {row.verdict:4} {row.section:<3} {row.figure.strip():<44} "
             + (f"{row.candidate.median:.2f} s" if row.goal.on == "seconds" and row.candidate
                else f"ratio {row.ratio:.3f}" if row.ratio is not None else "-")
             + f"  (goal {row.goal.text})" for row in rows if row.goal]
    footer = ["goals:", *goals,
              f"targets: {verdicts.count('PASS')} PASS, {verdicts.count('MISS')} MISS, "
              f"{verdicts.count('N/A')} N/A", f"wall time of the run: {wall:.0f} s"]
    return "\n".join([*header, "", table, "", *footer])


def main() -> int:
    profile = from_env()
    telemetry.configure(logging.WARNING)
    runtime = PostgresRuntime.from_env()
    started = time.monotonic()
    say = _say(started)
    # Two backups, the primary, its archive and four concurrent sandboxes: ~15x the base.
    needed = 16 * profile.base_bytes + GiB
    if machine.free_bytes(WORK_PARENT) < needed:
        print(f"bench: {WORK_PARENT} has less than the {size(needed)} free this scale needs",
              file=sys.stderr)
        return 2
    root = Path(tempfile.mkdtemp(prefix="pitrdrill-bench-", dir=WORK_PARENT))
    root.chmod(0o755)  # the postgres user must traverse it
    meta: dict = {"machine": machine.describe(runtime)}
    try:
        rows, measured = asyncio.run(
            _measure(profile, root, runtime, say, started + profile.budget_s))
    finally:
        _stop_servers_under(root, runtime)
        remove_tree(root)
    wall = time.monotonic() - started
    meta.update(measured)
    text = _report(profile, rows, meta, wall)
    print(text)
    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    out = RESULTS / f"{stamp}-{profile.name}.json"
    out.write_text(json.dumps({
        "scale": profile.name, "profile": dataclasses.asdict(profile), "wall_seconds": wall,
        **meta, "rows": [row.as_json() for row in rows], "table": text,
    }, indent=2, default=str))
    print(f"written: {out.relative_to(Path.cwd()) if out.is_relative_to(Path.cwd()) else out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
