"""The data every figure is measured on: a base backup, its WAL archive, recovery targets.

The large set is one wide table written with INSERT ... SELECT generate_series (fast: the lab
primary runs with fsync=off), backed up, then UPDATEd range by range (a TID range scan each, so
no index and no full scans) until enough WAL lies past the backup. A recovery target is taken
where the WAL volume crosses each growth fraction. The primaries are stopped once the data is
built, so an idle server cannot add noise to the timed runs.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from adapters.filesystem_backups import FilesystemBackups
from adapters.pgbackrest_cli import PgBackRestRunner, repository_options, server_command
from bench.profile import Profile
from domain.lsn import format_lsn, parse_lsn, segment_name, segment_number
from domain.spec import PgBackRestSource
from lab.lab import Lab
from lab.pgbackrest import ArchivingPrimary, pgbackrest_command
from lab.workload import OrdersWorkload

STANZA = "bench"

LEDGER = "ledger"
_ROW_BYTES = 1000  # ~960-character payload plus header: 8 rows to an 8 kB heap page
_PAGE = 8192
_CHUNKS_PER_RUN = 32  # UPDATE statements for the whole WAL volume: the growth resolution
_ARCHIVE_TIMEOUT_S = 600


@dataclass(frozen=True)
class RecoveryTarget:
    """recovery_target_lsn (exclusive, then pause) and the WAL replay reads to get there."""

    lsn: str
    wal_bytes: int  # from the backup's redo point (START WAL LOCATION) to the target


@dataclass(frozen=True)
class PgBackRestCopy:
    """The same cluster in a real pgBackRest repository: one full backup (taken right before
    the plain one, defaults: gz compression) and every WAL segment, archived by archive-push
    beside the plain archive's cp. Its paths carry no quote, so pgbackrest's own generated
    restore_command works (the bare pgBackRest recovery uses it)."""

    source: PgBackRestSource
    runner: PgBackRestRunner
    backup_label: str
    start_lsn: str

    @property
    def repo(self) -> Path:
        return Path(self.source.repo_path)


@dataclass(frozen=True)
class RecoverySet:
    name: str
    database: str
    base_backups: Path  # the catalog directory: holds exactly one plain backup
    backup: Path
    backup_bytes: int
    wal_archive: Path
    start_lsn: str
    targets: tuple[RecoveryTarget, ...]  # ascending WAL volume
    tar_backup: Path | None = None  # pg_basebackup -Ft of the same data, alone in its catalog
    pgbackrest: PgBackRestCopy | None = None

    @property
    def last_target(self) -> RecoveryTarget:
        return self.targets[-1]

    def segments_until(self, target: RecoveryTarget) -> list[Path]:
        """Archived segments recovery reads: from the redo point's segment to the target's,
        plus the next one (the startup process reads ahead of the record it stops before)."""
        first = segment_number(parse_lsn(self.start_lsn))
        last = segment_number(parse_lsn(target.lsn)) + 1
        paths = (self.wal_archive / segment_name(1, segno) for segno in range(first, last + 1))
        return [path for path in paths if path.exists()]

    def warm_paths(self, target: RecoveryTarget) -> list[Path]:
        """What a recovery to `target` reads: pre-warmed before every timed run."""
        return [self.backup, *self.segments_until(target)]

    def pgbackrest_source(self) -> dict[str, str]:
        """A drill spec's source: the pgBackRest repository holding the same cluster."""
        assert self.pgbackrest is not None
        return {"kind": "pgbackrest", "stanza": self.pgbackrest.source.stanza,
                "repo_path": self.pgbackrest.source.repo_path}

    def pgbackrest_warm_paths(self) -> list[Path]:
        """What a recovery from the repository reads: its backup and its archive."""
        assert self.pgbackrest is not None
        repo, stanza = self.pgbackrest.repo, self.pgbackrest.source.stanza
        return [repo / "backup" / stanza / self.pgbackrest.backup_label,
                repo / "archive" / stanza]

    def source(self, tar: bool = False) -> dict[str, str]:
        """A drill spec's source: the plain backup's catalog, or the tar copy's."""
        assert not tar or self.tar_backup is not None
        backups = self.tar_backup.parent if tar and self.tar_backup else self.base_backups
        return {"kind": "filesystem", "base_backups": str(backups),
                "wal_archive": str(self.wal_archive)}


