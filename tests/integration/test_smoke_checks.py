"""Every kind of smoke check, and cache warming, against a real recovered database: the smoke
lab (lab/smoke.py) restored and replayed to just after its orphan refunds, paused read-only
in recovery, where nothing can be installed or written."""

from __future__ import annotations

import io
import json
import uuid
from contextlib import redirect_stdout
from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import TypeAdapter
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.checks import CheckActivities
from activities.models import ChecksRequest, WarmRequest
from activities.sandbox import server_of
from activities.warm import WarmActivities
from adapters.schema_snapshot import snapshot_of
from domain.checks import RecoveredPoint
from domain.report import CheckResult
from domain.schema import Column, SchemaSnapshot, Table
from domain.spec import FilesystemSource, SmokeCheck, WarmSpec
from domain.targets import ResolvedTarget
from lab.smoke import MISSING_ORDER, ORPHANS, PLAIN, SHOP, SmokeLab, smoke_lab
from tests.integration.sandboxes import replayed_sandbox
from workers.cli import main
from workers.cli.common import load_spec

CHECKS = TypeAdapter(list[SmokeCheck])


@pytest.fixture(scope="module")
def smoke(work_root: Path, runtime) -> SmokeLab:
    with smoke_lab(work_root / f"smoke-lab-{uuid.uuid4().hex[:6]}", runtime) as built:
        yield built


@pytest.fixture(scope="module")
def paused(smoke: SmokeLab, sources, runtime, sandbox_root: Path):
    """`nightly` replayed to the orphans' commit (inclusive), paused: a hot standby."""
    with replayed_sandbox(runtime, sources, sandbox_root, FilesystemSource(**smoke.source()),
                          "nightly", ResolvedTarget(mode="xid", xid=smoke.orphans.xid,
                                                    inclusive=True),
                          SHOP, "it-smoke") as sandbox:
        yield sandbox


def run_checks(runtime, sandbox, checks: list[dict], database: str = SHOP,
               point: RecoveredPoint | None = None) -> list[CheckResult]:
    request = ChecksRequest(sandbox=sandbox, database=database, db_user="postgres",
                            checks=CHECKS.validate_python(checks), recovered_point=point)
    return ActivityEnvironment().run(CheckActivities(runtime).run_checks, request).results


def test_the_sandbox_is_a_read_only_hot_standby_at_the_orphans(runtime, paused):
    with server_of(paused, runtime).connect(SHOP) as conn:
        assert conn.execute("select pg_is_in_recovery()").fetchone()[0] is True
        assert conn.execute("select count(*) from refunds").fetchone()[0] == 10 + ORPHANS


def test_sql_expects_a_value_a_range_a_regex_or_rows(runtime, paused):
    rows = "select id, name from customers where id <= 2 order by id"
    two = [[1, "customer 1"], [2, "customer 2"]]
    results = run_checks(runtime, paused, [
        {"name": "value", "sql": "select count(*) from orders", "expect": 300},
        {"name": "range", "kind": "sql", "sql": "select count(*) from orders",
         "expect": {"min": 250, "max": 300}},
        {"name": "too few", "sql": "select count(*) from orders", "expect": {"min": 301}},
        {"name": "regex", "sql": "select name from customers where id = 7",
         "expect": {"regex": "^customer [0-9]+$"}},
        {"name": "no match", "sql": "select name from customers where id = 7",
         "expect": {"regex": "^client"}},
        {"name": "rows", "sql": rows, "expect": {"rows": two}},
        {"name": "other rows", "sql": rows, "expect": {"rows": two[:1]}},
    ])
    by_name = {r.name: r for r in results}
    assert [r.status for r in results] == \
        ["passed", "passed", "failed", "passed", "failed", "passed", "failed"]
    assert by_name["range"].observed == 300 and by_name["range"].expected == {"min": 250,
                                                                              "max": 300}
    assert by_name["regex"].observed == "customer 7"
    assert by_name["rows"].observed == two
    assert by_name["other rows"].observed == two  # one row more than expected is read
    assert all(r.kind == "sql" and r.seconds > 0 for r in results)


