"""The isolation lab: what a sandbox must not be able to reach, and a backup that tries.

- a publisher PostgreSQL listening on TCP (the "production server on the host");
- a subscriber primary with WAL archiving, dblink and postgres_fdw installed, an enabled
  logical subscription `sub` to the publisher (slot "sub" there), and pg_cron asked for in
  its postgresql.auto.conf (pg_cron is not even installed: a server loading it fails);
- its base backup `subscribed`, taken while the subscription ran; after it the subscription
  is disabled and the publisher writes more rows, which wait in the slot: a restored
  subscription that connected would consume them and move the slot;
- a copy of the archive under a path with a space and a single quote.

The subscriber primary is stopped once everything is archived: the archive and the backups
do not change any more, and `digests` fingerprints them byte for byte.
"""

from __future__ import annotations

import hashlib
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from adapters.filesystem_backups import FilesystemBackups
from adapters.pg_runtime import PostgresRuntime
from domain.catalog import BaseBackup
from domain.spec import FilesystemSource
from lab.lab import Lab
from lab.publisher import Publisher

QUOTED_ARCHIVE = "wal arch'ive"
BACKUP = "subscribed"
PRELOAD = "pg_stat_statements, pg_cron"


def tree_digest(root: Path) -> dict[str, str]:
    """Every file under root (relative path) with the sha256 of its bytes."""
    return {str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(root.rglob("*")) if path.is_file()}


@dataclass
class IsolationLab:
    lab: Lab
    publisher: Publisher
    archive: Path  # the copy with a space and a quote in its path
    slot_before: tuple = ()
    live_subscriber_connected: bool = False
    live_dblink: str = ""
    digests: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def source(self) -> FilesystemSource:
        return FilesystemSource(base_backups=str(self.lab.base_backups),
                                wal_archive=str(self.archive))

    def backup(self) -> BaseBackup:
        return next(b for b in FilesystemBackups.read(self.lab.base_backups, self.archive)
                    if b.id == BACKUP)

    def frozen(self) -> dict[str, dict[str, str]]:
        return {str(path): tree_digest(path) for path in
                (self.lab.wal_archive, self.archive, self.lab.base_backups)}

    def assert_untouched(self) -> None:
        """The WAL archives and the base backups, byte for byte as before any drill."""
        assert self.frozen() == self.digests


def wait_for(what: str, predicate, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.05)


@contextmanager
def isolation_lab(root: Path, runtime: PostgresRuntime, **publisher_options
                  ) -> Iterator[IsolationLab]:
    with Publisher(root / "publisher", runtime, **publisher_options) as publisher, \
            Lab(root / "subscriber", runtime) as lab:
        publisher.publish()
        publisher.insert(1, 100)
        lab.sql("CREATE TABLE events (id bigint PRIMARY KEY, note text)")
        lab.sql("CREATE EXTENSION dblink")
        lab.sql("CREATE EXTENSION postgres_fdw")
        lab.sql(f"CREATE SUBSCRIPTION sub CONNECTION '{publisher.tcp_conninfo}' "
                "PUBLICATION pub")
        wait_for("initial sync", lambda: lab.sql("SELECT count(*) FROM events")[0][0] == 100)
        wait_for("subscriber streaming", lambda: publisher.slot("sub")[0])
        built = IsolationLab(lab, publisher, root / QUOTED_ARCHIVE)
        # Controls: these observations do see a live subscriber, and dblink from a server
        # that is not confined does reach the publisher.
        built.live_subscriber_connected = any(a == "sub" for a, _, _ in publisher.walsenders())
        built.live_dblink = lab.sql(f"SELECT dblink_connect('{publisher.tcp_conninfo}')")[0][0]
        lab.sql(f"ALTER SYSTEM SET shared_preload_libraries = {PRELOAD}")
        lab.base_backup(BACKUP)
        lab.archive_all()
        lab.sql("ALTER SUBSCRIPTION sub DISABLE")
        wait_for("slot released", lambda: not publisher.slot("sub")[0])
        lab.archive_all()
        lab.primary.stop("fast")
        publisher.insert(101, 50)
        built.slot_before = publisher.slot("sub")
        shutil.copytree(lab.wal_archive, built.archive)
        runtime.give(built.archive, recursive=True)
        built.digests = built.frozen()
        try:
            yield built
        finally:
            shutil.rmtree(built.archive, ignore_errors=True)
