"""A lab whose primary archives through pgBackRest into a real repository, with a stanza,
a full and an incremental backup and markers: the pgBackRest twin of the filesystem lab.

The repository path has a space, a quote and a percent sign, so every command line built
from it is proven quoted; orders live in a tablespace, so restores must remap it."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from adapters.pg_runtime import PostgresRuntime
from adapters.pg_server import PostgresServer
from adapters.pgbackrest_cli import PgBackRestRunner, repository_options, server_command
from domain.spec import PgBackRestSource
from lab.lab import Lab, Marker
from lab.workload import OrdersWorkload

STANZA = "lab"


@dataclass(frozen=True)
class ArchivingPrimary(PostgresServer):
    """The lab primary with its WAL archived by pgBackRest instead of the lab's cp."""

    archive_command: str = ""

    def start(self, settings: dict[str, str], wait: bool = True, timeout_s: int = 60) -> None:
        super().start({**settings, "archive_command": self.archive_command}, wait, timeout_s)


@dataclass
class Stanza:
    source: PgBackRestSource
    runner: PgBackRestRunner
    lab: Lab
    root: Path
    tablespace: Path
    # pg_current_wal_insert_lsn() right before and right after each backup, by backup kind.
    lsn_windows: dict[str, tuple[int, int]]
    batches: list[Marker]


def pgbackrest_command(runner: PgBackRestRunner, source: PgBackRestSource, *args: str) -> str:
    done = runner.run([*repository_options(source), *args])
    if done.returncode != 0:
        raise RuntimeError(done.stderr + done.stdout)
    return done.stdout


def _backup(stanza: Stanza, kind: str, primary_options: list[str]) -> None:
    before = stanza.lab.current_lsn()
    pgbackrest_command(
        stanza.runner, stanza.source, *primary_options, f"--type={kind}", "--start-fast",
        "--repo1-retention-full=2", "backup",
    )
    stanza.lsn_windows[kind] = (before, stanza.lab.current_lsn())


@contextmanager
def pgbackrest_lab(work_root: Path, runtime: PostgresRuntime,
                   name: str = "pgbackrest") -> Iterator[Stanza]:
    """orders (in a tablespace): 3 x 100 rows, full backup, 2 x 100 rows, incr backup,
    3 x 100 rows (markers), everything archived."""
    root = work_root / name
    try:
        runtime.make_private_dir(root, 0o755)
        repo = runtime.make_private_dir(root / "repo it's 100%", 0o750)
        tablespace = runtime.make_private_dir(root / "tablespace")
        source = PgBackRestSource(stanza=STANZA, repo_path=str(repo))
        runner = PgBackRestRunner(os_user=runtime.os_user)
        lab = Lab(root / "lab", runtime)
        plain = lab.primary
        lab.primary = ArchivingPrimary(
            plain.runtime, plain.data_dir, plain.socket_dir, plain.port, plain.log_file,
            archive_command=server_command([
                runner.binary, *repository_options(source), f"--pg1-path={plain.data_dir}",
                f"--lock-path={root / 'lock'}", "archive-push",
            ]) + " %p",
        )
        primary_options = [
            f"--pg1-path={plain.data_dir}", f"--pg1-socket-path={plain.socket_dir}",
            f"--pg1-port={plain.port}", f"--lock-path={root / 'lock'}",
        ]
        with lab:
            result = Stanza(source, runner, lab, root, tablespace, {}, [])
            orders = OrdersWorkload(lab, "demo")
            orders.create()
            lab.sql(f"CREATE TABLESPACE archive_space LOCATION '{tablespace}'")
            lab.sql("ALTER TABLE orders SET TABLESPACE archive_space", "demo")
            orders.insert_batches(3, 100)
            pgbackrest_command(runner, source, *primary_options, "stanza-create")
            # check takes no lock, and refuses --lock-path.
            pgbackrest_command(runner, source, *primary_options[:-1], "check")
            _backup(result, "full", primary_options)
            orders.insert_batches(2, 100)
            _backup(result, "incr", primary_options)
            # Backup stop times carry whole seconds: keep targets clear of the backup's last one.
            time.sleep(1.1)
            for _ in range(3):
                result.batches.append(orders.insert_batch(100))
                time.sleep(0.02)
            lab.archive_all()
            yield result
    finally:
        shutil.rmtree(root, ignore_errors=True)
