"""Plain base restore: copy a pg_basebackup directory into the sandbox, in parallel, resumably.

Files are copied in a fixed order, in runs of consecutive files, by a small thread pool
(copy_file_range releases the GIL; a run per task keeps the pool's own cost off a backup's
thousand small files); each file is owned by the server user as it is written. Progress names
how many leading files are done, so a retry skips them, after re-checking each against the
backup (size, and the manifest's checksum where there is one): a file cut short by a killed
worker is never trusted.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
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


def _ready_for_recovery(target: Path, runtime: PostgresRuntime, owned: bool = False) -> None:
    """Recovery mode, a config file (Debian keeps postgresql.conf in /etc, so backups of it
    lack one), and the ownership and mode PostgreSQL insists on (`owned`: the copy already
    gave every file and directory to the server user)."""
    for name in ("recovery.signal", "postgresql.conf"):
        if not (target / name).exists():
            (target / name).write_text("")
            runtime.give(target / name)
    target.chmod(0o700)
    if not owned:
        runtime.give(target, recursive=True)


# A task of the copy pool: this many consecutive files, or fewer adding up to RUN_BYTES.
RUN_FILES = 64
RUN_BYTES = 64 << 20
# copy_file_range's refusals that a plain read/write copy does not share.
_NO_COPY_RANGE = {errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP}


def copy_runs(sizes: list[int]) -> list[range]:
    """Consecutive index ranges of `sizes`, each up to RUN_FILES files or RUN_BYTES bytes
    (a file larger than that is a run by itself)."""
    runs, start, run_bytes = [], 0, 0
    for index, size in enumerate(sizes):
        if index > start and (index - start >= RUN_FILES or run_bytes + size > RUN_BYTES):
            runs.append(range(start, index))
            start, run_bytes = index, 0
        run_bytes += size
    if start < len(sizes):
        runs.append(range(start, len(sizes)))
    return runs


def copy_file(source: str, target: str, owner: tuple[int, int] | None) -> None:
    """Copy one file in the kernel (copy_file_range; sendfile where that is refused), the
    copy owned by `owner` from its creation."""
    reading = os.open(source, os.O_RDONLY)
    try:
        left = os.fstat(reading).st_size
        writing = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            if owner is not None:
                os.fchown(writing, *owner)
            while left > 0:
                try:
                    copied = os.copy_file_range(reading, writing, left)
                except OSError as exc:
                    if exc.errno not in _NO_COPY_RANGE:
                        raise
                    copied = os.sendfile(writing, reading, None, left)
                if copied == 0:  # the source shrank under us: copy what there is
                    break
                left -= copied
        finally:
            os.close(writing)
    finally:
        os.close(reading)


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
        owner = runtime.owner()
        for directory in directories:
            (target / directory).mkdir(parents=True, exist_ok=True, mode=0o700)
            if owner is not None:
                os.chown(target / directory, *owner)
        names = [(str(source / rel), str(target / rel)) for rel in files[kept:]]

        def copy_run(run: range) -> None:
            for index in run:
                copy_file(*names[index], owner)

        runs = copy_runs(sizes[kept:])
        with ThreadPoolExecutor(parallelism) as pool:
            # map() yields in order, so files_done is always a completed prefix.
            for run, _ in zip(runs, pool.map(copy_run, runs)):
                progress.files_done += len(run)
                progress.bytes_done += sum(sizes[kept + index] for index in run)
                on_progress(progress.model_copy())
        _ready_for_recovery(target, runtime, owned=True)
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

