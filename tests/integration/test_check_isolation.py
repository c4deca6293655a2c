"""A check runs as the backup's superuser by default: it must still reach no file, no program,
and write nothing, even in a promoted sandbox and even when its SQL slipped past the spec's
deny-list (the checks below are handed to the real activity directly, unvalidated)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from temporalio.testing import ActivityEnvironment

from activities.checks import CheckActivities
from activities.models import ChecksRequest
from activities.sandbox import server_of
from domain.checks import refuse_unsafe_check
from domain.errors import DrillError
from domain.spec import Check, FilesystemSource
from domain.targets import ResolvedTarget
from tests.conftest import Scenario
from tests.integration.sandboxes import replayed_sandbox

PROBE_DIR = Path("/var/tmp")


@pytest.fixture(scope="module")
def promoted(scenario: Scenario, sources, runtime, sandbox_root: Path):
    """The first backup restored and promoted: writable, the worst case for a check."""
    source = FilesystemSource(base_backups=str(scenario.lab.base_backups),
                              wal_archive=str(scenario.lab.wal_archive))
    with replayed_sandbox(runtime, sources, sandbox_root, source, "first",
                          ResolvedTarget(mode="immediate", action="promote"),
                          scenario.database, "it-checks") as sandbox:
        yield sandbox


def unvalidated(name: str, sql: str, expect=None) -> Check:
    """A check the deny-list refuses, run anyway: what holds when SQL slips past it."""
    with pytest.raises(DrillError):
        refuse_unsafe_check(name, sql)
    return Check(name=name, sql=sql, expect=expect)


def run_checks(scenario, runtime, sandbox, checks, db_user="postgres"):
    request = ChecksRequest(sandbox=sandbox, database=scenario.database,
                                            db_user=db_user, checks=checks)
    return ActivityEnvironment().run(CheckActivities(runtime).run_checks, request).results


def as_superuser(runtime, sandbox, scenario, statement: str) -> None:
    """A write the backup's superuser can make in the promoted sandbox (read only by default)."""
    with server_of(sandbox, runtime).connect(scenario.database) as conn, conn.transaction():
        conn.execute("set transaction read write")
        conn.execute(statement)


def orders(runtime, sandbox, scenario) -> int:
    with server_of(sandbox, runtime).connect(scenario.database) as conn:
        return conn.execute("select count(*) from orders").fetchone()[0]


def test_the_sandbox_is_promoted_and_writable_by_its_superuser(runtime, promoted, scenario):
    with server_of(promoted, runtime).connect(scenario.database) as conn:
        assert conn.execute("select pg_is_in_recovery()").fetchone()[0] is False
        with conn.transaction(force_rollback=True):
            conn.execute("set transaction read write")
            conn.execute("insert into orders select * from orders where false")


def test_a_check_cannot_read_or_list_server_files(runtime, promoted, scenario):
    read, listed, stat = run_checks(scenario, runtime, promoted, [
        unvalidated("read", "select pg_read_file('/etc/hostname')"),
        unvalidated("list", "select count(*) from pg_ls_dir('/etc')"),
        unvalidated("stat", "select size from pg_stat_file('/etc/hostname')"),
    ])
    assert not read.passed and read.error == "permission denied for function pg_read_file"
    assert read.observed is None
    assert not listed.passed and listed.error == "permission denied for function pg_ls_dir"
    assert not stat.passed and stat.error == "permission denied for function pg_stat_file"


def test_a_check_cannot_copy_to_a_file_or_a_program(runtime, promoted, scenario):
    probe = PROBE_DIR / f"pitrdrill-probe-{uuid.uuid4().hex[:8]}"
    to_file, to_program = run_checks(scenario, runtime, promoted, [
        unvalidated("to file", f"copy (select 1) to '{probe}.copy'"),
        unvalidated("to program", f"copy (select 1) to program 'id > {probe}.id'"),
    ])
    assert not to_file.passed and to_file.error.startswith(
        "must be superuser or have privileges of the pg_write_server_files role to COPY to a "
        "file")
    assert not to_program.passed and to_program.error.startswith(
        "must be superuser or have privileges of the pg_execute_server_program role to COPY "
        "to or from an external program")
    assert not Path(f"{probe}.copy").exists() and not Path(f"{probe}.id").exists()


def test_a_check_is_one_statement_and_writes_nothing(runtime, promoted, scenario):
    before = orders(runtime, promoted, scenario)
    insert = "insert into orders select * from orders limit 5"
    chained, escaped, direct = run_checks(scenario, runtime, promoted, [
        unvalidated("chained", f"select 1; {insert}", 1),
        unvalidated("escaped", f"commit; begin read write; {insert}; commit", 1),
        Check(name="direct", sql=f"with x as ({insert} returning 1) select count(*) from x",
              expect=0),
    ])
    assert chained.error == "cannot insert multiple commands into a prepared statement"
    assert escaped.error == "cannot insert multiple commands into a prepared statement"
    assert direct.error == "cannot execute SELECT in a read-only transaction"  # its WITH inserts
    assert not (chained.passed or escaped.passed or direct.passed)
    assert orders(runtime, promoted, scenario) == before == 300


def test_a_check_runs_as_pg_read_all_data_and_still_reads_every_table(runtime, promoted,
                                                                       scenario):
    who, count, percent = run_checks(scenario, runtime, promoted, [
        Check(name="who", sql="select current_user", expect="pg_read_all_data"),
        Check(name="orders", sql="select count(*) from orders", expect=300),
        Check(name="percent", sql="select 7 % 4 || '%s'", expect="3%s"),
    ])
    assert who.passed and count.passed and percent.passed, (who, count, percent)


def test_a_db_user_that_cannot_switch_role_runs_no_check(runtime, promoted, scenario):
    role = f"nobody_{uuid.uuid4().hex[:6]}"
    as_superuser(runtime, promoted, scenario, f"create role {role} login")
    try:
        (result,) = run_checks(scenario, runtime, promoted, [
            Check(name="orders", sql="select count(*) from orders", expect=300)], db_user=role)
        assert not result.passed and result.observed is None
        assert result.error.startswith(f"not run: {role} cannot SET ROLE pg_read_all_data "
                                       "(permission denied to set role \"pg_read_all_data\")")
    finally:
        as_superuser(runtime, promoted, scenario, f"drop role {role}")
