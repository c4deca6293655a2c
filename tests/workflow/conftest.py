"""DrillWorkflow on a real Temporal dev server (the installed temporal CLI; the time-skipping
test server is not available) with stand-in activities: no PostgreSQL, seconds per test."""

from __future__ import annotations

import pytest
import pytest_asyncio

from tests.workflow.drills import unique
from workers.client import start_embedded


@pytest_asyncio.fixture(scope="session")
async def temporal_env():
    env = await start_embedded(ui=False)
    yield env
    await env.shutdown()


@pytest.fixture(scope="session")
def started_drills() -> list[str]:
    """Every drill id this session started: the history replay test replays them all."""
    return []


@pytest.fixture
def task_queue(request) -> str:
    """A queue of the test's own: a stray workflow task of another test never lands here."""
    return unique(request.node.name.removeprefix("test_")[:40].replace("_", "-"))
