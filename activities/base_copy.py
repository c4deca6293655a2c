"""Plain base restore: copy a pg_basebackup directory into the sandbox, in parallel, resumably.

Files are copied in a fixed order by a small thread pool (copy_file_range releases the GIL);
the heartbeat carries how many leading files are done, so a retry skips them.
"""

from __future__ import annotations

import os
import shutil
import tarfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from temporalio import activity

from activities.log import drill_log, resumed
from activities.contracts import RestoreProgress, RestoreResult
from activities.pg_runtime import PostgresRuntime
from domain.errors import DrillError, ErrorCode

# Never brought into a sandbox: a standby.signal would make it wait for a primary forever.
_SKIPPED = {"standby.signal", "recovery.signal", "postmaster.pid", "postmaster.opts"}
_HEARTBEAT_EVERY_S = 2.0


def restore_plan(source: Path) -> tuple[list[Path], list[Path]]:
    """(directories, files) relative to the backup; empty directories (pg_notify, ...) matter."""
    directories, files = [], []
    for root, dirs, names in os.walk(source):
        dirs.sort()
        here = Path(root).relative_to(source)
        directories.append(here)
        files.extend(here / n for n in sorted(names) if n not in _SKIPPED)
    return directories, files


def _ready_for_recovery(target: Path, runtime: PostgresRuntime) -> None:
    """Recovery mode, a config file (Debian keeps postgresql.conf in /etc, so backups of it
    lack one), and the ownership and mode PostgreSQL insists on."""
    for name in ("recovery.signal", "postgresql.conf"):
        if not (target / name).exists():
            (target / name).write_text("")
    target.chmod(0o700)
    runtime.give(target, recursive=True)


def copy_base_backup(source: Path, target: Path, runtime: PostgresRuntime,
                     parallelism: int = 4) -> RestoreResult:
    """Runs inside the restore activity: heartbeats its progress and resumes from it."""
    started = time.perf_counter()
    if not (source / "backup_label").is_file():
        raise DrillError(ErrorCode.RESTORE_FAILED, f"{source} holds no base backup "
                         "(no backup_label): was it moved or expired?")
    try:
        directories, files = restore_plan(source)
        progress = resumed(RestoreProgress)
        drill_log().info("restore started", source=str(source), files=len(files),
                         resuming_after=progress.files_done)
        for directory in directories:
            (target / directory).mkdir(parents=True, exist_ok=True, mode=0o700)
        last_beat = 0.0
        with ThreadPoolExecutor(parallelism) as pool:
            # map() yields in order, so files_done is always a completed prefix.
            copied = pool.map(
                lambda rel: shutil.copyfile(source / rel, target / rel) and rel,
                files[progress.files_done:],
            )
            for rel in copied:
                progress.files_done += 1
                progress.bytes_done += (target / rel).stat().st_size
                if time.monotonic() - last_beat > _HEARTBEAT_EVERY_S:
                    activity.heartbeat(progress)
                    last_beat = time.monotonic()
        _ready_for_recovery(target, runtime)
    except OSError as exc:
        raise DrillError(ErrorCode.RESTORE_FAILED, f"copying {source} to {target}: {exc}") from exc
    activity.heartbeat(progress)
    drill_log().info("restore finished", files=progress.files_done, bytes=progress.bytes_done)
    return RestoreResult(files=progress.files_done, bytes_restored=progress.bytes_done,
                         seconds=time.perf_counter() - started)


# pg_basebackup -Ft writes base.tar, pg_wal.tar and one OID.tar per tablespace (gzip: -z).
_TAR_SUFFIXES = (".tar", ".tar.gz")


def _tar_named(backup: Path, stem: str) -> Path | None:
    return next((backup / f"{stem}{suffix}" for suffix in _TAR_SUFFIXES
                 if (backup / f"{stem}{suffix}").is_file()), None)


def base_tar(backup: Path) -> Path | None:
    return _tar_named(backup, "base")


def tar_member_text(tar: Path, member: str) -> str | None:
    with tarfile.open(tar) as archive:
        try:
            extracted = archive.extractfile(member)
        except KeyError:
            return None
        return extracted.read().decode() if extracted else None


def _extract(tar: Path, into: Path) -> int:
    """Extract a tar (never outside `into`: the 'data' filter), returning the bytes written."""
    written = 0
    with tarfile.open(tar) as archive:
        for member in archive:
            if Path(member.name).name in _SKIPPED:
                continue
            archive.extract(member, into, filter="data")
            written += member.size
            activity.heartbeat(RestoreProgress(bytes_done=written))
    return written


def _tablespace_tars(backup: Path) -> dict[str, Path]:
    return {path.name.split(".")[0]: path for path in backup.iterdir()
            if path.name.split(".")[0].isdigit() and path.name.endswith(_TAR_SUFFIXES)}


def extract_tar_backup(source: Path, target: Path, tablespaces: Path,
                       runtime: PostgresRuntime) -> RestoreResult:
    """Restore a tar-format backup. Tablespaces go under `tablespaces` (in the sandbox) and
    tablespace_map is rewritten to point there, never back to the production paths."""
    started = time.perf_counter()
    base = base_tar(source)
    if base is None:
        raise DrillError(ErrorCode.RESTORE_FAILED, f"{source} holds no base.tar")
    try:
        target.mkdir(parents=True, exist_ok=True)
        written = _extract(base, target)
        if (wal := _tar_named(source, "pg_wal")) is not None:
            written += _extract(wal, target / "pg_wal")
        moved = {}
        for oid, tar in _tablespace_tars(source).items():
            written += _extract(tar, tablespaces / oid)
            moved[oid] = tablespaces / oid
        if moved:
            (target / "tablespace_map").write_text(
                "".join(f"{oid} {path}\n" for oid, path in moved.items()))
            runtime.give(tablespaces, recursive=True)
        _ready_for_recovery(target, runtime)
    except (OSError, tarfile.TarError) as exc:
        raise DrillError(ErrorCode.RESTORE_FAILED, f"extracting {source}: {exc}") from exc
    files = sum(1 for p in target.rglob("*") if p.is_file())
    return RestoreResult(files=files, bytes_restored=written, seconds=time.perf_counter() - started)

