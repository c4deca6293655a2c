"""Smoke checks: each kind read from the recovered database and judged
(adapters/smoke_checks.py, which says how each runs read-only; domain/checks.py)."""

from __future__ import annotations

import time

from temporalio import activity

from activities.boundary import activity_boundary
from activities.heartbeat import Heartbeater
from activities.models import ChecksProgress, ChecksRequest, ChecksResult
from activities.sandbox import server_of
from adapters.pg_runtime import PostgresRuntime
from adapters.smoke_checks import run_smoke_check


class CheckActivities:
    def __init__(self, runtime: PostgresRuntime) -> None:
        self._runtime = runtime

    @activity.defn(name="run_checks")
    @activity_boundary
    def run_checks(self, request: ChecksRequest) -> ChecksResult:
        started = time.perf_counter()
        server = server_of(request.sandbox, self._runtime)
        results = []
        with Heartbeater(ChecksProgress()) as beat, \
                server.connect(request.database, request.db_user) as conn:
            for check in request.checks:
                results.append(run_smoke_check(conn, check, request.db_user,
                                               request.recovered_point))
                beat(ChecksProgress(checks_done=len(results)))
        return ChecksResult(results=results, seconds=time.perf_counter() - started)
