"""pgBackRest as a backup source, against a real stanza of a real PostgreSQL 15 primary.

The lab primary archives through `pgbackrest archive-push` into a repository whose path has a
space, a quote and a percent sign, so every command line the adapter builds is proven quoted.
Orders live in a tablespace, so the restore must remap it into the sandbox.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import timezone
from pathlib import Path

import pytest

from adapters.pg_runtime import PostgresRuntime
from adapters.pg_server import PostgresServer, free_port
from adapters.pgbackrest_cli import PgBackRest, PgBackRestRunner
from domain.catalog import candidate_backups, label_lsn, parse_label_fields, parse_label_time
from domain.errors import DrillError, ErrorCode
from domain.lsn import parse_lsn
from domain.pgbackrest_info import PgBackRestBackup
from domain.sandbox import isolation_settings
from domain.targets import ResolvedTarget, recovery_settings
from lab.pgbackrest import STANZA, Stanza, pgbackrest_command, pgbackrest_lab

WAL_SEGMENT_BYTES = 16 * 1024 * 1024


@pytest.fixture(scope="module")
def stanza(work_root: Path, runtime: PostgresRuntime) -> Iterator[Stanza]:
    with pgbackrest_lab(work_root, runtime) as built:
        yield built


@pytest.fixture(scope="module")
def adapter(runtime: PostgresRuntime) -> PgBackRest:
    return PgBackRest(PgBackRestRunner(os_user=runtime.os_user), process_max=2)


def _as_server_user(runtime: PostgresRuntime, command: str, cwd: Path) -> int:
    """Run a restore_command line as PostgreSQL would: through sh, as the server user."""
    as_user = {"user": runtime.os_user, "group": runtime.os_user} if runtime.as_root else {}
    return subprocess.run(["sh", "-c", command], cwd=cwd, capture_output=True, **as_user).returncode


def _expanded(command: str, file_name: str, path: str) -> str:
    """restore_command with PostgreSQL's %f, %p and %% expanded."""
    return re.sub(r"%([fp%])", lambda m: {"f": file_name, "p": path, "%": "%"}[m[1]], command)


def _history_file_name(backup: PgBackRestBackup) -> str:
    """PostgreSQL's backup history file: <start segment>.<start offset in it>.backup"""
    return f"{backup.wal_start}.{parse_lsn(backup.start_lsn) % WAL_SEGMENT_BYTES:08X}.backup"


def _fetch_history(
    adapter: PgBackRest, stanza: Stanza, runtime: PostgresRuntime, backup: PgBackRestBackup
) -> dict[str, str]:
    data_dir = stanza.lab.primary.data_dir
    command = adapter.archive_get_command(stanza.source, data_dir)
    fetched = stanza.root / "history.backup"
    name = _history_file_name(backup)
    assert _as_server_user(runtime, _expanded(command, name, str(fetched)), data_dir) == 0
    fields = parse_label_fields(fetched.read_text())
    fetched.unlink()
    return fields


def _repository_digest(repo: Path) -> dict[str, str]:
    """sha256 of every file, and every directory, under the repository."""
    digest = {}
    for root, dirs, files in os.walk(repo):
        for name in dirs:
            digest[os.path.join(root, name)] = "directory"
        for name in files:
            digest[os.path.join(root, name)] = hashlib.sha256(
                Path(root, name).read_bytes()
            ).hexdigest()
    return digest


def test_list_backups_matches_pgbackrest_info_and_postgresql(
    stanza: Stanza, adapter: PgBackRest, runtime: PostgresRuntime
) -> None:
    backups = adapter.list_backups(stanza.source)
    info = json.loads(pgbackrest_command(stanza.runner, stanza.source, "--output=json", "info"))
    entries = info[0]["backup"]

    assert [(b.kind, b.prior) for b in backups] == [("full", None), ("incr", backups[0].id)]
    assert [
        (b.id, b.start_lsn, b.stop_lsn, b.wal_start, b.wal_stop, b.size_bytes, b.repo_size_bytes,
         int(b.start_time.timestamp()), int(b.stop_time.timestamp()))
        for b in backups
    ] == [
        (e["label"], e["lsn"]["start"], e["lsn"]["stop"], e["archive"]["start"],
         e["archive"]["stop"], e["info"]["size"], e["info"]["repository"]["size"],
         e["timestamp"]["start"], e["timestamp"]["stop"])
        for e in entries
    ]
    for backup in backups:
        assert backup.timeline == 1
        assert backup.path == f"{stanza.source.repo_path}/backup/{STANZA}/{backup.id}"
        assert backup.start_time.tzinfo == timezone.utc
        before, after = stanza.lsn_windows[backup.kind]
        assert before <= parse_lsn(backup.start_lsn) < parse_lsn(backup.stop_lsn) <= after
        # PostgreSQL's own record of the backup, fetched through the sandbox restore_command.
        history = _fetch_history(adapter, stanza, runtime, backup)
        assert label_lsn(history["START WAL LOCATION"]) == backup.start_lsn
        assert label_lsn(history["STOP WAL LOCATION"]) == backup.stop_lsn
        assert history["START TIMELINE"] == "1"
        assert backup.start_time <= parse_label_time(history["START TIME"])
        assert parse_label_time(history["STOP TIME"]) <= backup.stop_time


