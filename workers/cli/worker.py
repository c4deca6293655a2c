"""`pitrdrill worker`: this host's workers (shared queue and host queue) on TEMPORAL_ADDRESS."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal

from domain.errors import DrillError, ErrorCode
from workers import telemetry
from workers.cli.common import EXIT_OK, connected
from workers.client import PROMETHEUS, sdk_runtime
from workers.worker import WorkerSettings, ensure_search_attributes, running_workers


async def worker(args: argparse.Namespace) -> int:
    if args.prometheus:  # read by the SDK runtime
        os.environ[PROMETHEUS] = args.prometheus
    try:
        sdk_runtime()  # binds the Prometheus endpoint: a taken port is named, not a traceback
    except ValueError as exc:
        raise DrillError(ErrorCode.PREFLIGHT_FAILED,
                         f"{PROMETHEUS}={os.environ.get(PROMETHEUS)}: {exc}") from exc
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
    telemetry.flush()  # the process ends with os._exit: no atexit hook sends the rest
    return EXIT_OK


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("worker", help="run this host's workers on TEMPORAL_ADDRESS")
    parser.add_argument("--json", action="store_true", help="(logs are always JSON)")
    parser.add_argument("--prometheus", metavar="HOST:PORT",
                        help=f"serve Temporal's worker metrics on http://HOST:PORT/metrics "
                             f"(default ${PROMETHEUS}, else none)")
    parser.set_defaults(handler=worker)
