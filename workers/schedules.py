"""Scheduled drills, as Temporal Schedules: the server fires them (cron or a fixed interval),
skips a firing while the previous drill still runs, catches up a missed one within ten
minutes, and shows each schedule in its UI. No loop of ours keeps time.

Each firing starts a DrillWorkflow with the schedule's spec, under the id
`drill-<database>-<schedule>-<scheduled time>`, with the search attributes a started drill
carries (PitrDatabase, PitrTargetMode, PitrStatus). With a synthetic target in the spec each
firing picks its own instant of the restorable window, seeded by its scheduled time.

    client = await connect()
    await create(client, "shop-nightly", spec, cron="30 2 * * *", timezone="Europe/Paris")
    print((await describe(client, "shop-nightly")).next_runs)
    drill_id = await trigger(client, "shop-nightly")     # one now
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Sequence
from datetime import datetime, timedelta

from pydantic import BaseModel, Field
from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionExecutionStartWorkflow,
    ScheduleActionResult,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleDescription,
    ScheduleHandle,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleState,
)
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.service import RPCError, RPCStatusCode

from domain.errors import DrillError, ErrorCode
from domain.spec import DrillSpec
from domain.targets import mode_label
from domain.timeparse import load_zone
from workers.worker import TASK_QUEUE
from workflows.drill import DrillWorkflow
from workflows.search_attributes import PITR_DATABASE, PITR_STATUS, PITR_TARGET_MODE

# A firing missed while the server was down still runs if the server is back within this.
CATCHUP_WINDOW = timedelta(minutes=10)
MEMO_KEY = "pitrdrill"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")


class ScheduledRun(BaseModel):
    drill_id: str
    scheduled_at: datetime
    started_at: datetime | None = None


class DrillSchedule(BaseModel):
    """A drill schedule as `schedule list` and `schedule describe` show it."""

    name: str
    database: str | None = None
    cron: str | None = None
    every_seconds: float | None = None
    timezone: str | None = None
    synthetic_target: str | None = None
    paused: bool = False
    next_runs: list[datetime] = Field(default_factory=list)
    recent_runs: list[ScheduledRun] = Field(default_factory=list)
    # What describe adds.
    running: list[str] = Field(default_factory=list)
    runs_total: int | None = None
    skipped_overlapping: int | None = None
    missed_catchup_window: int | None = None
    task_queue: str | None = None
    overlap: str | None = None
    catchup_window_seconds: float | None = None
    created_at: datetime | None = None
    spec: DrillSpec | None = None


def _check_name(name: str) -> None:
    if not _NAME.fullmatch(name):
        raise DrillError(ErrorCode.SPEC_INVALID,
                         f"schedule name {name!r}: use letters, digits, '.', '_' and '-' "
                         "(starting with a letter or digit), at most 200")


def _when(cron: str | None, every: timedelta | None, timezone: str | None) -> ScheduleSpec:
    if (cron is None) == (every is None):
        raise DrillError(ErrorCode.SPEC_INVALID, "a schedule needs exactly one of a cron "
                         "expression (--cron) or an interval (--every)")
    if every is not None:
        if timezone:
            raise DrillError(ErrorCode.SPEC_INVALID,
                             "a time zone applies to a cron expression, not to an interval")
        if every < timedelta(seconds=1):
            raise DrillError(ErrorCode.SPEC_INVALID, f"interval {every} is under a second")
        return ScheduleSpec(intervals=[ScheduleIntervalSpec(every=every)])
    assert cron is not None
    return ScheduleSpec(cron_expressions=[cron],
                        time_zone_name=load_zone(timezone).key if timezone else None)


def _search_attributes(spec: DrillSpec) -> TypedSearchAttributes:
    """As workers.api.start_drill gives a started drill; a synthetic target becomes a time."""
    mode = "time" if spec.synthetic_target else mode_label(spec.target)
    return TypedSearchAttributes([
        SearchAttributePair(PITR_DATABASE, spec.database),
        SearchAttributePair(PITR_TARGET_MODE, mode),
        SearchAttributePair(PITR_STATUS, "starting"),
    ])


async def create(client: Client, name: str, spec: DrillSpec, *, cron: str | None = None,
                 every: timedelta | None = None, timezone: str | None = None,
                 task_queue: str = TASK_QUEUE) -> DrillSchedule:
    """A schedule firing a drill of `spec` by `cron` (in `timezone`, default UTC) or `every`
    interval. SCHEDULE_EXISTS when the name is taken; SPEC_INVALID when Temporal refuses the
    cron expression."""
    _check_name(name)
    when = _when(cron, every, timezone)
    what = spec.synthetic_target or mode_label(spec.target)
    action = ScheduleActionStartWorkflow(
        DrillWorkflow.run, spec, id=f"drill-{spec.database}-{name}", task_queue=task_queue,
        typed_search_attributes=_search_attributes(spec),
        static_summary=f"Scheduled PITR drill of {spec.database} to {what} "
                       f"({spec.source.kind} source), schedule {name}",
    )
    memo = {MEMO_KEY: {"database": spec.database, "cron": cron, "timezone": when.time_zone_name,
                       "every_seconds": every.total_seconds() if every else None,
                       "synthetic_target": spec.synthetic_target}}
    try:
        await client.create_schedule(
            name,
            Schedule(action=action, spec=when,
                     policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP,
                                           catchup_window=CATCHUP_WINDOW),
                     state=ScheduleState(note=f"pitrdrill: drills of {spec.database}")),
            memo=memo,
        )
    except ScheduleAlreadyRunningError:
        raise DrillError(ErrorCode.SCHEDULE_EXISTS,
                         f"a schedule named {name!r} already exists") from None
    except RPCError as exc:
        if exc.status == RPCStatusCode.INVALID_ARGUMENT:
            raise DrillError(ErrorCode.SPEC_INVALID,
                             f"Temporal refused schedule {name!r}: {exc.message}") from exc
        raise
    return await describe(client, name)


def _runs(results: Sequence[ScheduleActionResult]) -> list[ScheduledRun]:
    return [ScheduledRun(drill_id=r.action.workflow_id, scheduled_at=r.scheduled_at,
                         started_at=r.started_at)
            for r in results if isinstance(r.action, ScheduleActionExecutionStartWorkflow)]


def _from_memo(memo: dict) -> dict:
    ours = memo.get(MEMO_KEY) or {}
    return {key: ours.get(key) for key in
            ("database", "cron", "timezone", "every_seconds", "synthetic_target")}


async def _raw(handle: ScheduleHandle) -> ScheduleDescription:
    try:
        description = await handle.describe()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise DrillError(ErrorCode.SCHEDULE_NOT_FOUND,
                             f"no schedule named {handle.id!r}") from None
        raise
    action = description.schedule.action
    if not (isinstance(action, ScheduleActionStartWorkflow)
            and action.workflow == "DrillWorkflow"):
        raise DrillError(ErrorCode.SCHEDULE_NOT_FOUND,
                         f"schedule {handle.id!r} does not run pitrdrill drills")
    return description


async def describe(client: Client, name: str) -> DrillSchedule:
    """The schedule, its spec, its next and recent runs, and the drills it has running."""
    handle = client.get_schedule_handle(name)
    description = await _raw(handle)
    schedule, info = description.schedule, description.info
    action = schedule.action
    assert isinstance(action, ScheduleActionStartWorkflow)
    specs = await client.data_converter.decode(action.args, [DrillSpec]) if action.args else []
    return DrillSchedule(
        name=name, **_from_memo(await description.memo()),
        paused=schedule.state.paused,
        next_runs=[*info.next_action_times],
        recent_runs=_runs(info.recent_actions),
        running=[r.workflow_id for r in info.running_actions
                 if isinstance(r, ScheduleActionExecutionStartWorkflow)],
        runs_total=info.num_actions,
        skipped_overlapping=info.num_actions_skipped_overlap,
        missed_catchup_window=info.num_actions_missed_catchup_window,
        task_queue=action.task_queue,
        overlap=schedule.policy.overlap.name,
        catchup_window_seconds=schedule.policy.catchup_window.total_seconds()
        if schedule.policy.catchup_window else None,
        created_at=info.created_at,
        spec=specs[0] if specs else None,
    )


async def list_schedules(client: Client, database: str | None = None) -> list[DrillSchedule]:
    """The drill schedules on this server (other schedules are left out). Temporal lists
    from its visibility store: a schedule just created may take a moment to appear."""
    found = []
    async for listed in await client.list_schedules():
        if listed.schedule is None or getattr(listed.schedule.action, "workflow",
                                              None) != "DrillWorkflow":
            continue
        fields = _from_memo(await listed.memo())
        if database and fields["database"] != database:
            continue
        info = listed.info
        found.append(DrillSchedule(
            name=listed.id, **fields, paused=listed.schedule.state.paused,
            next_runs=[*info.next_action_times] if info else [],
            recent_runs=_runs(info.recent_actions) if info else []))
    return sorted(found, key=lambda s: s.name)


async def delete(client: Client, name: str) -> None:
    """Delete the schedule; drills it already started run on to their report."""
    handle = client.get_schedule_handle(name)
    await _raw(handle)
    try:
        await handle.delete()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise DrillError(ErrorCode.SCHEDULE_NOT_FOUND, f"no schedule named {name!r}") from None
        raise


async def trigger(client: Client, name: str, wait_s: float = 10.0) -> str | None:
    """Fire the schedule now, even while one of its drills runs; the new drill's id once the
    schedule shows it (within wait_s), else None (it still starts)."""
    handle = client.get_schedule_handle(name)
    before = (await _raw(handle)).info.num_actions
    await handle.trigger(overlap=ScheduleOverlapPolicy.ALLOW_ALL)
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        info = (await _raw(handle)).info
        if info.num_actions > before and info.recent_actions:
            newest = max(info.recent_actions, key=lambda r: r.started_at)
            if isinstance(newest.action, ScheduleActionExecutionStartWorkflow):
                return newest.action.workflow_id
        await asyncio.sleep(0.2)
    return None


# The names the CLI and incident tooling call them by.
list = list_schedules  # noqa: A001 (module-level API name; the builtin is not used below)