def _sandbox(runtime: PostgresRuntime, root: Path) -> tuple[Path, PostgresServer]:
    runtime.make_private_dir(root, 0o755)
    for name, text in (("pg_hba.conf", "local all all trust\n"), ("pg_ident.conf", "")):
        (root / name).write_text(text)
        runtime.give(root / name)
    return root, PostgresServer(
        runtime=runtime, data_dir=runtime.make_private_dir(root / "data"),
        socket_dir=runtime.make_private_dir(root / "socket"), port=free_port(),
        log_file=root / "postgres.log",
    )


def _expected_restored_bytes(stanza: Stanza, backup: PgBackRestBackup, data_dir: Path) -> int:
    """Everything in the backup but tablespace_map: pgBackRest makes the pg_tblspc links itself."""
    [link] = (data_dir / "pg_tblspc").iterdir()
    return backup.size_bytes - len(f"{link.name} {stanza.tablespace}\n")


def _processes_naming(path: Path) -> list[str]:
    """Live processes with `path` on their command line."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if str(path).encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(pid)
        except OSError:
            continue
    return found


def _wait_paused(server: PostgresServer, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    with server.connect() as conn:
        while conn.execute("SELECT pg_get_wal_replay_pause_state()").fetchone()[0] != "paused":
            assert time.monotonic() < deadline, server.log_tail()
            time.sleep(0.05)


def test_restored_incremental_recovers_to_a_time_target_without_writing_to_the_repository(
    stanza: Stanza, adapter: PgBackRest, runtime: PostgresRuntime
) -> None:
    repo_before = _repository_digest(Path(stanza.source.repo_path))
    kept, dropped = stanza.batches[0], stanza.batches[1]
    target = ResolvedTarget(mode="time", utc=dropped.commit_time.astimezone(timezone.utc))
    backups = adapter.list_backups(stanza.source)
    candidates = candidate_backups(backups, target)
    # Newest first: the incremental, resting on the full backup.
    assert [b.id for b in candidates] == [backups[1].id, backups[0].id]
    chosen = candidates[0]

    sandbox, server = _sandbox(runtime, stanza.root / "sandbox")
    try:
        restored = adapter.restore(stanza.source, chosen, server.data_dir, sandbox)
        settings = {
            **isolation_settings(str(sandbox), str(server.data_dir), str(server.socket_dir),
                                 server.port, "pgbackrest"),
            "restore_command": adapter.archive_get_command(stanza.source, server.data_dir),
            **recovery_settings(target),
        }
        try:
            server.start(settings)
        except subprocess.CalledProcessError:
            pytest.fail(f"the sandbox server did not start: {server.log_tail()}")
        _wait_paused(server)
        with server.connect("demo") as conn:
            rows = conn.execute("SELECT count(*) FROM orders").fetchone()[0]
            last_commit = conn.execute("SELECT pg_last_xact_replay_timestamp()").fetchone()[0]
        tablespace_links = list((server.data_dir / "pg_tblspc").iterdir())
        verification = adapter.verify(stanza.source)
    finally:
        server.stop("immediate")

    assert (rows, last_commit) == (kept.rows, kept.commit_time)
    assert [link.resolve().parent for link in tablespace_links] == [sandbox / "tablespaces"]
    assert restored.bytes_restored == _expected_restored_bytes(stanza, chosen, server.data_dir)
    assert [(v.label, v.ok) for v in verification.backups] == [(b.id, True) for b in backups]
    assert all(archive.ok for archive in verification.archives)
    assert _repository_digest(Path(stanza.source.repo_path)) == repo_before


def test_restore_cut_short_by_its_timeout_is_finished_by_a_retry(
    stanza: Stanza, adapter: PgBackRest, runtime: PostgresRuntime
) -> None:
    full = adapter.list_backups(stanza.source)[0]
    sandbox, server = _sandbox(runtime, stanza.root / "retry")
    impatient = PgBackRest(
        PgBackRestRunner(os_user=runtime.os_user, poll_every_s=0.05), process_max=2, timeout_s=0.3
    )
    with pytest.raises(DrillError) as cut_short:
        impatient.restore(stanza.source, full, server.data_dir, sandbox)
    assert cut_short.value.code == ErrorCode.RESTORE_FAILED
    assert _processes_naming(server.data_dir) == []
    # pgBackRest restores pg_control last: a server could not have started this directory.
    assert not (server.data_dir / "global" / "pg_control").exists()

    finished = adapter.restore(stanza.source, full, server.data_dir, sandbox)
    assert finished.bytes_restored == _expected_restored_bytes(stanza, full, server.data_dir)


def _rewrite_compressed(path: Path, change: Callable[[bytes], bytes]) -> None:
    """Change what a repository file holds, keeping it a valid gzip file: damage only a
    checksum can find."""
    path.write_bytes(gzip.compress(change(gzip.decompress(path.read_bytes()))))


def test_verify_names_the_corrupt_backup_and_segment(
    stanza: Stanza, adapter: PgBackRest, runtime: PostgresRuntime
) -> None:
    damaged = stanza.root / "damaged repo"
    shutil.copytree(stanza.source.repo_path, damaged, symlinks=True)
    backups = adapter.list_backups(stanza.source)
    _rewrite_compressed(
        damaged / "backup" / STANZA / backups[0].id / "pg_data" / "PG_VERSION.gz",
        lambda text: text.replace(b"15", b"16"),
    )
    _rewrite_compressed(
        next((damaged / "archive" / STANZA).glob(f"*/*/{backups[1].wal_start}-*.gz")),
        lambda wal: wal[:-1] + bytes([wal[-1] ^ 0xFF]),
    )
    runtime.give(damaged, recursive=True)

    verification = adapter.verify(stanza.source.model_copy(update={"repo_path": str(damaged)}))
    shutil.rmtree(damaged)

    # The incremental backup keeps the full backup's unchanged files by reference.
    assert [(v.label, v.status, v.files_checked - v.files_valid) for v in verification.backups] == [
        (backups[0].id, "invalid", 1), (backups[1].id, "invalid", 1),
    ]
    assert [(a.archive_id, a.wal_checked - a.wal_valid) for a in verification.archives] == [
        ("15-1", 1),
    ]


def test_archive_get_of_a_segment_the_archive_lacks_fails(
    stanza: Stanza, adapter: PgBackRest, runtime: PostgresRuntime
) -> None:
    data_dir = stanza.lab.primary.data_dir
    command = adapter.archive_get_command(stanza.source, data_dir)
    fetched = stanza.root / "never"
    assert _as_server_user(runtime, _expanded(command, "0000000100000000000000FF", str(fetched)),
                           data_dir) != 0
    assert not fetched.exists()


def test_unknown_stanza_and_backup_are_typed_errors(
    stanza: Stanza, adapter: PgBackRest, runtime: PostgresRuntime
) -> None:
    missing = stanza.source.model_copy(update={"stanza": "nope"})
    with pytest.raises(DrillError) as listed:
        adapter.list_backups(missing)
    assert listed.value.code == ErrorCode.NO_BASE_BACKUP

    backup = adapter.list_backups(stanza.source)[0].model_copy(update={"id": "20000101-000000F"})
    sandbox, server = _sandbox(runtime, stanza.root / "unknown")
    with pytest.raises(DrillError) as restored:
        adapter.restore(stanza.source, backup, server.data_dir, sandbox)
    assert restored.value.code == ErrorCode.RESTORE_FAILED


def test_a_drills_archive_get_spools_ahead_inside_its_own_directory(
    stanza: Stanza, adapter: PgBackRest, runtime: PostgresRuntime
) -> None:
    """Asynchronous archive-get (drills only): the segment asked for arrives whole, the next
    ones are fetched ahead into the given spool, and the repository is untouched."""
    backup = adapter.list_backups(stanza.source)[0]
    spool = runtime.make_private_dir(stanza.root / "spool")
    data_dir = stanza.lab.primary.data_dir
    command = adapter.archive_get_command(stanza.source, data_dir, spool)
    assert "--archive-async" in command and "--no-archive-async" not in command
    repo_before = _repository_digest(Path(stanza.source.repo_path))
    fetched = stanza.root / "async-segment"
    assert _as_server_user(runtime, _expanded(command, backup.wal_start, str(fetched)),
                           data_dir) == 0
    assert fetched.stat().st_size == WAL_SEGMENT_BYTES
    queue = spool / "archive" / stanza.source.stanza / "in"
    deadline = time.monotonic() + 30
    while not any(queue.glob("0000*")) and time.monotonic() < deadline:
        time.sleep(0.1)  # the background process fills the queue after answering
    assert any(queue.glob("0000*")), list(spool.rglob("*"))
    assert _repository_digest(Path(stanza.source.repo_path)) == repo_before
    fetched.unlink()
