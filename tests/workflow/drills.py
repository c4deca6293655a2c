"""Specs, starting drills, and reading back what a drill scheduled from its history."""

from __future__ import annotations

import asyncio
import copy
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHandle

from domain.spec import DrillSpec
from workers import api
from workflows.drill import DrillWorkflow

# Short waits: the time-skipping test server is not available, these run in real time.
BASE_SPEC = {
    "database": "shop",
    "source": {"kind": "filesystem", "base_backups": "/backups/base", "wal_archive": "/backups/wal"},
    "target": {"time": "2026-11-21 23:46:30.016509 America/New_York", "inclusive": False,
               "action": "pause"},
    "checks": [{"name": "orders at target", "sql": "select count(*) from orders", "expect": 4100},
               {"name": "no voided orders", "sql": "select count(*) from orders where void",
                "expect": 0}],
    "escalation": {"timeout_seconds": 1},
    "sandbox": {"host_wait_seconds": 2},
}


def make_spec(**overrides) -> DrillSpec:
    raw = copy.deepcopy(BASE_SPEC)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(raw.get(key), dict):
            raw[key] = {**raw[key], **value}
        else:
            raw[key] = value
    return DrillSpec.model_validate(raw)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def start(client: Client, spec: DrillSpec, task_queue: str, started: list[str]) -> WorkflowHandle:
    """Start through the API the CLI uses (search attributes, idempotency policies)."""
    drill_id = await api.start_drill(client, spec, unique(f"wf-{task_queue}"), task_queue)
    started.append(drill_id)
    return client.get_workflow_handle_for(DrillWorkflow.run, drill_id)


async def until(condition: Callable[[], object], timeout: float = 10.0, every: float = 0.05):
    deadline = asyncio.get_running_loop().time() + timeout
    while not (value := condition()):
        assert asyncio.get_running_loop().time() < deadline, "condition never held"
        await asyncio.sleep(every)
    return value


async def until_async(condition, timeout: float = 10.0, every: float = 0.05):
    deadline = asyncio.get_running_loop().time() + timeout
    while not (value := await condition()):
        assert asyncio.get_running_loop().time() < deadline, "condition never held"
        await asyncio.sleep(every)
    return value


@dataclass(frozen=True)
class ActivityRun:
    name: str
    task_queue: str
    started: bool
    outcome: str | None  # completed, failed, timed_out, canceled; None while pending


_OUTCOMES = {
    EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED: ("activity_task_completed_event_attributes",
                                                   "completed"),
    EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED: ("activity_task_failed_event_attributes", "failed"),
    EventType.EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT: ("activity_task_timed_out_event_attributes",
                                                   "timed_out"),
    EventType.EVENT_TYPE_ACTIVITY_TASK_CANCELED: ("activity_task_canceled_event_attributes",
                                                  "canceled"),
}


async def activity_runs(handle: WorkflowHandle) -> list[ActivityRun]:
    """Every ActivityTaskScheduled event in order, with whether it started and how it ended."""
    history = await handle.fetch_history()
    scheduled: dict[int, tuple[str, str]] = {}
    started: set[int] = set()
    outcome: dict[int, str] = {}
    for event in history.events:
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            attributes = event.activity_task_scheduled_event_attributes
            scheduled[event.event_id] = (attributes.activity_type.name, attributes.task_queue.name)
        elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            started.add(event.activity_task_started_event_attributes.scheduled_event_id)
        elif event.event_type in _OUTCOMES:
            field, name = _OUTCOMES[event.event_type]
            outcome[getattr(event, field).scheduled_event_id] = name
    return [ActivityRun(name, queue, event_id in started, outcome.get(event_id))
            for event_id, (name, queue) in scheduled.items()]


async def scheduled_names(handle: WorkflowHandle) -> list[str]:
    return [run.name for run in await activity_runs(handle)]
