"""What an incident bot runs: start a recovery (or a drill) on the pitrdrill Temporal server,
report progress while it runs, and post the report when it is there.

    python docs/incident_bot.py drill docs/drill-input.json
    python docs/incident_bot.py recover spec.json --destination /srv/pg/recovered [--host db-restore-1]

Needs this project installed (`pip install .`), a Temporal server (TEMPORAL_ADDRESS, default
localhost:7233) and `pitrdrill worker`s on it. A recovery stops paused, read-only, once every
check passed: the bot prints the command a human runs to promote it (`pitrdrill recovery
approve`), and never approves by itself. Replace `say` with your chat client's post.

Exit codes as the CLI's: 0 verified (a recovery: waiting for approval), 1 failed,
2 rejected, 3 Temporal unreachable, 4 cancelled.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from domain.errors import DrillError
from domain.recovery import RecoverySpec
from domain.spec import DrillSpec
from domain.stages import Stage
from workers import api
from workers.client import connect

EXIT = {"verified": 0, "promoted": 0, "paused": 0, "failed": 1, "rejected": 2}


def say(text: str) -> None:
    """Post to the incident channel; here, standard output."""
    print(text, flush=True)


async def follow(client, drill_id: str, every_s: float = 2.0) -> None:
    """Report each new stage, and the restore/replay figures while they move, until the run
    has finished or is waiting for a human."""
    last = None
    while True:
        live = await api.drill_status(client, drill_id)
        progress = live.progress
        line = f"{drill_id}: {progress.stage or 'finished'}"
        if live.bytes_restored is not None:
            line += f", {live.bytes_restored / 1e6:.0f} of " \
                    f"{(progress.restore_bytes_total or 0) / 1e6:.0f} MB restored"
        if live.replay_lsn is not None:
            line += f", replayed to {live.replay_lsn} (stops at {progress.predicted_stop_lsn})"
        if live.eta_seconds is not None:
            line += f", {live.mb_per_s} MB/s, ETA {live.eta_seconds:.0f}s"
        if line != last:
            say(line)
            last = line
        if progress.finished or progress.stage == Stage.AWAITING_APPROVAL:
            return
        await asyncio.sleep(every_s)


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["drill", "recover"])
    parser.add_argument("spec", help="a drill spec, JSON (docs/drill-input.json)")
    parser.add_argument("--destination", help="recover: an absent or empty directory")
    parser.add_argument("--host", help="recover: the worker host id that restores into it")
    parser.add_argument("--id", help="workflow id: the same id re-attaches to the same run")
    args = parser.parse_args(argv)
    fields = json.loads(Path(args.spec).read_text())
    try:
        client = await connect()
    except RuntimeError as exc:
        say(f"Temporal unreachable: {exc}")
        return 3
    if args.mode == "recover":
        spec = RecoverySpec.model_validate(
            {**fields, "destination": args.destination, "host": args.host})
        run_id = await api.start_recovery(client, spec, args.id)
    else:
        run_id = await api.start_drill(client, DrillSpec.model_validate(fields), args.id)
    say(f"started {run_id} ({spec.database if args.mode == 'recover' else fields['database']})")
    try:
        await follow(client, run_id)
        if args.mode == "recover":
            live = await api.drill_status(client, run_id)
            if live.progress.stage == Stage.AWAITING_APPROVAL:
                say(f"{run_id}: every check passed; paused, read-only. To promote: "
                    f"pitrdrill recovery approve {run_id} --by NAME --reason TEXT")
                return 0
            report = await api.recovery_result(client, run_id)
        else:
            report = await api.drill_result(client, run_id)
    except DrillError as error:
        say(f"{run_id}: {error.code}: {error.message}")
        return 3 if error.code == "TEMPORAL_UNAVAILABLE" else 4 if error.code == \
            "DRILL_CANCELLED" else 1
    say(f"{run_id}: {report.status.upper()}")
    for error in report.errors:
        say(f"  {error.code}: {error.message}")
    say(report.model_dump_json(indent=2, exclude_none=True))
    return EXIT.get(report.status, 1)


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
