"""Smoke checks against the recovered database: each kind's reads, judged by domain.checks.

A check connects as the spec's db_user, by default the backup's superuser. So that it cannot
use that to reach the sandbox host, every statement runs inside a READ ONLY transaction,
always rolled back, with a statement timeout; and, for everything but amcheck, after
`SET LOCAL ROLE pg_read_all_data` (PostgreSQL 15's predefined role: reads every table, no file
or program access, not a superuser). If that switch fails the check is not run.

A user's `sql` check runs as one statement over the extended query protocol (a prepared
statement): PostgreSQL refuses `select 1; insert ...` or `commit; begin read write; ...` as
multiple commands. The spec's deny-list (domain.checks.refuse_unsafe_check) refuses the ways
back to the session's own role before a sandbox exists. The other kinds run only SQL built
here, from catalog names quoted as identifiers or passed as parameters.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime

import psycopg
from psycopg import sql

from domain.checks import (
    ExpectRows,
    Orphans,
    RecoveredPoint,
    amcheck_verdict,
    errored,
    freshness_verdict,
    referential_verdict,
    schema_verdict,
    skipped,
    verdict,
)
from adapters.schema_snapshot import read_schema
from domain.report import CheckResult
from domain.spec import (
    AmcheckCheck,
    Check,
    FreshnessCheck,
    ReferentialIntegrityCheck,
    SchemaCheck,
    SmokeCheck,
)

# A user's query and catalog reads; whole-relation reads pitrdrill builds (orphan counts,
# amcheck, max() of an unindexed column, cache warming) may take longer on a big table.
STATEMENT_TIMEOUT = "60s"
SCAN_TIMEOUT = "15min"
READER_ROLE = "pg_read_all_data"
# Orphan keys shown for each offending foreign key.
EXAMPLES = 3


class RoleSwitchFailed(Exception):
    pass


class NotRun(Exception):
    """The check cannot run as written (a relation or column it names does not exist)."""


@contextmanager
def read_only(conn: psycopg.Connection, timeout: str = STATEMENT_TIMEOUT,
              as_reader: bool = True) -> Iterator[psycopg.Connection]:
    """One READ ONLY transaction, rolled back after, with a statement timeout; as READER_ROLE
    unless the caller needs the session user's privileges (and says why)."""
    with conn.transaction(force_rollback=True):
        conn.execute("SET TRANSACTION READ ONLY")
        conn.execute(sql.SQL("SET LOCAL statement_timeout = {}").format(sql.Literal(timeout)))
        if as_reader:
            try:
                conn.execute(f"SET LOCAL ROLE {READER_ROLE}")
            except psycopg.Error as exc:
                raise RoleSwitchFailed(str(exc).strip()) from exc
        yield conn


# --- sql -----------------------------------------------------------------------------------------


def run_check(conn: psycopg.Connection, check: Check, db_user: str) -> CheckResult:
    """A user's `sql` check (also bisect's predicate); its errors become the result's."""
    return _judged(conn, check, db_user, None)


def _sql(conn: psycopg.Connection, check: Check) -> CheckResult:
    with read_only(conn):
        # prepare=True: Parse/Bind/Execute, one statement only (the simple protocol, which
        # psycopg uses without parameters, would run several). No parameters are passed, so
        # a % in the SQL stays as written.
        cursor = conn.execute(check.sql, prepare=True)
        if isinstance(check.expect, ExpectRows):
            # One row more than expected is enough to judge, and keeps the report small.
            observed = [list(row) for row in cursor.fetchmany(len(check.expect.rows) + 1)]
        else:
            row = cursor.fetchone()
            observed = row[0] if row else None
    return verdict(check.name, observed, check.expect)


# --- schema --------------------------------------------------------------------------------------


def _schema(conn: psycopg.Connection, check: SchemaCheck) -> CheckResult:
    with read_only(conn):
        recovered = read_schema(conn, check.snapshot.schemas)
    return schema_verdict(check.name, check.snapshot, recovered)


# --- referential_integrity -----------------------------------------------------------------------

