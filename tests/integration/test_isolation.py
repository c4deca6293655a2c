"""Sandbox isolation under attack, with real servers (the local provider).

The lab: a publisher PostgreSQL listening on 127.0.0.1 (the "production server on the host"),
and a subscriber primary with WAL archiving, dblink and postgres_fdw, an enabled logical
subscription to the publisher (slot "sub"), and pg_cron asked for in its
postgresql.auto.conf. Its base backup is drilled from an archive copy whose path holds a
space and a single quote, with action promote: the worst case, a writable server whose
restored catalog says the subscription is enabled.

As root the local provider confines the server (own network and mount namespaces); without
root these tests are skipped: the report then says the properties are not enforced.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import psycopg
import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.models import ReplayRequest, RestoreRequest, SandboxRequest
from activities.replay import ReplayActivities
from activities.restore import RestoreActivities
from activities.sandbox import SandboxActivities, server_of
from adapters.sandbox_providers.local import namespaces_available
from domain.sandbox import Sandbox
from domain.spec import SandboxOptions
from domain.targets import ResolvedTarget
from lab.isolation import IsolationLab, isolation_lab
from tests.conftest import postgres_processes_under
from workers.cli import main as cli

pytestmark = pytest.mark.skipif(
    namespaces_available() is not None,
    reason=f"the local provider cannot confine here: {namespaces_available()}")

PROMOTE = ResolvedTarget(mode="immediate", action="promote")
PAUSE = ResolvedTarget(mode="immediate", action="pause")


@pytest.fixture(scope="module")
def iso(work_root: Path, runtime) -> IsolationLab:
    with isolation_lab(work_root / "iso", runtime) as built:
        yield built


def drill(runtime, sources, root: Path, iso: IsolationLab, target: ResolvedTarget,
          **options) -> tuple[SandboxActivities, Sandbox, list[str]]:
    sandboxes = SandboxActivities(runtime, root, "test@host")
    env = ActivityEnvironment()
    sandbox = env.run(sandboxes.provision, SandboxRequest(
        drill_id=f"iso-{uuid.uuid4().hex[:8]}", options=SandboxOptions(**options),
        source=iso.source))
    try:
        env.run(RestoreActivities(sources).restore_base_backup,
                RestoreRequest(sandbox=sandbox, backup=iso.backup(), source=iso.source))
        replayed = env.run(ReplayActivities(runtime, sources).replay_to_target, ReplayRequest(
            sandbox=sandbox, target=target, source=iso.source, database="postgres"))
    except BaseException:
        env.run(sandboxes.teardown, sandbox)
        raise
    return sandboxes, sandbox, replayed.isolation_warnings


@pytest.fixture(scope="module")
def promoted(iso: IsolationLab, runtime, sources, sandbox_root: Path):
    """The subscriber's backup drilled with action promote, through the quoted archive."""
    sandboxes, sandbox, warnings = drill(runtime, sources, sandbox_root, iso, PROMOTE)
    yield sandbox, warnings
    ActivityEnvironment().run(sandboxes.teardown, sandbox)
    assert postgres_processes_under(Path(sandbox.root)) == []
    iso.assert_untouched()


def literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def sandbox_sql(runtime, sandbox: Sandbox, sql: str) -> list[tuple]:
    with server_of(sandbox, runtime).connect() as conn:
        cur = conn.execute(sql)
        return cur.fetchall() if cur.description else []


def attack(runtime, sandbox: Sandbox, sql: str) -> str:
    """Run sql as the sandbox's superuser in a read-write transaction; the error it raised."""
    with server_of(sandbox, runtime).connect() as conn:
        with pytest.raises(psycopg.Error) as raised, conn.transaction(force_rollback=True):
            conn.execute("SET TRANSACTION READ WRITE")
            conn.execute(sql)
    return str(raised.value)


def test_the_lab_controls_see_what_a_connection_would_look_like(iso: IsolationLab):
    assert iso.live_subscriber_connected and iso.live_dblink == "OK"
    active, confirmed, _ = iso.slot_before
    assert active is False and confirmed is not None


def test_the_sandbox_is_confined_and_says_so(promoted):
    sandbox, _ = promoted
    assert sandbox.provider == "local" and sandbox.confined
    enforced = {p.name: p.enforced for p in sandbox.isolation.properties}
    assert enforced == {
        "no_network": True, "private_filesystem": True, "archive_read_only": True,
        "no_new_privileges": True, "no_tcp_listener": True, "no_archiving_or_streaming": True,
        "no_logical_replication": True, "outward_libraries_removed": True,
        "private_processes": False, "resource_limits": False}


