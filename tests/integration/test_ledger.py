"""The drill ledger on both of its stores, for real: a SQLite file, and a table in a real
PostgreSQL 15 database (a throwaway cluster run as the `postgres` OS user) reached through a
DSN with a password that must never be shown. Appends go through the real activity; reads
through the `pitrdrill report` commands."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.ledger import LedgerActivities
from activities.models import LedgerEntry
from adapters.ledger import PostgresLedger, SqliteLedger, open_ledger
from adapters.pg_runtime import PostgresRuntime
from adapters.pg_server import free_port
from domain.errors import DrillError
from domain.ledger import LedgerQuery, summary
from domain.recovery import RecoveryReport
from lab.lab import Lab
from tests.unit.reports import hours, report
from workers.cli import main

pytestmark = pytest.mark.integration
SECRET = "s3cret-ledger-pw"


@pytest.fixture(scope="module")
def ledger_server(work_root: Path, runtime: PostgresRuntime) -> Iterator[Lab]:
    with Lab(work_root / "ledger-db", runtime) as lab:
        lab.sql(f"CREATE ROLE auditor LOGIN PASSWORD '{SECRET}'")
        lab.sql("CREATE DATABASE ledger OWNER auditor")
        yield lab


def dsn(lab: Lab, database: str) -> str:
    server = lab.primary
    return (f"postgresql://auditor:{SECRET}@/{database}"
            f"?host={server.socket_dir}&port={server.port}")


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_spec(request, tmp_path: Path, ledger_server: Lab) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "ledger" / "ledger.sqlite")
    # A database of its own per test: the table is created by the first append.
    name = f"ledger_{tmp_path.name[-12:].lower().replace('-', '_')}"
    ledger_server.sql(f'CREATE DATABASE "{name}" OWNER auditor')
    return dsn(ledger_server, name)


def append(spec: str, kind: str, drill_report):
    return ActivityEnvironment().run(LedgerActivities(spec).append_to_ledger,
                                     LedgerEntry(kind=kind, report=drill_report))


def cli(capsys, *args: str) -> tuple[int, str]:
    capsys.readouterr()  # what came before (the activity's log) is not the command's
    code = main(list(args))
    return code, capsys.readouterr().out


def test_a_retried_append_is_not_a_duplicate_and_the_dsn_is_never_shown(ledger_spec: str):
    first = append(ledger_spec, "drill", report("d1", finished=hours(10)))
    again = append(ledger_spec, "drill", report("d1", finished=hours(10)))
    assert (first.appended, again.appended) == (True, False)
    assert SECRET not in first.ledger and SECRET not in repr(open_ledger(ledger_spec).where)
    if ledger_spec.startswith("postgresql://"):
        assert first.ledger.startswith("postgresql://auditor:***@/")
    assert [r.drill_id for r in open_ledger(ledger_spec).records(LedgerQuery())] == ["d1"]


def test_queries_filter_by_database_period_and_kind_newest_first(ledger_spec: str):
    append(ledger_spec, "drill", report("old", finished=hours(1)))
    append(ledger_spec, "drill", report("shop-a", finished=hours(50)))
    append(ledger_spec, "drill", report("billing-a", database="billing", finished=hours(60)))
    append(ledger_spec, "recovery",
           report("shop-rec", status="promoted", finished=hours(70), recovery=True))
    ledger = open_ledger(ledger_spec)
    assert [r.drill_id for r in ledger.records(LedgerQuery())] == \
        ["shop-rec", "billing-a", "shop-a", "old"]
    assert [r.drill_id for r in ledger.records(LedgerQuery(database="shop", since=hours(48)))] \
        == ["shop-rec", "shop-a"]
    assert [r.drill_id for r in ledger.records(LedgerQuery(kind="recovery"))] == ["shop-rec"]
    assert [r.drill_id for r in ledger.records(LedgerQuery(since=hours(60)))] == \
        ["shop-rec", "billing-a"]
    # A recovery comes back whole, as a recovery.
    recovered = ledger.record("shop-rec").report
    assert isinstance(recovered, RecoveryReport)
    assert (recovered.status, recovered.destination) == ("promoted", "/srv/recovered")
    assert ledger.record("d-nowhere") is None
    # The stored report is the report: stages, metrics and ids intact.
    shop_a = ledger.record("shop-a").report
    assert shop_a == report("shop-a", finished=hours(50))


def test_the_summary_over_what_the_store_returns(ledger_spec: str):
    window = (hours(0), hours(100))
    append(ledger_spec, "drill", report("w1", backup_stop=hours(10), last_commit=hours(60),
                                        finished=hours(101), window=window,
                                        time_to_verify=20.0))
    append(ledger_spec, "drill", report("w2", status="failed", finished=hours(102),
                                        window=window, time_to_verify=80.0, data_lost=3.5))
    records = open_ledger(ledger_spec).records(LedgerQuery(database="shop"))
    [shop] = summary(records, since=None, now=hours(200)).databases
    assert (shop.drills, shop.passed, shop.pass_rate) == (2, 1, 0.5)
    assert shop.median_time_to_verify_seconds == 20.0
    assert (shop.worst_data_given_up_seconds, shop.worst_data_given_up_by) == (3.5, "w2")
    assert shop.window.share == 0.5  # w1 proves 10 h .. 60 h of 0 .. 100 h


def test_report_commands_read_the_ledger(ledger_spec: str, tmp_path: Path, capsys):
    append(ledger_spec, "drill", report("c1", finished=hours(100), window=(hours(0), hours(99))))
    code, out = cli(capsys, "report", "list", "--ledger", ledger_spec, "--json")
    assert code == 0 and [row["drill_id"] for row in json.loads(out)] == ["c1"]
    code, out = cli(capsys, "report", "summary", "--ledger", ledger_spec, "--json")
    assert code == 0 and json.loads(out)["databases"][0]["database"] == "shop"
    page = tmp_path / "c1.html"
    code, out = cli(capsys, "report", "show", "c1", "--ledger", ledger_spec, "--markdown",
                    "--html", str(page))
    assert code == 0 and out.startswith("# pitrdrill drill `c1`: VERIFIED")
    assert "<svg" in page.read_text() and "restore" in page.read_text()
    code, out = cli(capsys, "report", "show", "missing", "--ledger", ledger_spec, "--json")
    assert code == 2
    error = json.loads(out)["errors"][0]
    assert error["code"] == "REPORT_NOT_FOUND" and SECRET not in out


def test_the_postgresql_ledger_creates_its_table_once_and_a_new_worker_finds_it(
        ledger_server: Lab):
    ledger_server.sql("CREATE DATABASE ledger_shared OWNER auditor")
    spec = dsn(ledger_server, "ledger_shared")
    assert isinstance(open_ledger(spec), PostgresLedger)
    assert append(spec, "drill", report("p1", finished=hours(1))).appended
    # Another worker process: its own ledger object, the same table.
    assert append(spec, "drill", report("p2", finished=hours(2))).appended
    with psycopg.connect(ledger_server.primary.conninfo("ledger_shared")) as conn:
        columns = dict(conn.execute(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_name = 'pitrdrill_ledger'").fetchall())
        stored = conn.execute("SELECT report->'metrics'->>'replay_transactions_per_s' "
                              "FROM pitrdrill_ledger WHERE drill_id = 'p1'").fetchone()[0]
    assert columns["report"] == "jsonb" and columns["finished_at"].startswith("timestamp")
    # An auditor can query inside the report with plain SQL.
    assert float(stored) == 20500.0


def test_an_unreachable_ledger_is_a_typed_retryable_failure_without_its_password(
        tmp_path: Path, capsys):
    spec = f"postgresql://auditor:{SECRET}@127.0.0.1:{free_port()}/ledger?connect_timeout=2"
    with pytest.raises(DrillError) as refused:
        open_ledger(spec).records(LedgerQuery())
    assert refused.value.code == "LEDGER_UNAVAILABLE" and SECRET not in str(refused.value)
    with pytest.raises(ApplicationError) as failed:
        append(spec, "drill", report("u1"))
    assert failed.value.type == "LEDGER_UNAVAILABLE" and not failed.value.non_retryable
    assert SECRET not in failed.value.message
    code, out = cli(capsys, "report", "list", "--ledger", spec, "--json")
    assert code == 1 and json.loads(out)["errors"][0]["code"] == "LEDGER_UNAVAILABLE"
    assert SECRET not in out
    # A SQLite ledger that is not there is not silently created by a reader.
    missing = tmp_path / "nowhere.sqlite"
    assert isinstance(open_ledger(str(missing)), SqliteLedger)
    code, out = cli(capsys, "report", "summary", "--ledger", str(missing), "--since", "30d")
    assert code == 1 and not missing.exists()
