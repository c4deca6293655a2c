"""Smoke checks: read-only queries against the recovered database, each with a verdict.

A check connects as the spec's db_user, by default the backup's superuser. So that it cannot
use that to reach the sandbox host, each check runs:

- as one statement over the extended query protocol (a prepared statement): PostgreSQL
  refuses `select 1; insert ...` or `commit; begin read write; ...` as multiple commands;
- inside a READ ONLY transaction, always rolled back, with a statement timeout;
- after `SET LOCAL ROLE pg_read_all_data` (PostgreSQL 15's predefined role: reads every table,
  no file or program access, not a superuser). If the switch fails the check is not run.

The spec's deny-list (domain.checks.refuse_unsafe_check) refuses the ways back to the
session's own role before a sandbox exists.
"""

from __future__ import annotations

import time

import psycopg
from temporalio import activity

from activities.boundary import activity_boundary
from activities.heartbeat import Heartbeater
from activities.models import ChecksProgress, ChecksRequest, ChecksResult
from activities.sandbox import server_of
from adapters.pg_runtime import PostgresRuntime
from domain.checks import verdict
from domain.report import CheckResult
from domain.spec import Check

STATEMENT_TIMEOUT = "60s"
READER_ROLE = "pg_read_all_data"


class _RoleSwitchFailed(Exception):
    pass


def run_check(conn: psycopg.Connection, check: Check, db_user: str) -> CheckResult:
    """One check in its own read-only transaction, as READER_ROLE; rolled back after."""
    try:
        with conn.transaction(force_rollback=True):
            conn.execute("SET TRANSACTION READ ONLY")
            conn.execute(f"SET LOCAL statement_timeout = '{STATEMENT_TIMEOUT}'")
            try:
                conn.execute(f"SET LOCAL ROLE {READER_ROLE}")
            except psycopg.Error as exc:
                raise _RoleSwitchFailed(str(exc).strip()) from exc
            # prepare=True: Parse/Bind/Execute, one statement only (the simple protocol,
            # which psycopg uses without parameters, would run several). No parameters are
            # passed, so a % in the SQL stays as written.
            row = conn.execute(check.sql, prepare=True).fetchone()
        return verdict(check.name, row[0] if row else None, check.expect)
    except _RoleSwitchFailed as exc:
        return CheckResult(
            name=check.name, passed=False, expected=check.expect,
            error=f"not run: {db_user} cannot SET ROLE {READER_ROLE} ({exc}); checks only run "
                  f"as {READER_ROLE}: grant it to {db_user}, or use a superuser db_user")
    except psycopg.Error as exc:
        return CheckResult(name=check.name, passed=False, expected=check.expect,
                           error=str(exc).strip())


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
                results.append(run_check(conn, check, request.db_user))
                beat(ChecksProgress(checks_done=len(results)))
        return ChecksResult(results=results, seconds=time.perf_counter() - started)