def archiving_to_pgbackrest(lab: Lab, repo: Path) -> PgBackRestSource:
    """Make the lab's primary archive every segment into the plain archive (cp) and into a
    pgBackRest repository at `repo` (archive-push); to call before the lab starts. Until the
    stanza exists archive-push fails and the archiver retries (the cp is not repeated)."""
    runtime = lab.runtime
    runtime.make_private_dir(repo.parent, 0o755)
    runtime.make_private_dir(repo, 0o750)
    source = PgBackRestSource(stanza=STANZA, repo_path=str(repo))
    runner = PgBackRestRunner(os_user=runtime.os_user)
    plain = lab.primary
    push = server_command([runner.binary, *repository_options(source),
                           f"--pg1-path={plain.data_dir}", f"--lock-path={repo.parent / 'lock'}",
                           "archive-push"])
    archive = lab.wal_archive
    lab.primary = ArchivingPrimary(
        plain.runtime, plain.data_dir, plain.socket_dir, plain.port, plain.log_file,
        archive_command=f"(test -f {archive}/%f || cp %p {archive}/%f) && {push} %p")
    return source


def _pgbackrest_options(lab: Lab, source: PgBackRestSource) -> list[str]:
    primary = lab.primary
    return [f"--pg1-path={primary.data_dir}", f"--pg1-socket-path={primary.socket_dir}",
            f"--pg1-port={primary.port}", f"--lock-path={Path(source.repo_path).parent / 'lock'}"]


def _stanza_create(lab: Lab, source: PgBackRestSource) -> None:
    """Before any segment is archived: archive-push needs the stanza."""
    runner = PgBackRestRunner(os_user=lab.runtime.os_user)
    pgbackrest_command(runner, source, *_pgbackrest_options(lab, source), "stanza-create")


def _pgbackrest_backup(lab: Lab, source: PgBackRestSource) -> PgBackRestCopy:
    """One full backup (pgBackRest's defaults but for --process-max, which only makes the
    data set quicker to build)."""
    runner = PgBackRestRunner(os_user=lab.runtime.os_user)
    pgbackrest_command(runner, source, *_pgbackrest_options(lab, source), "--type=full",
                       "--start-fast", "--process-max=2", "backup")
    info = json.loads(pgbackrest_command(runner, source, "--output=json", "info"))
    backup = info[0]["backup"][-1]
    return PgBackRestCopy(source=source, runner=runner, backup_label=backup["label"],
                          start_lsn=backup["lsn"]["start"])


def _described(lab: Lab, name: str, database: str, targets: list[RecoveryTarget],
               tar_backup: Path | None = None,
               pgbackrest: PgBackRestCopy | None = None) -> RecoverySet:
    backup = FilesystemBackups.read(lab.base_backups, lab.wal_archive)[0]
    return RecoverySet(
        name=name, database=database, base_backups=lab.base_backups, backup=Path(backup.path),
        backup_bytes=backup.size_bytes, wal_archive=lab.wal_archive, start_lsn=backup.start_lsn,
        targets=tuple(targets), tar_backup=tar_backup, pgbackrest=pgbackrest,
    )


def _tar_backup(lab: Lab) -> Path:
    """The same data as a tar-format backup, in a catalog directory of its own: drills on the
    plain backup must not see it."""
    target = lab.runtime.make_private_dir(lab.root / "tar_backups", 0o755) / "ledger"
    lab.runtime.run(
        "pg_basebackup", "-h", str(lab.primary.socket_dir), "-p", str(lab.primary.port),
        "-U", "postgres", "-D", str(target), "-Ft", "--checkpoint=fast", "--no-sync",
    )
    return target


