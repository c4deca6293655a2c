"""Plain base restore: copy a pg_basebackup directory into the sandbox, in parallel, resumably.

Files are copied in a fixed order by a small thread pool (copy_file_range releases the GIL);
progress names how many leading files are done, so a retry skips them, after re-checking each
against the backup (size, and the manifest's checksum where there is one): a file cut short by
a killed worker is never trusted.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tarfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import crc32c
import structlog

from adapters.pg_runtime import PostgresRuntime
from domain.errors import DrillError, ErrorCode
from domain.restore import RestoreProgress, RestoreResult

# Never brought into a sandbox: a standby.signal would make it wait for a primary forever.
_SKIPPED = {"standby.signal", "recovery.signal", "postmaster.pid", "postmaster.opts"}
_log = structlog.get_logger("pitrdrill.restore")

OnProgress = Callable[[RestoreProgress], None]


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


def _manifest_files(source: Path) -> dict[str, dict]:
    """backup_manifest's entry per file path ({} without a manifest)."""
    try:
        manifest = json.loads((source / "backup_manifest").read_text())
    except (OSError, ValueError):
        return {}
    return {entry["Path"]: entry for entry in manifest.get("Files", [])}


def _checksum(path: Path, algorithm: str) -> str | None:
    """The file's checksum as backup_manifest writes it; None for an algorithm we lack."""
    if algorithm == "CRC32C":
        value = 0
        with path.open("rb") as data:
            while chunk := data.read(1 << 20):
                value = crc32c.crc32c(chunk, value)
        return value.to_bytes(4, "little").hex()  # PostgreSQL prints the raw (LE) bytes
    if algorithm.lower() in ("sha224", "sha256", "sha384", "sha512"):
        with path.open("rb") as data:
            return hashlib.file_digest(data, algorithm.lower()).hexdigest()
    return None


def intact_prefix(source: Path, target: Path, files: list[Path], claimed: int) -> int:
    """How many of the first `claimed` files are really restored: same size as the backup's
    copy and, where the manifest has a checksum, the same checksum. Stops at the first that
    is not; everything from there is copied again."""
    manifest = _manifest_files(source)
    for done, rel in enumerate(files[:claimed]):
        try:
            size = (target / rel).stat().st_size
        except OSError:
            return done
        entry = manifest.get(rel.as_posix())
        if size != (source / rel).stat().st_size or (entry and size != entry["Size"]):
            return done
        algorithm = entry.get("Checksum-Algorithm", "NONE") if entry else "NONE"
        if algorithm != "NONE" and _checksum(target / rel, algorithm) not in (
                entry["Checksum"], None):
            return done
    return claimed


def copy_base_backup(source: Path, target: Path, runtime: PostgresRuntime,
                     resume_from: RestoreProgress, on_progress: OnProgress,
                     parallelism: int = 4) -> RestoreResult:
    started = time.perf_counter()
    if not (source / "backup_label").is_file():
        raise DrillError(ErrorCode.RESTORE_FAILED, f"{source} holds no base backup "
                         "(no backup_label): was it moved or expired?")
    try:
        directories, files = restore_plan(source)
        sizes = [(source / rel).stat().st_size for rel in files]
        kept = intact_prefix(source, target, files, resume_from.files_done)
        progress = RestoreProgress(files_done=kept, bytes_done=sum(sizes[:kept]),
                                   bytes_total=sum(sizes))
        _log.info("restore started", source=str(source), files=len(files),
                  resumed_files=kept, claimed_files=resume_from.files_done)
        on_progress(progress.model_copy())
        for directory in directories:
            (target / directory).mkdir(parents=True, exist_ok=True, mode=0o700)
        with ThreadPoolExecutor(parallelism) as pool:
            # map() yields in order, so files_done is always a completed prefix.
            copied = pool.map(lambda rel: shutil.copyfile(source / rel, target / rel),
                              files[kept:])
            for size, _ in zip(sizes[kept:], copied):
                progress.files_done += 1
                progress.bytes_done += size
                on_progress(progress.model_copy())
        _ready_for_recovery(target, runtime)
    except OSError as exc:
        raise DrillError(ErrorCode.RESTORE_FAILED, f"copying {source} to {target}: {exc}") from exc
    _log.info("restore finished", files=progress.files_done, bytes=progress.bytes_done)
    return RestoreResult(files=progress.files_done, bytes_restored=progress.bytes_done,
                         seconds=time.perf_counter() - started, files_resumed=kept)


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


def _extract(tar: Path, into: Path, progress: RestoreProgress, on_progress: OnProgress) -> int:
    """Extract a tar (never outside `into`: the 'data' filter), returning the bytes written."""
    written = 0
    with tarfile.open(tar) as archive:
        for member in archive:
            if Path(member.name).name in _SKIPPED:
                continue
            archive.extract(member, into, filter="data")
            written += member.size
            progress.files_done += 1
            progress.bytes_done += member.size
            on_progress(progress.model_copy())
    return written


def _tablespace_tars(backup: Path) -> dict[str, Path]:
    return {path.name.split(".")[0]: path for path in backup.iterdir()
            if path.name.split(".")[0].isdigit() and path.name.endswith(_TAR_SUFFIXES)}


def extract_tar_backup(source: Path, target: Path, tablespaces: Path,
                       runtime: PostgresRuntime, on_progress: OnProgress) -> RestoreResult:
    """Restore a tar-format backup. Tablespaces go under `tablespaces` (in the sandbox) and
    tablespace_map is rewritten to point there, never back to the production paths. A retry
    extracts again from the start: every member is rewritten whole."""
    started = time.perf_counter()
    progress = RestoreProgress()
    base = base_tar(source)
    if base is None:
        raise DrillError(ErrorCode.RESTORE_FAILED, f"{source} holds no base.tar")
    try:
        target.mkdir(parents=True, exist_ok=True)
        written = _extract(base, target, progress, on_progress)
        if (wal := _tar_named(source, "pg_wal")) is not None:
            written += _extract(wal, target / "pg_wal", progress, on_progress)
        moved = {}
        for oid, tar in _tablespace_tars(source).items():
            written += _extract(tar, tablespaces / oid, progress, on_progress)
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