_FOREIGN_KEYS = """
    select c.conname, cn.nspname, ct.relname, ct.relkind, pn.nspname, pt.relname, pt.relkind,
           c.confmatchtype,
           array(select a.attname::text from unnest(c.conkey) with ordinality k(attnum, i)
                 join pg_attribute a on a.attrelid = c.conrelid and a.attnum = k.attnum
                 order by k.i),
           array(select a.attname::text from unnest(c.confkey) with ordinality k(attnum, i)
                 join pg_attribute a on a.attrelid = c.confrelid and a.attnum = k.attnum
                 order by k.i)
    from pg_constraint c
    join pg_class ct on ct.oid = c.conrelid join pg_namespace cn on cn.oid = ct.relnamespace
    join pg_class pt on pt.oid = c.confrelid join pg_namespace pn on pn.oid = pt.relnamespace
    -- conparentid = 0: a partitioned table's key once, not once more per partition
    where c.contype = 'f' and c.conparentid = 0
      and (%(names)s::text[] is null or c.conname = any(%(names)s::text[]))
    order by cn.nspname, ct.relname, c.conname
"""


def _relation(schema: str, name: str, relkind: str) -> sql.Composable:
    # ONLY: an inheritance child's rows are not bound by its parent's foreign key; a
    # partitioned table has rows only through its partitions, so it is read whole.
    only = sql.SQL("") if relkind == "p" else sql.SQL("ONLY ")
    return sql.SQL("{}{}").format(only, sql.Identifier(schema, name))


def _orphan_condition(columns: list[str], referenced: list[str], parent: sql.Composable,
                      match_full: bool) -> sql.Composable:
    keys = [sql.Identifier("c", column) for column in columns]
    complete = sql.SQL(" AND ").join(sql.SQL("{} IS NOT NULL").format(key) for key in keys)
    equal = sql.SQL(" AND ").join(sql.SQL("p.{} = {}").format(sql.Identifier(ref), key)
                                  for ref, key in zip(referenced, keys))
    missing = sql.SQL("({} AND NOT EXISTS (SELECT 1 FROM {} p WHERE {}))").format(
        complete, parent, equal)
    if not match_full or len(keys) == 1:
        return missing
    # MATCH FULL: a key NULL in some columns but not all violates the constraint.
    partly_null = sql.SQL("num_nonnulls({}) BETWEEN 1 AND {}").format(
        sql.SQL(", ").join(keys), sql.Literal(len(keys) - 1))
    return sql.SQL("({} OR {})").format(missing, partly_null)


def _orphans(conn: psycopg.Connection, key: tuple) -> Orphans:
    """One foreign key's orphan count, and a few orphan keys when there are any."""
    name, schema, table, kind, ref_schema, ref_table, ref_kind, match, columns, referenced = key
    child = _relation(schema, table, kind)
    orphan = _orphan_condition(columns, referenced, _relation(ref_schema, ref_table, ref_kind),
                               match_full=match == "f")
    (count,) = conn.execute(sql.SQL("SELECT count(*) FROM {} c WHERE {}").format(
        child, orphan)).fetchone()
    examples: tuple = ()
    if count:
        keys = sql.SQL(", ").join(sql.Identifier("c", column) for column in columns)
        examples = tuple(list(row) for row in conn.execute(
            sql.SQL("SELECT {} FROM {} c WHERE {} LIMIT {}").format(
                keys, child, orphan, sql.Literal(EXAMPLES))))
    return Orphans(foreign_key=name, table=f"{schema}.{table}",
                   references=f"{ref_schema}.{ref_table}", orphans=count, examples=examples)


def _referential(conn: psycopg.Connection, check: ReferentialIntegrityCheck) -> CheckResult:
    with read_only(conn, SCAN_TIMEOUT):
        keys = conn.execute(_FOREIGN_KEYS, {"names": check.foreign_keys}).fetchall()
        unknown = sorted(set(check.foreign_keys or ()) - {key[0] for key in keys})
        if unknown:
            raise NotRun(f"no foreign key named {', '.join(unknown)} in the recovered database")
        counted = [_orphans(conn, key) for key in keys]
    return referential_verdict(check.name, counted)


# --- amcheck -------------------------------------------------------------------------------------

NOT_INSTALLED = ("not installed in the backup: amcheck is not an extension of the recovered "
                 "database, and nothing can be installed in a sandbox paused in recovery "
                 "(CREATE EXTENSION amcheck in the source database)")
