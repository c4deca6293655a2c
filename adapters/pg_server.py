"""One PostgreSQL server process: start with explicit settings, connect over its socket, stop.

Settings are passed as `-c` options on the command line, the highest-priority source
PostgreSQL has: nothing in a restored backup's postgresql.conf or postgresql.auto.conf
(an archive_command, a primary_conninfo, an external_pid_file) can override them.
"""

from __future__ import annotations

import shlex
import socket
from dataclasses import dataclass
from pathlib import Path

import psycopg

from adapters.pg_runtime import PostgresRuntime
from adapters.processes import is_alive


def free_port() -> int:
    """A port number for the socket file name; sandboxes never listen on TCP."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass(frozen=True)
class PostgresServer:
    runtime: PostgresRuntime
    data_dir: Path
    socket_dir: Path
    port: int
    log_file: Path

    def start(self, settings: dict[str, str], wait: bool = True, timeout_s: int = 60) -> None:
        options = " ".join(shlex.quote(f"-c{key}={value}") for key, value in settings.items())
        args = ["start", "-D", str(self.data_dir), "-l", str(self.log_file), "-o", options]
        args += ["-w", "-t", str(timeout_s)] if wait else ["-W"]
        self.runtime.run("pg_ctl", *args)

    def stop(self, mode: str = "fast") -> None:
        if self.pid() is None:
            return
        self.runtime.run("pg_ctl", "stop", "-D", str(self.data_dir), "-m", mode, "-w", check=False)

    def pid(self) -> int | None:
        """The postmaster's pid if it is alive (a zombie or a stale pid file counts as dead)."""
        try:
            pid = int((self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None
        return pid if is_alive(pid) else None

    def conninfo(self, dbname: str = "postgres", user: str = "postgres") -> str:
        return psycopg.conninfo.make_conninfo(
            host=str(self.socket_dir), port=self.port, dbname=dbname, user=user,
            connect_timeout=5, application_name="pitrdrill",
        )

    def connect(self, dbname: str = "postgres", user: str = "postgres") -> psycopg.Connection:
        return psycopg.connect(self.conninfo(dbname, user), autocommit=True)

    def log_size(self) -> int:
        try:
            return self.log_file.stat().st_size
        except OSError:
            return 0

    def log_since(self, offset: int) -> str:
        try:
            with self.log_file.open("rb") as log:
                log.seek(offset)
                return log.read().decode(errors="replace")
        except OSError:
            return ""

    def log_tail(self, max_bytes: int = 4000) -> str:
        return self.log_since(max(self.log_size() - max_bytes, 0))
