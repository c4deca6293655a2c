"""`pitrdrill schema snapshot`: a live database's schema as JSON, for a `schema` check to
compare the recovered database with (`> schema.json`, then `snapshot: schema.json`)."""

from __future__ import annotations

import argparse

from adapters.schema_snapshot import snapshot_of
from workers.cli.common import EXIT_OK, add_json


async def snapshot(args: argparse.Namespace) -> int:
    # Always JSON: the snapshot is meant to be redirected into a file the spec names.
    print(snapshot_of(args.dsn, args.schema).model_dump_json(indent=2, exclude_none=True))
    return EXIT_OK


def register(commands: argparse._SubParsersAction) -> None:
    schema = commands.add_parser("schema", help="database schemas for `schema` checks") \
        .add_subparsers(dest="schema_command", required=True)
    parser = schema.add_parser(
        "snapshot", help="print a live database's tables, columns, indexes and constraints "
                         "(JSON) for a `schema` check")
    parser.add_argument("--dsn", required=True,
                        help="libpq connection string or URI of the live database")
    parser.add_argument("--schema", action="append",
                        help="only this schema (repeatable); default: every user schema")
    add_json(parser, "print JSON (the snapshot is always JSON; errors too with this)")
    parser.set_defaults(handler=snapshot)
