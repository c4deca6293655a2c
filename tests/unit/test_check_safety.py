"""The spec's deny-list: check SQL reaching server files or programs, switching role, or hiding
SQL in a string is refused at validation (CHECK_UNSAFE), before any sandbox exists."""

from __future__ import annotations

import json

import pytest

from domain.checks import refuse_unsafe_check, sql_tokens, unsafe_construct
from domain.errors import DrillError, ErrorCode
from domain.spec import DrillSpec, refuse_unsafe_checks

REFUSED = [
    ("select pg_read_file('/etc/hostname')", "pg_read_file()"),
    ("select pg_read_binary_file('/etc/hostname')", "pg_read_binary_file()"),
    ("select count(*) from pg_ls_dir('/etc')", "pg_ls_dir()"),
    ("select count(*) from pg_ls_waldir()", "pg_ls_waldir()"),
    ("select count(*) from pg_ls_tmpdir()", "pg_ls_tmpdir()"),
    ("select (pg_stat_file('/etc/passwd')).size", "pg_stat_file()"),
    ("select lo_import('/etc/passwd')", "lo_import()"),
    ("select lo_export(16384, '/tmp/x')", "lo_export()"),
    ("select * from dblink('host=x', 'select 1') as t(x int)", "dblink()"),
    ("select dblink_exec('host=x', 'drop table orders')", "dblink_exec()"),
    ("select pg_file_write('/tmp/x', 'data', false)", "pg_file_write()"),
    ("select set_config('role', 'postgres', false)", "set_config()"),
    ("select set_config('statement_timeout', '0', true)", "set_config()"),
    ("copy orders to '/tmp/orders.csv'", "COPY"),
    ("COPY (select 1) TO PROGRAM 'id > /tmp/owned'", "COPY"),
    ("copy orders from '/etc/passwd'", "COPY"),
    ("set role postgres", "SET ROLE"),
    ("SET LOCAL ROLE postgres", "SET ROLE"),
    ("set session role postgres", "SET ROLE"),
    ('set "role" to postgres', "SET ROLE"),
    ("set session authorization postgres", "SET SESSION AUTHORIZATION"),
    ("set session_authorization = 'postgres'", "SET SESSION AUTHORIZATION"),
    ("reset role", "RESET ROLE"),
    ("RESET SESSION AUTHORIZATION", "RESET SESSION AUTHORIZATION"),
    ("set statement_timeout = 0", "SET"),
    ("do $$ begin perform set_config('ro' || 'le', 'postgres', true); end $$", "DO"),
    ("select ts_stat('select to_tsvector(pg_read_file(''/etc/hostname''))')", "ts_stat()"),
    ("select query_to_xml('select 1', true, false, '')", "query_to_xml()"),
    ("load 'plpython3u'", "LOAD"),
    ("commit", "COMMIT"),
    ("begin read write", "BEGIN"),
    ("start transaction read write", "START"),
    ("select 1; insert into orders default values", "more than one statement (;)"),
    ("commit; begin read write; insert into orders default values", "more than one statement (;)"),
    # Spelled to slip past a naive reading:
    ("select pg_catalog.pg_read_file('/etc/hostname')", "pg_read_file()"),
    ('select "pg_read_file"(\'/etc/hostname\')', "pg_read_file()"),
    ("select PG_READ_FILE ('/etc/hostname')", "pg_read_file()"),
    ("select pg_read_file/* hidden */('/etc/hostname')", "pg_read_file()"),
    ("select pg_read_file\n-- a comment\n('/etc/hostname')", "pg_read_file()"),
    ("/* a comment first */ copy orders to '/tmp/x'", "COPY"),
    ("  \n\tcopy orders to '/tmp/x'", "COPY"),
    ("select 1 /* a /* nested */ comment */; copy orders to '/tmp/x'",
     "more than one statement (;)"),
    ('select U&"\\0070g_read_file"(\'/etc/hostname\')', "a Unicode-escaped name or string (U&...)"),
]

