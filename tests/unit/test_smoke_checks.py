"""Smoke checks without a database: the spec's check kinds (old kind-less checks are `sql`),
each kind's verdict, the schema diff, the point `freshness` compares with, how a check shows."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from domain.checks import (
    ExpectRange,
    ExpectRegex,
    ExpectRows,
    Orphans,
    RecoveredPoint,
    amcheck_verdict,
    freshness_verdict,
    recovered_point,
    referential_verdict,
    schema_verdict,
    skipped,
    verdict,
)
from domain.errors import DrillError
from domain.report import CheckResult, Recovered
from domain.schema import Column, SchemaSnapshot, Table, schema_differences
from domain.spec import AmcheckCheck, Check, DrillSpec, FreshnessCheck, \
    ReferentialIntegrityCheck, SchemaCheck, refuse_unsafe_checks
from domain.targets import ResolvedTarget
from workers.output import check_line

NOON = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)


def spec(*checks: dict) -> DrillSpec:
    return DrillSpec.model_validate({
        "database": "shop", "source": {"base_backups": "/b", "wal_archive": "/w"},
        "target": {"latest": True}, "checks": list(checks)})


# --- the spec ------------------------------------------------------------------------------------


def test_a_check_written_before_kinds_existed_is_an_sql_check():
    (check,) = spec({"name": "orders", "sql": "select count(*) from orders", "expect": 3000}).checks
    assert isinstance(check, Check) and check.kind == "sql" and check.expect == 3000


def test_each_kind_parses_into_its_own_model_and_survives_a_round_trip():
    parsed = spec(
        {"name": "schema", "kind": "schema", "snapshot": {"tables": {"public.t": {}}}},
        {"name": "fks", "kind": "referential_integrity", "foreign_keys": ["t_fkey"]},
        {"name": "amcheck", "kind": "amcheck", "relations": ["t"]},
        {"name": "fresh", "kind": "freshness", "table": "t", "column": "at", "tolerance": "5m"},
    )
    assert [type(c) for c in parsed.checks] == [SchemaCheck, ReferentialIntegrityCheck,
                                                AmcheckCheck, FreshnessCheck]
    assert parsed.checks[3].tolerance_delta() == timedelta(minutes=5)
    assert DrillSpec.model_validate_json(parsed.model_dump_json()) == parsed


def test_expect_is_a_value_a_range_a_regex_or_rows_and_any_other_mapping_is_a_value():
    checks = spec(*({"name": str(n), "sql": "select 1", "expect": e} for n, e in enumerate([
        {"min": 1, "max": 5}, {"max": 5}, {"regex": "^a"}, {"rows": [[1, "a"]]}, {"a": 1},
        "text", None]))).checks
    assert [c.expect for c in checks] == [
        ExpectRange(min=1, max=5), ExpectRange(max=5), ExpectRegex(regex="^a"),
        ExpectRows(rows=[[1, "a"]]), {"a": 1}, "text", None]


@pytest.mark.parametrize("check, message", [
    ({"name": "c", "kind": "bogus"}, "bogus"),
    ({"name": "c", "sql": "select 1", "expect": {"regex": "("}}, "not a regular expression"),
    ({"name": "c", "kind": "freshness", "table": "t", "column": "at", "tolerance": "soon"},
     "is not a duration"),
    ({"name": "c", "kind": "amcheck", "relations": []}, "at least 1 item"),
    ({"name": "c", "kind": "referential_integrity", "sql": "select 1"}, "Extra inputs"),
])
def test_a_malformed_check_is_refused_with_the_reason(check, message):
    with pytest.raises(ValidationError, match=message):
        spec(check)


def test_a_range_needs_a_bound_in_order():
    with pytest.raises(ValidationError, match="above max"):
        ExpectRange(min=5, max=1)
    # No bound at all: not a range, so the mapping is a plain expected value.
    assert spec({"name": "c", "sql": "select 1", "expect": {}}).checks[0].expect == {}


def test_only_user_sql_meets_the_deny_list():
    with pytest.raises(DrillError) as refused:
        refuse_unsafe_checks(spec({"name": "files", "sql": "select pg_read_file('/etc/hosts')"}))
    assert refused.value.code == "CHECK_UNSAFE"
    # Names in the other kinds are identifiers pitrdrill quotes, never SQL it runs.
    refuse_unsafe_checks(spec({"name": "copy", "kind": "amcheck", "relations": ["copy"]},
                              {"name": "set", "kind": "freshness", "table": "set",
                               "column": "do", "tolerance": "1h"}))


# --- sql verdicts ----------------------------------------------------------------------------


@pytest.mark.parametrize("observed, expect, passed", [
    (3000, 3000, True), ("3000", 3000, True), (2999, 3000, False),
    (5, ExpectRange(min=1, max=5), True), (6, ExpectRange(min=1, max=5), False),
    ("4.5", ExpectRange(min=4), True), ("many", ExpectRange(min=1), False),
    (None, ExpectRange(max=1), False),
    ("v15.4", ExpectRegex(regex=r"^v15\."), True), ("v14.9", ExpectRegex(regex=r"^v15\."), False),
    (None, ExpectRegex(regex=".*"), False), (1500, ExpectRegex(regex="^15"), True),
    ([[1, "a"], [2, "b"]], ExpectRows(rows=[[1, "a"], [2, "b"]]), True),
    ([[1, "a"], [2, "b"]], ExpectRows(rows=[[1, "a"]]), False),
    ([[1, "a"]], ExpectRows(rows=[[1, "b"]]), False), ([], ExpectRows(rows=[]), True),
])
def test_sql_verdicts(observed, expect, passed):
    result = verdict("c", observed, expect)
    assert (result.passed, result.status, result.kind) == \
        (passed, "passed" if passed else "failed", "sql")


def test_a_form_is_shown_in_the_report_as_written():
    assert verdict("c", 3, ExpectRange(min=1)).expected == {"min": 1}
    assert verdict("c", "x", ExpectRegex(regex="x")).expected == {"regex": "x"}


# --- schema --------------------------------------------------------------------------------------


def snapshot(**tables: Table) -> SchemaSnapshot:
    return SchemaSnapshot(tables={f"public.{name}": table for name, table in tables.items()})


ORDERS = Table(columns={"id": Column(type="bigint", not_null=True),
                        "amount": Column(type="numeric(12,2)", not_null=True)},
               indexes={"orders_pkey": "CREATE UNIQUE INDEX orders_pkey ON public.orders "
                                       "USING btree (id)"},
               constraints={"orders_pkey": "PRIMARY KEY (id)"})


def test_the_same_schema_has_no_difference():
    assert schema_differences(snapshot(orders=ORDERS), snapshot(orders=ORDERS)) == []
    result = schema_verdict("s", snapshot(orders=ORDERS), snapshot(orders=ORDERS))
    assert result.passed and result.observed == [] and result.expected == \
        "1 tables as in the snapshot"


def test_every_difference_is_named():
    recovered = ORDERS.model_copy(deep=True)
    recovered.columns["amount"] = Column(type="numeric(10,2)", not_null=False)
    del recovered.columns["id"]
    recovered.columns["note"] = Column(type="text")
    recovered.indexes = {"orders_amount": "CREATE INDEX orders_amount ON public.orders USING "
                                          "btree (amount)"}
    recovered.constraints["orders_pkey"] = "PRIMARY KEY (id, amount)"
    differences = schema_differences(snapshot(orders=ORDERS, lines=Table()),
                                     snapshot(orders=recovered, audit=Table()))
    assert differences == [
        "missing table public.lines",
        "extra table public.audit",
        "public.orders: missing column id (bigint)",
        "public.orders: extra column note (text)",
        "public.orders.amount: type numeric(10,2), snapshot numeric(12,2)",
        "public.orders.amount: nullable, snapshot not null",
        "public.orders: missing index orders_pkey "
        "(CREATE UNIQUE INDEX orders_pkey ON public.orders USING btree (id))",
        "public.orders: extra index orders_amount "
        "(CREATE INDEX orders_amount ON public.orders USING btree (amount))",
        "public.orders: constraint orders_pkey is PRIMARY KEY (id, amount), snapshot "
        "PRIMARY KEY (id)",
    ]


def test_a_long_list_of_differences_is_cut_and_counted():
    many = SchemaSnapshot(tables={f"public.t{n}": Table() for n in range(60)})
    result = schema_verdict("s", many, SchemaSnapshot())
    assert not result.passed and len(result.observed) == 51
    assert result.observed[-1] == "... and 10 more"


# --- referential_integrity ---------------------------------------------------------------------


def test_the_worst_offenders_are_named_first():
    counted = [Orphans(f"fk{n}", f"public.t{n}", "public.p", orphans=n, examples=((n,),))
               for n in range(8)]
    result = referential_verdict("ri", counted)
    assert result.status == "failed" and result.expected == {"orphans": 0}
    assert result.observed["orphans"] == sum(range(8))
    assert result.observed["foreign_keys"] == 8
    assert [w["foreign_key"] for w in result.observed["worst"]] == ["fk7", "fk6", "fk5", "fk4",
                                                                    "fk3"]
    assert result.observed["worst"][0]["examples"] == [[7]]


def test_no_orphans_passes_and_no_foreign_key_is_skipped_not_passed():
    assert referential_verdict("ri", [Orphans("fk", "public.t", "public.p", 0)]).passed
    nothing = referential_verdict("ri", [])
    assert nothing.status == "skipped" and not nothing.passed
    assert nothing.skipped == "no foreign key to check in the recovered database"


# --- amcheck -------------------------------------------------------------------------------------


def test_amcheck_corruption_fails_and_verifying_nothing_is_an_error():
    clean = amcheck_verdict("a", ["public.t (heap)"], [], [])
    assert clean.status == "passed"
    corrupt = amcheck_verdict("a", ["public.t (heap)"], [],
                              ["public.t_pkey (btree): index is corrupt"])
    assert corrupt.status == "failed"
    assert corrupt.observed["corruption"] == ["public.t_pkey (btree): index is corrupt"]
    nothing = amcheck_verdict("a", [], ["public.t_gin: a gin index, amcheck verifies B-trees"], [])
    assert nothing.status == "error" and "a gin index" in nothing.error


# --- freshness -----------------------------------------------------------------------------------

POINT = RecoveredPoint(at=NOON, meaning="the target time")


@pytest.mark.parametrize("newest, passed, behind", [
    (NOON - timedelta(minutes=4), True, 240.0),
    (NOON - timedelta(minutes=6), False, 360.0),
    (NOON + timedelta(seconds=30), True, -30.0),  # still written while a latest drill ran
    (datetime(2026, 3, 1, 11, 58), True, 120.0),  # timestamp without time zone: read as UTC
    (date(2026, 3, 1), False, 43200.0),
])
def test_freshness_allows_the_tolerance_before_the_recovered_point(newest, passed, behind):
    result = freshness_verdict("f", newest, POINT, timedelta(minutes=5), "5m")
    assert (result.passed, result.observed["behind_seconds"]) == (passed, behind)
    assert result.expected == {"newest_not_before": "2026-03-01 11:55:00.000000+00",
                               "point": "2026-03-01 12:00:00.000000+00",
                               "point_is": "the target time", "tolerance": "5m"}


def test_an_empty_column_is_not_fresh():
    result = freshness_verdict("f", None, POINT, timedelta(minutes=5), "5m")
    assert result.status == "failed" and result.observed == {"newest": None}


def test_the_recovered_point_is_what_the_target_promised():
    recovered = Recovered(last_commit_time=NOON - timedelta(hours=1))
    started = NOON + timedelta(hours=1)
    time_target = ResolvedTarget(mode="time", utc=NOON)
    assert recovered_point(time_target, recovered, started) == POINT
    latest = recovered_point(ResolvedTarget(mode="latest"), recovered, started)
    assert latest.at == started and latest.meaning.startswith("the drill's start")
    by_xid = recovered_point(ResolvedTarget(mode="xid", xid=745), recovered, started)
    assert by_xid == RecoveredPoint(at=NOON - timedelta(hours=1),
                                    meaning="the last commit replayed")
    assert recovered_point(ResolvedTarget(mode="immediate"), Recovered(), started) is None


# --- how a result reads ------------------------------------------------------------------------


def test_a_result_says_its_status_in_the_report_and_reads_back():
    result = skipped("amcheck", "amcheck", "not installed in the backup")
    dumped = result.model_dump(mode="json")
    assert dumped["status"] == "skipped" and dumped["passed"] is False
    assert CheckResult.model_validate(dumped) == result
    assert CheckResult(name="c", passed=False, error="boom").status == "error"


def test_each_check_line_shows_kind_seconds_and_what_was_seen():
    passed = verdict("orders", 3000, 3000).model_copy(update={"seconds": 0.0042})
    assert check_line(passed) == \
        "  check [pass] orders (sql, 0.004s): observed 3000, expected 3000"
    orphans = referential_verdict("fks", [Orphans("r_fkey", "public.r", "public.o", 3,
                                                  ((9,),))])
    assert check_line(orphans) == (
        "  check [FAIL] fks (referential_integrity, 0.000s): observed orphans 3, foreign_keys "
        "1, worst [foreign_key 'r_fkey', table 'public.r', references 'public.o', orphans 3, "
        "examples [[9]]], expected orphans 0")
    assert check_line(skipped("heap", "amcheck", "not installed in the backup")) == \
        "  check [SKIPPED] heap (amcheck, 0.000s): skipped: not installed in the backup"
    errored = CheckResult(name="broken", passed=False, expected=0, error="no such table")
    assert check_line(errored) == \
        "  check [ERROR] broken (sql, 0.000s): no such table; expected 0"
