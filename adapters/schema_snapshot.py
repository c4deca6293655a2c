"""A database's schema from pg_catalog (domain.schema.SchemaSnapshot): for
`pitrdrill schema snapshot` against a live database, and for the `schema` check against the
recovered one, by the same queries.

Tables are ordinary and partitioned tables outside PostgreSQL's own schemas, objects that
belong to an extension left out (they come with the extension, not with the application).
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import psycopg

from domain.errors import DrillError, ErrorCode
from domain.schema import Column, SchemaSnapshot, Table

# The tables compared (t, in schema n): %(schemas)s is the schemas asked for, NULL: all.
_FROM_TABLES = """
    from pg_class t join pg_namespace n on n.oid = t.relnamespace
"""
_USER_TABLE = """
    t.relkind in ('r', 'p')
    and n.nspname not in ('pg_catalog', 'information_schema')
    and n.nspname !~ '^pg_(toast|temp_)'
    and (%(schemas)s::text[] is null or n.nspname = any(%(schemas)s::text[]))
    and not exists (select 1 from pg_depend d where d.classid = 'pg_class'::regclass
                    and d.objid = t.oid and d.deptype = 'e')
"""
_TABLE = "n.nspname || '.' || t.relname"

_TABLE_NAMES = f"select {_TABLE} {_FROM_TABLES} where {_USER_TABLE} order by 1"
_COLUMNS = f"""
    select {_TABLE}, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull
    {_FROM_TABLES} join pg_attribute a on a.attrelid = t.oid
    where {_USER_TABLE} and a.attnum > 0 and not a.attisdropped
    order by 1, a.attnum
"""
_INDEXES = f"""
    select {_TABLE}, i.relname, pg_get_indexdef(i.oid)
    {_FROM_TABLES} join pg_index x on x.indrelid = t.oid join pg_class i on i.oid = x.indexrelid
    where {_USER_TABLE}
    order by 1, 2
"""
_CONSTRAINTS = f"""
    select {_TABLE}, c.conname, pg_get_constraintdef(c.oid)
    {_FROM_TABLES} join pg_constraint c on c.conrelid = t.oid
    where {_USER_TABLE}
    order by 1, 2
"""


def read_schema(conn: psycopg.Connection, schemas: list[str] | None = None) -> SchemaSnapshot:
    """The schema as seen by `conn`, which must be inside a transaction (the search_path set
    here is LOCAL to it): with only pg_catalog on the path, format_type, pg_get_indexdef and
    pg_get_constraintdef qualify every user name, the same way on any server."""
    conn.execute("SET LOCAL search_path = pg_catalog")
    params = {"schemas": schemas}
    tables = {name: Table() for (name,) in conn.execute(_TABLE_NAMES, params)}
    for table, column, type_, not_null in conn.execute(_COLUMNS, params):
        tables[table].columns[column] = Column(type=type_, not_null=not_null)
    for table, index, definition in conn.execute(_INDEXES, params):
        tables[table].indexes[index] = definition
    for table, constraint, definition in conn.execute(_CONSTRAINTS, params):
        tables[table].constraints[constraint] = definition
    return SchemaSnapshot(schemas=schemas, tables=tables)


def snapshot_of(dsn: str, schemas: list[str] | None = None) -> SchemaSnapshot:
    """A live database's schema, read in a READ ONLY transaction (it changes nothing)."""
    try:
        with psycopg.connect(dsn, autocommit=True) as conn, \
                conn.transaction(force_rollback=True):
            conn.execute("SET TRANSACTION READ ONLY")
            snapshot = read_schema(conn, schemas)
            snapshot.database = conn.info.dbname
    except psycopg.Error as exc:
        raise DrillError(ErrorCode.PREFLIGHT_FAILED,
                         f"cannot read the schema: {str(exc).strip()}",
                         "Check the DSN reaches the live database and its user may connect.") \
            from None
    snapshot.taken_at = datetime.now(timezone.utc)
    return snapshot


def inline_snapshots(fields: Any, spec_path: str) -> Any:
    """A spec's `schema` checks with their `snapshot` path (relative to the spec file) replaced
    by the snapshot read from it, so the drill's input is self-contained: the worker running
    the check may be on another host. Reading is all this does; validation comes after."""
    checks = fields.get("checks") if isinstance(fields, dict) else None
    if not isinstance(checks, list):
        return fields
    base = Path.cwd() if spec_path == "-" else Path(spec_path).resolve().parent
    for check in checks:
        if isinstance(check, dict) and check.get("kind") == "schema" \
                and isinstance(check.get("snapshot"), str):
            path = base / check["snapshot"]
            try:
                check["snapshot"] = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise DrillError(
                    ErrorCode.SPEC_INVALID,
                    f"check {check.get('name')!r}: cannot read the schema snapshot {path}: {exc}",
                    "Write it with `pitrdrill schema snapshot --dsn ... > schema.json`; a "
                    "relative path is read from the spec's directory.") from None
    return fields
