"""`pitrdrill worker`: this host's workers (shared queue and host queue) on TEMPORAL_ADDRESS."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal

from workers.cli.common import EXIT_OK, connected
from workers.worker import WorkerSettings, ensure_search_attributes, running_workers


async def worker(args: argparse.Namespace) -> int:
    settings = WorkerSettings.from_env()
    client = await connected()
    await ensure_search_attributes(client)
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(signum, stop.set)
    async with running_workers(client, settings):
        logging.getLogger("pitrdrill").info("worker started", extra={
            "task_queue": settings.task_queue, "host_queue": settings.host_queue,
            "sandbox_root": str(settings.sandbox_root)})
        await stop.wait()
    return EXIT_OK


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("worker", help="run this host's workers on TEMPORAL_ADDRESS")
    parser.add_argument("--json", action="store_true", help="(logs are always JSON)")
    parser.set_defaults(handler=worker)
