"""A database's schema as the `schema` check compares it: tables, their columns (type, NOT
NULL), indexes and constraints, read from pg_catalog (adapters/schema_snapshot.py) with
`search_path = pg_catalog`, so every name a definition mentions is schema-qualified the same
way on both sides."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field


class Column(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: str  # format_type(): e.g. numeric(12,2), character varying(40), public.mood
    not_null: bool = False


class Table(BaseModel):
    model_config = ConfigDict(extra="forbid")

    columns: dict[str, Column] = Field(default_factory=dict)
    indexes: dict[str, str] = Field(default_factory=dict)  # name: pg_get_indexdef()
    constraints: dict[str, str] = Field(default_factory=dict)  # name: pg_get_constraintdef()


class SchemaSnapshot(BaseModel):
    """`pitrdrill schema snapshot --dsn ...`: what the recovered database must look like."""

    model_config = ConfigDict(extra="forbid")

    # The schemas read; None: every schema but PostgreSQL's own (pg_catalog, pg_toast, ...).
    schemas: list[str] | None = None
    tables: dict[str, Table] = Field(default_factory=dict)  # "schema.table"
    database: str | None = None  # where it was taken, for the reader
    taken_at: datetime | None = None


def _keyed(kind: str, where: str, snapshot: dict[str, str], recovered: dict[str, str]) -> list[str]:
    """Missing, extra and changed named definitions (indexes or constraints) of one table."""
    found = [f"{where}: missing {kind} {name} ({definition})"
             for name, definition in snapshot.items() if name not in recovered]
    found += [f"{where}: extra {kind} {name} ({definition})"
              for name, definition in recovered.items() if name not in snapshot]
    found += [f"{where}: {kind} {name} is {recovered[name]}, snapshot {definition}"
              for name, definition in snapshot.items()
              if name in recovered and recovered[name] != definition]
    return found


def _columns(where: str, snapshot: dict[str, Column], recovered: dict[str, Column]) -> list[str]:
    found = [f"{where}: missing column {name} ({column.type})"
             for name, column in snapshot.items() if name not in recovered]
    found += [f"{where}: extra column {name} ({column.type})"
              for name, column in recovered.items() if name not in snapshot]
    for name, column in snapshot.items():
        now = recovered.get(name)
        if now is None:
            continue
        if now.type != column.type:
            found.append(f"{where}.{name}: type {now.type}, snapshot {column.type}")
        if now.not_null != column.not_null:
            nullable = {True: "not null", False: "nullable"}
            found.append(f"{where}.{name}: {nullable[now.not_null]}, snapshot "
                         f"{nullable[column.not_null]}")
    return found


def schema_differences(snapshot: SchemaSnapshot, recovered: SchemaSnapshot) -> list[str]:
    """Every difference, each naming its table and object; empty when the schemas match. A
    missing or extra table is one difference (its columns are not listed again)."""
    found = [f"missing table {name}" for name in snapshot.tables if name not in recovered.tables]
    found += [f"extra table {name}" for name in recovered.tables if name not in snapshot.tables]
    for name, table in snapshot.tables.items():
        now = recovered.tables.get(name)
        if now is None:
            continue
        found += _columns(name, table.columns, now.columns)
        found += _keyed("index", name, table.indexes, now.indexes)
        found += _keyed("constraint", name, table.constraints, now.constraints)
    return found
