"""`pitrdrill sandbox list|reap`: the sandboxes this host holds, and removing the orphans.

A sandbox outlives its drill when its worker was killed and never came back for it, when the
drill asked to keep it (`sandbox.keep`), or when its host was lost. `list` shows every one on
this host, of both providers: the directories under PITRDRILL_SANDBOX_ROOT (with any server
still running there) and the docker containers labelled pitrdrill.drill_id. `reap` removes
those older than --older-than (default 6h) and those whose keep has expired; it never touches
a recovery, a kept sandbox before its time, or one whose drill Temporal says still runs (when
Temporal is reachable: otherwise only their age protects running drills).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from datetime import timedelta

from adapters.sandbox_providers import (
    HeldSandbox,
    SandboxProviders,
    inventory,
    now_utc,
    reap,
)
from domain.errors import DrillError, ErrorCode
from domain.synthetic import parse_duration
from workers.cli.common import EXIT_FAILED, EXIT_OK, add_json, refusal
from workers.client import DEFAULT_ADDRESS, connect
from workers.worker import WorkerSettings, build_providers

TEMPORAL_WAIT_S = 5.0


def _providers() -> SandboxProviders:
    return build_providers(WorkerSettings.from_env())


async def _running(drill_ids: list[str]) -> tuple[set[str], str]:
    """The drills among `drill_ids` whose workflow still runs, and how that was known."""
    from temporalio.client import WorkflowExecutionStatus
    from temporalio.service import RPCError

    address = os.environ.get("TEMPORAL_ADDRESS", DEFAULT_ADDRESS)
    try:
        client = await asyncio.wait_for(connect(), TEMPORAL_WAIT_S)
    except (RuntimeError, OSError, asyncio.TimeoutError):
        return set(), f"unreachable at {address}: only age protects running drills"
    running = set()
    for drill_id in drill_ids:
        try:
            described = await client.get_workflow_handle(drill_id).describe()
        except RPCError:
            continue  # not found: its workflow is gone
        if described.status == WorkflowExecutionStatus.RUNNING:
            running.add(drill_id)
    return running, "checked"


def _line(entry: HeldSandbox, now, reason: str | None = None) -> str:
    age = entry.age_seconds(now)
    parts = [f"{entry.drill_id:<44}", f"{entry.provider:<6}",
             f"{_age(age):>8}", entry.root or "-"]
    if entry.server_pid:
        parts.append(f"server {entry.server_pid}")
    if entry.containers:
        parts.append(f"container {','.join(entry.containers)} ({entry.container_state})")
    if not entry.complete:
        parts.append("incomplete (provision cut short)")
    if entry.purpose != "drill":
        parts.append(entry.purpose)
    if entry.kept_until:
        parts.append(f"kept until {entry.kept_until.isoformat(timespec='seconds')}")
    if reason:
        parts.append(f"— {reason}")
    return "  ".join(parts)


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    if seconds < 3600:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


async def list_sandboxes(args: argparse.Namespace) -> int:
    providers = _providers()
    entries, notes = inventory(providers)
    now = now_utc()
    if args.json:
        print(json.dumps({"root": str(providers.settings.root),
                          "sandboxes": [e.as_json(now) for e in entries], "notes": notes},
                         indent=2))
        return EXIT_OK
    print(f"sandboxes under {providers.settings.root}: {len(entries)}")
    for entry in entries:
        print("  " + _line(entry, now))
    for note in notes:
        print(f"  note: {note}")
    return EXIT_OK


def _older_than(text: str) -> float:
    if text.strip() in ("0", "0s"):
        return 0.0
    try:
        return parse_duration(text).total_seconds()
    except ValueError as exc:
        raise refusal(DrillError(ErrorCode.SPEC_INVALID, f"--older-than: {exc}")) from None


async def reap_sandboxes(args: argparse.Namespace) -> int:
    older_than = _older_than(args.older_than)
    providers = _providers()
    entries, notes = inventory(providers)
    running, temporal = await _running([e.drill_id for e in entries]) if entries \
        else (set(), "not asked (nothing to reap)")
    now = now_utc()
    removed, kept = reap(providers, entries, now, older_than, running)
    failed = [entry for entry, reason in kept if reason.startswith("removal failed")]
    if args.json:
        print(json.dumps({
            "root": str(providers.settings.root), "older_than_seconds": older_than,
            "temporal": temporal, "notes": notes,
            "removed": [e.as_json(now) for e in removed],
            "kept": [{**e.as_json(now), "reason": reason} for e, reason in kept]}, indent=2))
    else:
        print(f"reaped {len(removed)} of {len(entries)} sandboxes under "
              f"{providers.settings.root} (older than {timedelta(seconds=older_than)}; "
              f"Temporal: {temporal})")
        for entry in removed:
            print("  removed " + _line(entry, now))
        for entry, reason in kept:
            print("  kept    " + _line(entry, now, reason))
        for note in notes:
            print(f"  note: {note}")
    return EXIT_FAILED if failed else EXIT_OK


def register(commands: argparse._SubParsersAction) -> None:
    sandbox = commands.add_parser("sandbox", help="the sandboxes this host holds").add_subparsers(
        dest="sandbox_command", required=True)
    listing = sandbox.add_parser("list", help="every sandbox on this host, both providers")
    add_json(listing)
    listing.set_defaults(handler=list_sandboxes)
    reaper = sandbox.add_parser(
        "reap", help="remove orphaned sandboxes (servers, containers, directories)")
    reaper.add_argument("--older-than", default="6h",
                        help="only sandboxes created longer ago than this (default 6h; 0 for "
                             "all); a kept sandbox goes once its keep expires")
    add_json(reaper)
    reaper.set_defaults(handler=reap_sandboxes)