_EXTENSION = """
    select n.nspname from pg_extension e join pg_namespace n on n.oid = e.extnamespace
    where e.extname = %s
"""
_RELATION = """
    select c.oid, n.nspname, c.relname, c.relkind, am.amname, c.relpersistence
    from pg_class c join pg_namespace n on n.oid = c.relnamespace
    left join pg_am am on am.oid = c.relam
    where c.oid = to_regclass(%s)
"""
_BTREE_INDEXES = """
    select i.oid, n.nspname, i.relname, i.relpersistence
    from pg_index x join pg_class i on i.oid = x.indexrelid
    join pg_namespace n on n.oid = i.relnamespace join pg_am am on am.oid = i.relam
    where x.indrelid = %s and am.amname = 'btree' and x.indisvalid and x.indisready
    order by i.relname
"""
# amcheck's ereport codes for what it found: data_corrupted (heap), index_corrupted.
CORRUPTION_SQLSTATES = ("XX001", "XX002")


def extension_schema(conn: psycopg.Connection, extension: str) -> str | None:
    """The schema of an extension installed in the recovered database, or None."""
    row = conn.execute(_EXTENSION, (extension,)).fetchone()
    return row[0] if row else None


def resolve(conn: psycopg.Connection, name: str) -> tuple | None:
    """(oid, schema, name, relkind, access method, persistence) of the relation `name`
    (resolved as PostgreSQL would: search_path, quoting), or None."""
    return conn.execute(_RELATION, (name,)).fetchone()


class _Amcheck:
    """One relation after another, each verification in its own transaction: amcheck reports
    corruption as an error, which must not keep the next relation from being verified."""

    def __init__(self, conn: psycopg.Connection, schema: str, heapallindexed: bool) -> None:
        self.conn, self.schema, self.heapallindexed = conn, schema, heapallindexed
        self.verified: list[str] = []
        self.unverified: list[str] = []
        self.corruption: list[str] = []
        with read_only(conn, as_reader=False):
            self.in_recovery = conn.execute("select pg_is_in_recovery()").fetchone()[0]
            # verify_heapam came with amcheck 1.3 (PostgreSQL 14): an older version installed
            # in the backup verifies B-trees only.
            self.has_heapam = conn.execute(
                "select to_regprocedure(quote_ident(%s) || '.verify_heapam(regclass, boolean, "
                "boolean, text, bigint, bigint)') is not null", (schema,)).fetchone()[0]

    def _function(self, name: str) -> sql.Composable:
        return sql.Identifier(self.schema, name)

    def _run(self, label: str, statement: sql.Composable, params: tuple) -> list[tuple]:
        # As the session user: amcheck's functions are revoked from PUBLIC and
        # pg_read_all_data may not execute them. Only these calls, on catalog oids, run so.
        try:
            with read_only(self.conn, SCAN_TIMEOUT, as_reader=False):
                rows = self.conn.execute(statement, params).fetchall()
        except psycopg.Error as exc:
            if exc.sqlstate not in CORRUPTION_SQLSTATES:
                raise
            self.corruption.append(f"{label}: {str(exc).strip()}")
            return []
        self.verified.append(label)
        return rows

    def heap(self, oid: int, qualified: str) -> None:
        if not self.has_heapam:
            self.unverified.append(f"{qualified} (heap): this amcheck has no verify_heapam")
            return
        found = self._run(f"{qualified} (heap)", sql.SQL(
            "SELECT blkno, offnum, attnum, msg FROM {}(%s::regclass) LIMIT 50").format(
                self._function("verify_heapam")), (oid,))
        self.corruption += [f"{qualified} (heap) block {blkno}, offset {offnum}"
                            + (f", attribute {attnum}" if attnum is not None else "") + f": {msg}"
                            for blkno, offnum, attnum, msg in found]

    def btree(self, oid: int, qualified: str) -> None:
        arguments = sql.SQL("%s::regclass, true") if self.heapallindexed else \
            sql.SQL("%s::regclass")
        self._run(f"{qualified} (btree)", sql.SQL("SELECT {}({})").format(
            self._function("bt_index_check"), arguments), (oid,))

    def relation(self, name: str) -> None:
        with read_only(self.conn, as_reader=False):
            found = resolve(self.conn, name)
            if found is None:
                raise NotRun(f"no relation {name!r} in the recovered database")
            oid, schema, relname, kind, method, persistence = found
            indexes = self.conn.execute(_BTREE_INDEXES, (oid,)).fetchall() \
                if kind in ("r", "m", "t") else []
        qualified = f"{schema}.{relname}"
        if persistence == "u" and self.in_recovery:
            self.unverified.append(f"{qualified}: unlogged, empty during recovery")
        elif kind in ("r", "m", "t"):
            self.heap(oid, qualified)
            for index_oid, index_schema, index_name, index_persistence in indexes:
                self.btree(index_oid, f"{index_schema}.{index_name}")
        elif kind == "i" and method == "btree":
            self.btree(oid, qualified)
        elif kind == "i":
            self.unverified.append(f"{qualified}: a {method} index, amcheck verifies B-trees")
        else:
            self.unverified.append(f"{qualified}: no storage of its own to verify (name its "
                                   "partitions or tables)")