def test_a_restored_subscription_never_reaches_its_publisher_even_after_promote(
        iso: IsolationLab, runtime, promoted):
    sandbox, _ = promoted
    in_recovery, enabled, worker = sandbox_sql(runtime, sandbox, """
        SELECT pg_is_in_recovery(), s.subenabled, st.pid
        FROM pg_subscription s LEFT JOIN pg_stat_subscription st ON st.subid = s.oid
        WHERE s.subname = 'sub'""")[0]
    # Promoted, and the catalog says the subscription is enabled: only the sandbox stops it.
    assert in_recovery is False and enabled is True and worker is None
    time.sleep(3)  # the launcher would have started its apply worker by now
    assert sandbox_sql(runtime, sandbox, "SELECT count(*) FROM pg_stat_activity WHERE "
                       "backend_type LIKE 'logical replication%'")[0][0] == 0
    assert sandbox_sql(runtime, sandbox, "SHOW max_logical_replication_workers")[0][0] == "0"
    assert iso.publisher.slot("sub") == iso.slot_before
    assert iso.publisher.walsenders() == []


def test_dblink_and_postgres_fdw_cannot_reach_a_postgresql_on_the_host(iso: IsolationLab,
                                                                       runtime, promoted):
    sandbox, _ = promoted
    publisher = iso.publisher
    assert "Network is unreachable" in attack(
        runtime, sandbox, f"SELECT dblink_connect('{publisher.tcp_conninfo}')")
    # Nor through the publisher's unix socket: no host socket directory exists in there.
    assert "No such file or directory" in attack(
        runtime, sandbox, f"SELECT dblink_connect('host={publisher.server.socket_dir} "
                          f"port={publisher.port} dbname=postgres user=postgres')")
    assert "No such file or directory" in attack(
        runtime, sandbox, "SELECT dblink_connect('host=/var/run/postgresql dbname=postgres')")
    fdw = attack(runtime, sandbox, f"""
        DO $$ BEGIN
          CREATE SERVER host_pg FOREIGN DATA WRAPPER postgres_fdw
            OPTIONS (host '127.0.0.1', port '{publisher.port}', dbname 'postgres');
          CREATE USER MAPPING FOR CURRENT_USER SERVER host_pg OPTIONS (user 'postgres');
          CREATE FOREIGN TABLE host_events (id bigint) SERVER host_pg
            OPTIONS (table_name 'events');
          PERFORM count(*) FROM host_events;
        END $$""")
    assert "Network is unreachable" in fdw
    assert iso.publisher.walsenders() == [] and iso.publisher.slot("sub") == iso.slot_before


def test_the_archive_is_read_only_and_the_rest_of_the_host_invisible(iso: IsolationLab,
                                                                     runtime, promoted):
    sandbox, _ = promoted
    assert "Read-only file system" in attack(
        runtime, sandbox, f"COPY (SELECT 1) TO {literal(f'{iso.archive}/planted')}")
    # The lab's own archive, its base backups and the publisher's files are not there at all.
    for elsewhere in (iso.lab.wal_archive, iso.lab.base_backups, iso.publisher.root):
        assert "No such file or directory" in attack(
            runtime, sandbox, f"COPY (SELECT 1) TO '{elsewhere}/planted'")
    assert "Read-only file system" in attack(runtime, sandbox, "COPY (SELECT 1) TO '/etc/x'")
    iso.assert_untouched()


def test_outward_preload_libraries_are_not_loaded_and_the_report_says_so(runtime, promoted):
    sandbox, warnings = promoted
    assert sandbox_sql(runtime, sandbox, "SHOW shared_preload_libraries")[0][0] == \
        "pg_stat_statements"
    assert any(w.startswith("shared_preload_libraries: pg_cron removed") for w in warnings)


def test_restore_command_reads_an_archive_path_with_a_space_and_a_quote(iso, runtime,
                                                                       promoted):
    sandbox, _ = promoted
    settings = Path(sandbox.root, "recovery-settings.conf").read_text()
    assert "arch'" in settings and "restore_command" in settings
    # Replay fetched its segments through it: the restored data is at the backup's point.
    assert sandbox_sql(runtime, sandbox, "SELECT count(*) FROM events")[0][0] == 100


def test_a_paused_drill_leaves_the_archive_and_backups_byte_identical(iso, runtime, sources,
                                                                     work_root):
    sandboxes, sandbox, _ = drill(runtime, sources, work_root / "iso-paused", iso, PAUSE)
    ActivityEnvironment().run(sandboxes.teardown, sandbox)
    iso.assert_untouched()


_KILLED_PROVISION = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from temporalio.testing import ActivityEnvironment
    import activities.sandbox as module
    from activities.models import SandboxRequest
    from adapters.pg_runtime import PostgresRuntime
    from domain.spec import FilesystemSource

    def stuck(sandbox):  # the directories exist, the record is not written yet
        print("provisioning", flush=True)
        time.sleep(120)

    module.write_record = stuck
    sandboxes = module.SandboxActivities(PostgresRuntime.from_env(), Path(sys.argv[1]), "w@h")
    ActivityEnvironment().run(sandboxes.provision, SandboxRequest(
        drill_id=sys.argv[2], source=FilesystemSource(base_backups=sys.argv[3],
                                                      wal_archive=sys.argv[4])))