def test_schema_matches_a_snapshot_of_the_live_database(runtime, paused, smoke):
    snapshot = snapshot_of(smoke.dsn())
    assert set(snapshot.tables) == {"public.customers", "public.orders", "public.refunds"}
    orders = snapshot.tables["public.orders"]
    assert orders.columns["amount"] == Column(type="numeric(12,2)", not_null=True)
    assert orders.indexes["orders_placed_at"] == \
        "CREATE INDEX orders_placed_at ON public.orders USING btree (placed_at)"
    assert orders.constraints["orders_customer_id_fkey"] == \
        "FOREIGN KEY (customer_id) REFERENCES public.customers(id)"
    (result,) = run_checks(runtime, paused, [
        {"name": "schema", "kind": "schema", "snapshot": snapshot.model_dump(mode="json")}])
    assert result.status == "passed" and result.observed == []
    assert result.expected.startswith(f"3 tables as in the snapshot of {SHOP} taken ")


def test_schema_names_every_difference_from_the_snapshot(runtime, paused, smoke):
    snapshot = snapshot_of(smoke.dsn())
    orders = snapshot.tables["public.orders"]
    orders.columns["amount"] = Column(type="numeric(10,2)", not_null=True)
    orders.columns["note"] = Column(type="text")
    del orders.indexes["orders_placed_at"]
    orders.constraints["orders_amount_check"] = "CHECK ((amount > (0)::numeric))"
    snapshot.tables["public.invoices"] = Table(columns={"id": Column(type="bigint")})
    del snapshot.tables["public.customers"]
    (result,) = run_checks(runtime, paused, [
        {"name": "schema", "kind": "schema", "snapshot": snapshot.model_dump(mode="json")}])
    assert result.status == "failed"
    assert sorted(result.observed) == sorted([
        "missing table public.invoices",
        "extra table public.customers",
        "public.orders: missing column note (text)",
        "public.orders.amount: type numeric(12,2), snapshot numeric(10,2)",
        "public.orders: extra index orders_placed_at "
        "(CREATE INDEX orders_placed_at ON public.orders USING btree (placed_at))",
        "public.orders: constraint orders_amount_check is CHECK ((amount >= (0)::numeric)), "
        "snapshot CHECK ((amount > (0)::numeric))",
    ])


def test_referential_integrity_counts_orphans_of_every_foreign_key(runtime, paused):
    every, named, unknown = run_checks(runtime, paused, [
        {"name": "every", "kind": "referential_integrity"},
        {"name": "named", "kind": "referential_integrity",
         "foreign_keys": ["orders_customer_id_fkey"]},
        {"name": "unknown", "kind": "referential_integrity", "foreign_keys": ["no_such_fkey"]},
    ])
    assert every.status == "failed" and every.expected == {"orphans": 0}
    assert every.observed == {"orphans": ORPHANS, "foreign_keys": 2, "worst": [{
        "foreign_key": "refunds_order_id_fkey", "table": "public.refunds",
        "references": "public.orders", "orphans": ORPHANS,
        "examples": [[MISSING_ORDER + 1], [MISSING_ORDER + 2], [MISSING_ORDER + 3]]}]}
    assert named.status == "passed"
    assert named.observed == {"orphans": 0, "foreign_keys": 1, "worst": []}
    assert unknown.status == "error"
    assert unknown.error == "not run: no foreign key named no_such_fkey in the recovered database"


def test_amcheck_verifies_heaps_and_btrees_on_a_hot_standby(runtime, paused):
    plain, all_indexed, unknown = run_checks(runtime, paused, [
        {"name": "amcheck", "kind": "amcheck", "relations": ["orders", "public.refunds_pkey"]},
        {"name": "heapallindexed", "kind": "amcheck", "relations": ["customers"],
         "heapallindexed": True},
        {"name": "unknown", "kind": "amcheck", "relations": ["no_such_table"]},
    ])
    assert plain.status == "passed", plain
    assert plain.observed == {"verified": [
        "public.orders (heap)", "public.orders_pkey (btree)", "public.orders_placed_at (btree)",
        "public.refunds_pkey (btree)"], "unverified": [], "corruption": []}
    assert all_indexed.status == "passed", all_indexed
    assert all_indexed.observed["verified"] == ["public.customers (heap)",
                                                "public.customers_pkey (btree)"]
    assert unknown.status == "error"
    assert unknown.error == "not run: no relation 'no_such_table' in the recovered database"


def test_amcheck_is_skipped_not_passed_when_the_backup_lacks_it(runtime, paused):
    (result,) = run_checks(runtime, paused, [
        {"name": "amcheck", "kind": "amcheck", "relations": ["items"]}], database=PLAIN)
    assert result.status == "skipped" and result.passed is False
    assert result.skipped.startswith("not installed in the backup")


