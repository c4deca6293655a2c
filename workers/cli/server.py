"""`pitrdrill server`: the embedded default — a Temporal dev server keeping its history in a
SQLite file (so drills survive its restart), with its UI and the drill's search attributes."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from workers.client import dev_server_command

DEFAULT_DB_FILE = Path("/var/tmp/pitrdrill/temporal.sqlite")


async def server(args: argparse.Namespace) -> int:
    db_file = Path(args.db_file)
    db_file.parent.mkdir(parents=True, exist_ok=True)
    command = dev_server_command(db_file, args.port, args.ui_port, args.ip)
    # The server is the process: signals and exit status are its own.
    os.execv(command[0], command)


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "server", help="run a Temporal dev server with a persistent file, its UI, and "
                       "pitrdrill's search attributes (the embedded default)")
    parser.add_argument("--db-file", default=str(DEFAULT_DB_FILE),
                        help=f"SQLite file for the server's state (default {DEFAULT_DB_FILE})")
    parser.add_argument("--port", type=int, default=7233, help="frontend (gRPC) port")
    parser.add_argument("--ui-port", type=int, default=8233, help="web UI port")
    parser.add_argument("--ip", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--json", action="store_true", help="(the server logs as it does)")
    parser.set_defaults(handler=server)