def _update_until(lab: Lab, profile: Profile, start_lsn: int) -> list[RecoveryTarget]:
    """UPDATE page ranges of the ledger until the WAL past the backup crosses each growth
    fraction; a target is the insert position right after the commit that crossed it."""
    heap_pages = lab.sql(f"SELECT pg_relation_size('{LEDGER}') / {_PAGE}", LEDGER)[0][0]
    chunk = max(8, profile.wal_bytes // (2 * _PAGE) // _CHUNKS_PER_RUN)
    wanted = [fraction * profile.wal_bytes for fraction in profile.growth]
    targets: list[RecoveryTarget] = []
    page = 0
    while len(targets) < len(wanted):
        if page >= heap_pages:
            raise RuntimeError(f"the ledger ({heap_pages} pages) is too small for "
                               f"{profile.wal_bytes} bytes of WAL")
        lab.sql(f"UPDATE {LEDGER} SET touched = touched + 1 "
                f"WHERE ctid >= '({page},0)' AND ctid < '({page + chunk},0)'", LEDGER)
        page += chunk
        lsn = lab.current_lsn()
        while len(targets) < len(wanted) and lsn - start_lsn >= wanted[len(targets)]:
            targets.append(RecoveryTarget(lsn=format_lsn(lsn), wal_bytes=lsn - start_lsn))
    return targets


def build_large(lab: Lab, profile: Profile,
                pgbackrest: PgBackRestSource | None = None) -> RecoverySet:
    """`pgbackrest`: the repository the lab's primary also archives into
    (archiving_to_pgbackrest); a full backup of it is taken right before the plain one."""
    if pgbackrest is not None:
        _stanza_create(lab, pgbackrest)
    lab.create_database(LEDGER)
    lab.sql(f"CREATE TABLE {LEDGER} (id bigint NOT NULL, touched int NOT NULL DEFAULT 0, "
            "payload text NOT NULL)", LEDGER)
    # md5 repeated: incompressible enough to be realistic, and stored inline (under TOAST's
    # threshold), so the heap is as big as the rows.
    lab.sql(f"INSERT INTO {LEDGER} (id, payload) SELECT g, repeat(md5(g::text), 30) "
            f"FROM generate_series(1, {profile.base_bytes // _ROW_BYTES}) g", LEDGER)
    # The pgBackRest and tar copies first: each backup ends with a WAL segment switch, and
    # the plain backup's redo point must come after theirs, not count their switches as WAL
    # to replay (a recovery from the pgBackRest copy replays those two switches too).
    copy = _pgbackrest_backup(lab, pgbackrest) if pgbackrest is not None else None
    tar_backup = _tar_backup(lab)
    lab.base_backup(LEDGER)
    start_lsn = parse_lsn(FilesystemBackups.read(lab.base_backups, lab.wal_archive)[0].start_lsn)
    targets = _update_until(lab, profile, start_lsn)
    lab.archive_all(_ARCHIVE_TIMEOUT_S)
    lab.primary.stop()
    return _described(lab, "large", LEDGER, targets, tar_backup, copy)


def build_tiny(lab: Lab) -> RecoverySet:
    """The smallest honest drill: a fresh cluster, a few hundred rows, one segment of WAL."""
    orders = OrdersWorkload(lab, "tiny")
    orders.create()
    orders.insert_batches(3, 100)
    lab.base_backup("tiny")
    last = orders.insert_batches(2, 100)[-1]
    lab.archive_all()
    lab.primary.stop()
    described = _described(lab, "tiny", "tiny", [])
    target = RecoveryTarget(
        lsn=last.lsn_after, wal_bytes=parse_lsn(last.lsn_after) - parse_lsn(described.start_lsn))
    return dataclasses.replace(described, targets=(target,))