def _amcheck(conn: psycopg.Connection, check: AmcheckCheck) -> CheckResult:
    with read_only(conn):
        schema = extension_schema(conn, "amcheck")
    if schema is None:
        return skipped(check.name, "amcheck", NOT_INSTALLED)
    amcheck = _Amcheck(conn, schema, check.heapallindexed)
    for name in check.relations:
        amcheck.relation(name)
    return amcheck_verdict(check.name, amcheck.verified, amcheck.unverified, amcheck.corruption)


# --- freshness -----------------------------------------------------------------------------------

_COLUMN_TYPE = """
    select format_type(a.atttypid, a.atttypmod) from pg_attribute a
    where a.attrelid = %s and a.attname = %s and a.attnum > 0 and not a.attisdropped
"""
TIMESTAMP_TYPES = ("timestamp with time zone", "timestamp without time zone", "date")


def _freshness(conn: psycopg.Connection, check: FreshnessCheck,
               point: RecoveredPoint | None) -> CheckResult:
    if point is None:
        raise NotRun("no recovered point to compare with: the target is not a time and no "
                     "commit was replayed")
    with read_only(conn, SCAN_TIMEOUT):
        found = resolve(conn, check.table)
        if found is None:
            raise NotRun(f"no table {check.table!r} in the recovered database")
        oid, schema, table = found[:3]
        column_type = conn.execute(_COLUMN_TYPE, (oid, check.column)).fetchone()
        if column_type is None:
            raise NotRun(f"no column {check.column!r} in {schema}.{table}")
        if not column_type[0].startswith(TIMESTAMP_TYPES):
            raise NotRun(f"{schema}.{table}.{check.column} is {column_type[0]}, not a "
                         "timestamp or date")
        (newest,) = conn.execute(sql.SQL("SELECT max({}) FROM {}").format(
            sql.Identifier(check.column), sql.Identifier(schema, table))).fetchone()
    assert newest is None or isinstance(newest, (datetime, date))
    return freshness_verdict(check.name, newest, point, check.tolerance_delta(), check.tolerance)


# --- every kind ----------------------------------------------------------------------------------


def _judged(conn: psycopg.Connection, check: SmokeCheck, db_user: str,
            point: RecoveredPoint | None) -> CheckResult:
    expected = getattr(check, "expect", None)
    try:
        match check:
            case Check():
                return _sql(conn, check)
            case SchemaCheck():
                return _schema(conn, check)
            case ReferentialIntegrityCheck():
                return _referential(conn, check)
            case AmcheckCheck():
                return _amcheck(conn, check)
            case FreshnessCheck():
                return _freshness(conn, check, point)
    except RoleSwitchFailed as exc:
        return errored(check.name, check.kind,
                       f"not run: {db_user} cannot SET ROLE {READER_ROLE} ({exc}); checks only "
                       f"run as {READER_ROLE}: grant it to {db_user}, or use a superuser db_user",
                       expected)
    except NotRun as exc:
        return errored(check.name, check.kind, f"not run: {exc}", expected)
    except psycopg.Error as exc:
        return errored(check.name, check.kind, str(exc).strip(), expected)
    raise TypeError(f"unknown check kind {check.kind!r}")


def run_smoke_check(conn: psycopg.Connection, check: SmokeCheck, db_user: str,
                    point: RecoveredPoint | None = None) -> CheckResult:
    """Any kind of check, timed; what went wrong is the result's error, never raised."""
    began = time.perf_counter()
    result = _judged(conn, check, db_user, point)
    result.seconds = round(time.perf_counter() - began, 6)
    return result