""")


@pytest.fixture
def no_leftovers():
    """Roots a test creates: any server still running under them is stopped even when the
    test fails."""
    roots: list[Path] = []
    yield roots
    for root in roots:
        for pid in postgres_processes_under(root):
            os.kill(pid, signal.SIGQUIT)


def reap(root: Path, capsys, monkeypatch, *args: str) -> dict:
    import json
    monkeypatch.setenv("PITRDRILL_SANDBOX_ROOT", str(root))
    monkeypatch.setenv("TEMPORAL_ADDRESS", "127.0.0.1:9")  # nothing there: age decides
    capsys.readouterr()
    assert cli(["sandbox", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_a_worker_killed_mid_provision_leaves_one_sandbox_that_reap_removes(
        iso: IsolationLab, runtime, sources, work_root: Path, capsys, monkeypatch,
        no_leftovers):
    root = work_root / "iso-reaped"
    no_leftovers.append(root)
    drill_id = f"killed-{uuid.uuid4().hex[:8]}"
    worker = subprocess.Popen(
        [sys.executable, "-c", _KILLED_PROVISION, str(root), drill_id,
         str(iso.lab.base_backups), str(iso.archive)],
        stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[2])
    assert worker.stdout.readline().strip() == "provisioning"
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait()
    listed = reap(root, capsys, monkeypatch, "list")["sandboxes"]
    assert [(s["drill_id"], s["complete"]) for s in listed] == [(drill_id, False)]
    # The retry finds the half-made directory and finishes it: still one sandbox.
    env = ActivityEnvironment()
    sandbox = env.run(SandboxActivities(runtime, root, "w@h").provision, SandboxRequest(
        drill_id=drill_id, source=iso.source))
    assert [p.name for p in root.iterdir()] == [drill_id]
    env.run(RestoreActivities(sources).restore_base_backup,
            RestoreRequest(sandbox=sandbox, backup=iso.backup(), source=iso.source))
    env.run(ReplayActivities(runtime, sources).replay_to_target, ReplayRequest(
        sandbox=sandbox, target=PAUSE, source=iso.source))
    # ... and then that worker dies too: the server runs on with nobody to tear it down.
    assert postgres_processes_under(root) != []
    kept = reap(root, capsys, monkeypatch, "reap")  # default --older-than 6h: too young
    assert kept["removed"] == [] and "younger than" in kept["kept"][0]["reason"]
    reaped = reap(root, capsys, monkeypatch, "reap", "--older-than", "0")
    assert [s["drill_id"] for s in reaped["removed"]] == [drill_id]
    assert reaped["removed"][0]["server_pid"] is not None
    assert postgres_processes_under(root) == [] and list(root.iterdir()) == []
    iso.assert_untouched()


def test_keep_skips_teardown_then_reap_removes_the_sandbox_once_it_expires(
        iso: IsolationLab, runtime, work_root: Path, capsys, monkeypatch):
    root = work_root / "iso-kept"
    sandboxes = SandboxActivities(runtime, root, "w@h")
    env = ActivityEnvironment()
    sandbox = env.run(sandboxes.provision, SandboxRequest(
        drill_id=f"kept-{uuid.uuid4().hex[:8]}", source=iso.source,
        options=SandboxOptions(keep="2s")))
    assert sandbox.isolation.kept_for_seconds == 2
    torn = env.run(sandboxes.teardown, sandbox)
    assert torn.removed is False and Path(sandbox.root).is_dir()
    kept = reap(root, capsys, monkeypatch, "reap", "--older-than", "0")
    assert kept["removed"] == [] and kept["kept"][0]["reason"].startswith("kept until")
    time.sleep(2.1)
    reaped = reap(root, capsys, monkeypatch, "reap", "--older-than", "0")
    assert [s["drill_id"] for s in reaped["removed"]] == [sandbox.drill_id]
    assert not Path(sandbox.root).exists()


def test_a_restore_that_does_not_fit_is_refused_before_a_byte_is_copied(
        iso: IsolationLab, runtime, sources, work_root: Path):
    root = work_root / "iso-small"
    root.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "pitrdrill-small", str(root)],
                   check=True)
    try:
        sandboxes = SandboxActivities(runtime, root, "w@h")
        env = ActivityEnvironment()
        sandbox = env.run(sandboxes.provision, SandboxRequest(
            drill_id="too-big", source=iso.source))
        backup = iso.backup()
        with pytest.raises(ApplicationError) as raised:
            env.run(RestoreActivities(sources).restore_base_backup,
                    RestoreRequest(sandbox=sandbox, backup=backup, source=iso.source))
        assert raised.value.type == "SANDBOX_NO_SPACE" and raised.value.non_retryable
        assert f"backup {backup.size_bytes}" in raised.value.message
        assert "free " in raised.value.message
        assert list(Path(sandbox.data_dir).iterdir()) == []
        env.run(sandboxes.teardown, sandbox)
    finally:
        subprocess.run(["umount", str(root)], check=False)
