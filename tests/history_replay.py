"""Replay every DrillWorkflow history a test session left on its server against today's code:
a non-deterministic change to the workflow (a reordered activity, a new timer, a changed
condition) fails here instead of in a drill that survives a deploy."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from workflows.drill import DrillWorkflow

DRILLS = "WorkflowType = 'DrillWorkflow'"


@dataclass
class Replayed:
    histories: list[WorkflowHistory]
    failures: dict[str, Exception]  # run id -> why its replay failed

    @property
    def workflow_ids(self) -> set[str]:
        return {history.workflow_id for history in self.histories}


async def drill_histories(client: Client, expect_ids: set[str] = frozenset(),
                          wait_s: float = 15.0) -> list[WorkflowHistory]:
    """Every closed DrillWorkflow execution's history. Visibility lags a little behind the
    executions: wait until every id in `expect_ids` is listed as closed."""
    deadline = asyncio.get_running_loop().time() + wait_s
    while True:
        closed = [execution async for execution in client.list_workflows(DRILLS)
                  if execution.status != WorkflowExecutionStatus.RUNNING]
        missing = expect_ids - {execution.id for execution in closed}
        if not missing or asyncio.get_running_loop().time() > deadline:
            break
        await asyncio.sleep(0.2)
    assert not missing, f"never listed as closed: {sorted(missing)}"
    return [await client.get_workflow_handle(execution.id, run_id=execution.run_id)
            .fetch_history() for execution in closed]


async def replay_drills(client: Client, expect_ids: set[str] = frozenset()) -> Replayed:
    histories = await drill_histories(client, set(expect_ids))

    async def each():
        for history in histories:
            yield history

    replayer = Replayer(workflows=[DrillWorkflow], data_converter=pydantic_data_converter)
    results = await replayer.replay_workflows(each(), raise_on_replay_failure=False)
    return Replayed(histories=histories, failures=dict(results.replay_failures))