ALLOWED = [
    "select count(*) from orders",
    "select count(*) from orders;",
    "select count(*) from orders where status = 'void'",
    "select count(*) from orders where note = 'pg_read_file(''/x'')'",
    "select count(*) from orders where note = E'it\\'s; copy orders to \\'/tmp\\''",
    "select $$; copy orders to '/tmp/x'; $$",
    "select $tag$ set role postgres; $tag$",
    "select count(*) from orders -- then copy orders to '/tmp/x'; set role postgres",
    "select count(*) from orders /* ; pg_read_file( */",
    "select count(*) from dblink_results",  # a table, not a call
    "select copy from books",  # a column named copy
    "select 100 % 7",
    "select max(amount) from orders where customer = 42",
    "with recent as (select * from orders where id > 10) select count(*) from recent",
    "select current_setting('TimeZone')",
    "select count(*) from orders o join customers c on c.id = o.customer",
]


@pytest.mark.parametrize("sql, construct", REFUSED)
def test_refused(sql: str, construct: str):
    found = unsafe_construct(sql)
    assert found is not None and found[0] == construct, found


@pytest.mark.parametrize("sql", ALLOWED)
def test_allowed(sql: str):
    assert unsafe_construct(sql) is None


def test_a_check_with_unsafe_sql_is_refused_naming_the_check_and_the_construct():
    with pytest.raises(DrillError) as raised:
        refuse_unsafe_check("hostname", "select pg_read_file('/etc/hostname')")
    error = raised.value
    assert error.code == ErrorCode.CHECK_UNSAFE and error.kind == "input"
    assert error.message == ("check 'hostname' uses pg_read_file() (reads or writes files on "
                             "the database server)")
    assert "pg_read_all_data" in error.hint and "'hostname'" in error.hint


def test_the_whole_spec_is_refused_before_anything_exists():
    # Decoding never refuses (a workflow must read any spec it gets and refuse it as a
    # report); the spec's entry points call refuse_unsafe_checks.
    with pytest.raises(DrillError) as raised:
        refuse_unsafe_checks(DrillSpec.model_validate({
            "database": "shop",
            "source": {"kind": "filesystem", "base_backups": "/b", "wal_archive": "/w"},
            "target": {"latest": True},
            "checks": [{"name": "fine", "sql": "select count(*) from orders", "expect": 1},
                       {"name": "sneaky", "expect": 1,
                        "sql": "select 1; copy (select 1) to program 'id > /tmp/x'"}],
        }))
    assert raised.value.code == ErrorCode.CHECK_UNSAFE
    assert "'sneaky'" in raised.value.message and "more than one statement" in raised.value.message


def test_the_cli_rejects_it_with_exit_2_and_the_code(tmp_path, capsys, monkeypatch):
    from workers import cli

    monkeypatch.setattr(cli.telemetry, "configure", lambda *_: None)  # leave pytest's logging

    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({
        "database": "shop",
        "source": {"kind": "filesystem", "base_backups": "/b", "wal_archive": "/w"},
        "target": {"latest": True},
        "checks": [{"name": "roles", "sql": "set role postgres", "expect": None}],
    }))
    assert cli.main(["plan", str(spec), "--json"]) == 2
    body = json.loads(capsys.readouterr().out)
    assert body["status"] == "rejected"
    assert body["errors"][0]["code"] == "CHECK_UNSAFE"
    assert body["errors"][0]["message"].startswith("check 'roles' uses SET ROLE")


def test_tokens_skip_comments_and_keep_strings_opaque():
    tokens = sql_tokens("select /* x */ 'a;b' -- c\n, \"Q\"\"x\" from t")
    assert [(t.kind, t.text) for t in tokens] == [
        ("word", "select"), ("string", "'"), ("punct", ","), ("name", 'q"x'), ("word", "from"),
        ("word", "t")]