def test_freshness_compares_the_newest_timestamp_with_the_recovered_point(runtime, paused,
                                                                          smoke):
    at_commit = RecoveredPoint(at=smoke.orphans.commit_time, meaning="the last commit replayed")
    fresh = {"name": "fresh", "kind": "freshness", "table": "orders", "column": "placed_at",
             "tolerance": "5s"}
    (result,) = run_checks(runtime, paused, [fresh], point=at_commit)
    assert result.status == "passed", result
    assert 0 < result.observed["behind_seconds"] < 5
    assert result.expected["point_is"] == "the last commit replayed"

    an_hour_later = RecoveredPoint(at=smoke.orphans.commit_time + timedelta(hours=1),
                                   meaning="the target time")
    stale, not_a_time, missing = run_checks(runtime, paused, [
        fresh,
        {**fresh, "name": "amount", "column": "amount"},
        {**fresh, "name": "missing", "table": "no_such_table"},
    ], point=an_hour_later)
    assert stale.status == "failed" and stale.observed["behind_seconds"] > 3600
    assert not_a_time.error == "not run: public.orders.amount is numeric(12,2), not a " \
                               "timestamp or date"
    assert missing.error == "not run: no table 'no_such_table' in the recovered database"
    (no_point,) = run_checks(runtime, paused, [fresh], point=None)
    assert no_point.status == "error" and "no recovered point" in no_point.error


def warm(runtime, sandbox, database: str, relations: list[str], indexes: bool = True):
    request = WarmRequest(sandbox=sandbox, database=database, db_user="postgres",
                          warm=WarmSpec(relations=relations, indexes=indexes))
    return ActivityEnvironment().run(WarmActivities(runtime).warm_cache, request)


def relation_bytes(runtime, sandbox, database: str, relation: str) -> int:
    with server_of(sandbox, runtime).connect(database) as conn:
        return conn.execute("select pg_relation_size(%s::regclass)", (relation,)).fetchone()[0]


def test_warming_loads_tables_and_indexes_with_pg_prewarm(runtime, paused):
    report = warm(runtime, paused, SHOP, ["orders"])
    assert [(r.name, r.method) for r in report.relations] == [
        ("public.orders", "pg_prewarm"), ("public.orders_pkey", "pg_prewarm"),
        ("public.orders_placed_at", "pg_prewarm")]
    for relation in report.relations:
        assert relation.bytes == relation_bytes(runtime, paused, SHOP, relation.name) > 0
    assert report.bytes_warmed == sum(r.bytes for r in report.relations)
    assert report.seconds > 0


def test_warming_reads_tables_sequentially_without_pg_prewarm(runtime, paused):
    report = warm(runtime, paused, PLAIN, ["items"])
    # An index cannot be read sequentially from SQL: only the table is warmed.
    assert [(r.name, r.method) for r in report.relations] == [("public.items",
                                                               "sequential_read")]
    assert report.bytes_warmed == relation_bytes(runtime, paused, PLAIN, "items") > 0


def test_warming_a_relation_the_backup_lacks_is_warm_failed(runtime, paused):
    with pytest.raises(ApplicationError) as raised:
        warm(runtime, paused, SHOP, ["orders", "no_such_table"])
    assert raised.value.type == "WARM_FAILED"
    assert raised.value.message == \
        "no relation 'no_such_table' to warm in the recovered database shop"


def test_schema_snapshot_command_prints_what_a_spec_reads_back(smoke, tmp_path: Path):
    printed = io.StringIO()
    with redirect_stdout(printed):
        assert main(["schema", "snapshot", "--dsn", smoke.dsn(), "--schema", "public"]) == 0
    snapshot = SchemaSnapshot.model_validate_json(printed.getvalue())
    assert snapshot.schemas == ["public"] and snapshot.database == SHOP
    assert "public.refunds" in snapshot.tables
    (tmp_path / "schema.json").write_text(printed.getvalue())
    spec_file = tmp_path / "drill.yaml"
    spec_file.write_text(json.dumps({
        "database": SHOP, "source": smoke.source(), "target": {"latest": True},
        "checks": [{"name": "schema", "kind": "schema", "snapshot": "schema.json"}]}))
    spec = load_spec(str(spec_file))
    assert spec.checks[0].snapshot == snapshot
