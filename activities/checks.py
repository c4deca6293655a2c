"""Smoke checks: read-only queries against the recovered database, each with a verdict."""

from __future__ import annotations

import time

import psycopg
from temporalio import activity

from activities.boundary import activity_boundary
from activities.heartbeat import Heartbeater
from activities.models import ChecksProgress, ChecksRequest, ChecksResult
from adapters.pg_runtime import PostgresRuntime
from activities.sandbox import server_of
from domain.checks import verdict
from domain.report import CheckResult

_STATEMENT_TIMEOUT = "60s"


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
            conn.execute(f"SET statement_timeout = '{_STATEMENT_TIMEOUT}'")
            for check in request.checks:
                try:
                    # Read only twice over: the server defaults to it, and each check asks for it.
                    with conn.transaction():
                        conn.execute("SET TRANSACTION READ ONLY")
                        row = conn.execute(check.sql).fetchone()
                    results.append(verdict(check.name, row[0] if row else None, check.expect))
                except psycopg.Error as exc:
                    results.append(CheckResult(
                        name=check.name, passed=False, expected=check.expect,
                        error=str(exc).strip(),
                    ))
                beat(ChecksProgress(checks_done=len(results)))
        return ChecksResult(results=results, seconds=time.perf_counter() - started)
