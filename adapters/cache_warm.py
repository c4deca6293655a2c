"""Cache warming: read the spec's relations (and, with `indexes`, their indexes) once the
checks passed, so that a promoted recovery does not meet its first queries with a cold cache.

- pg_prewarm, when installed in the recovered database (a sandbox paused in recovery cannot
  install anything): `pg_prewarm(relation)` reads each relation's main fork into shared
  buffers.
- otherwise a sequential read of each table: `SELECT count(*) FROM ONLY t` with index scans
  disabled for the statement. PostgreSQL reads a table larger than a quarter of
  shared_buffers through a small ring buffer (256 kB), so for big tables this warms the
  operating system's page cache rather than shared_buffers. An index cannot be read
  sequentially from SQL: without pg_prewarm indexes are not warmed, and the report lists only
  what was read.

A partitioned table or index is warmed through its partitions. Every read runs like a check:
a READ ONLY transaction as pg_read_all_data (pg_prewarm needs only SELECT on the relation).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import psycopg
import structlog
from psycopg import sql

from adapters.smoke_checks import SCAN_TIMEOUT, RoleSwitchFailed, extension_schema, read_only, \
    resolve
from domain.errors import DrillError, ErrorCode
from domain.report import WarmedRelation, WarmReport
from domain.spec import WarmSpec

_log = structlog.get_logger("pitrdrill.warm")

# The relations holding data: a partitioned relation's leaf partitions, else itself.
_LEAVES = """
    select c.oid, n.nspname, c.relname, c.relkind
    from pg_class c join pg_namespace n on n.oid = c.relnamespace
    where (c.oid = %(oid)s
           or c.oid in (select relid from pg_partition_tree(%(oid)s) where isleaf))
      and c.relkind not in ('p', 'I')
    order by c.relname
"""
_INDEXES = """
    select i.oid, n.nspname, i.relname, i.relkind
    from pg_index x join pg_class i on i.oid = x.indexrelid
    join pg_namespace n on n.oid = i.relnamespace
    where x.indrelid = %s and x.indisvalid
    order by i.relname
"""
TABLES = ("r", "m", "t")


def _relations(conn: psycopg.Connection, spec: WarmSpec, database: str) -> list[tuple]:
    """(oid, schema, name, relkind) of everything to warm, in order; WARM_FAILED naming each
    relation the recovered database does not have, before anything is read."""
    found = {name: resolve(conn, name) for name in spec.relations}
    missing = [name for name, row in found.items() if row is None]
    if missing:
        raise DrillError(ErrorCode.WARM_FAILED,
                         f"no relation {', '.join(map(repr, missing))} to warm in the recovered "
                         f"database {database}")
    relations: list[tuple] = []
    for oid, *_ in found.values():
        for leaf in conn.execute(_LEAVES, {"oid": oid}).fetchall():
            relations.append(leaf)
            if spec.indexes and leaf[3] in TABLES:
                relations += conn.execute(_INDEXES, (leaf[0],)).fetchall()
    return list(dict.fromkeys(relations))  # a relation named twice is read once


def _prewarm(conn: psycopg.Connection, schema: str, oid: int, block_size: int) -> int:
    (blocks,) = conn.execute(sql.SQL("SELECT {}(%s::regclass)").format(
        sql.Identifier(schema, "pg_prewarm")), (oid,)).fetchone()
    return blocks * block_size


def _sequential_read(conn: psycopg.Connection, schema: str, name: str, oid: int) -> int:
    # Only a sequential scan reads every page: an index-only scan would read the index.
    for setting in ("enable_indexscan", "enable_indexonlyscan", "enable_bitmapscan"):
        conn.execute(f"SET LOCAL {setting} = off")
    conn.execute(sql.SQL("SELECT count(*) FROM ONLY {}").format(
        sql.Identifier(schema, name))).fetchone()
    (size,) = conn.execute("select pg_relation_size(%s, 'main')", (oid,)).fetchone()
    return size


def warm(conn: psycopg.Connection, spec: WarmSpec, database: str,
         progress: Callable[[WarmReport], None] = lambda report: None) -> WarmReport:
    """Warm every relation of `spec`; `progress` is given the report after each one."""
    began = time.perf_counter()
    report = WarmReport()
    try:
        with read_only(conn):
            prewarm = extension_schema(conn, "pg_prewarm")
            (block_size,) = conn.execute(
                "select current_setting('block_size')::int").fetchone()
            relations = _relations(conn, spec, database)
        for oid, schema, name, kind in relations:
            if prewarm is None and kind not in TABLES:
                _log.warning("not warmed: without pg_prewarm only tables are read, "
                             "sequentially", relation=f"{schema}.{name}")
                continue
            with read_only(conn, SCAN_TIMEOUT):
                size = _prewarm(conn, prewarm, oid, block_size) if prewarm else \
                    _sequential_read(conn, schema, name, oid)
            report.relations.append(WarmedRelation(
                name=f"{schema}.{name}", bytes=size,
                method="pg_prewarm" if prewarm else "sequential_read"))
            report.bytes_warmed += size
            report.seconds = round(time.perf_counter() - began, 6)
            progress(report.model_copy(deep=True))
    except RoleSwitchFailed as exc:
        raise DrillError(ErrorCode.WARM_FAILED, f"cannot read as pg_read_all_data: {exc}",
                         "Grant pg_read_all_data to the spec's db_user, or use a superuser.") \
            from None
    except psycopg.Error as exc:
        raise DrillError(ErrorCode.WARM_FAILED, str(exc).strip()) from None
    report.seconds = round(time.perf_counter() - began, 6)
    return report
