"""A second lab PostgreSQL that listens on 127.0.0.1: a logical-replication publisher, and the
"production server on the host" a sandbox must never reach (dblink, postgres_fdw, a restored
subscription). Used by the isolation tests.
"""

from __future__ import annotations

from pathlib import Path

import psycopg

from adapters.pg_runtime import PostgresRuntime, remove_tree
from adapters.pg_server import PostgresServer, free_port
from adapters.reachability import ensure_reachable

PUBLICATION = "pub"


class Publisher:
    """initdb'd under `root`, listening on 127.0.0.1:<free port> (trust for loopback) and on
    its own unix socket, wal_level logical."""

    def __init__(self, root: Path, runtime: PostgresRuntime | None = None,
                 listen_addresses: str = "127.0.0.1", trusted_networks: tuple[str, ...] = ()
                 ) -> None:
        self.root = root.resolve()
        self.runtime = runtime or PostgresRuntime.from_env()
        self.listen_addresses = listen_addresses
        # Beyond loopback: networks whose clients are trusted (a container bridge, for a
        # control showing that an unconfined container does reach this server).
        self.trusted_networks = trusted_networks
        self.port = free_port()
        self.server = PostgresServer(runtime=self.runtime, data_dir=self.root / "data",
                                     socket_dir=self.root / "socket", port=self.port,
                                     log_file=self.root / "publisher.log")

    def __enter__(self) -> Publisher:
        try:
            self.start()
        except BaseException:
            self.destroy()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.destroy()

    @property
    def tcp_conninfo(self) -> str:
        """How a subscriber (or a sandbox's dblink) would reach it: TCP on the loopback."""
        return f"host=127.0.0.1 port={self.port} dbname=postgres user=postgres"

    def start(self) -> None:
        ensure_reachable(self.root, self.runtime.os_user)
        remove_tree(self.root)
        self.runtime.make_private_dir(self.root, 0o755)
        self.runtime.make_private_dir(self.server.socket_dir, 0o755)
        self.runtime.run("initdb", "-D", str(self.server.data_dir), "-U", "postgres",
                         "-A", "trust", "--no-sync", "-E", "UTF8", "--locale", "C")
        with (self.server.data_dir / "pg_hba.conf").open("a") as hba:
            for network in self.trusted_networks:
                hba.write(f"host all all {network} trust\n")
        self.server.start({
            "listen_addresses": self.listen_addresses,
            "unix_socket_directories": str(self.server.socket_dir),
            "port": str(self.port),
            "wal_level": "logical",
            "max_wal_senders": "4",
            "max_replication_slots": "4",
            "fsync": "off",
            "autovacuum": "off",
        })

    def destroy(self) -> None:
        self.server.stop("immediate")
        remove_tree(self.root)

    def sql(self, query: str, params: tuple = ()) -> list[tuple]:
        with self.server.connect() as conn:
            cur = conn.execute(query, params)
            return cur.fetchall() if cur.description else []

    def publish(self, table: str = "events") -> None:
        self.sql(f"CREATE TABLE {table} (id bigint PRIMARY KEY, note text)")
        self.sql(f"CREATE PUBLICATION {PUBLICATION} FOR TABLE {table}")

    def insert(self, first: int, count: int, table: str = "events") -> None:
        self.sql(f"INSERT INTO {table} SELECT g, 'row ' || g FROM "
                 f"generate_series({first}, {first + count - 1}) g")

    def slot(self, name: str) -> tuple[bool, str | None, int | None]:
        """(active, confirmed_flush_lsn, active_pid) of a replication slot."""
        rows = self.sql("SELECT active, confirmed_flush_lsn::text, active_pid "
                        "FROM pg_replication_slots WHERE slot_name = %s", (name,))
        if not rows:
            raise LookupError(f"no replication slot {name!r} on the publisher")
        return rows[0]

    def walsenders(self) -> list[tuple]:
        """Every replication connection: (application_name, client_addr, state)."""
        return self.sql("SELECT application_name, client_addr::text, state "
                        "FROM pg_stat_replication")

    def connect(self) -> psycopg.Connection:
        return self.server.connect()
