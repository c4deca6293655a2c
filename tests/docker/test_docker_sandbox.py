"""The docker provider under attack, with real servers: the sandbox PostgreSQL runs in a
container of pitrdrill/sandbox:15 (`make images`; PITRDRILL_SANDBOX_IMAGE names another).

Skipped, saying why, when Docker is unreachable or the image is missing. The lab is the
isolation lab (lab/isolation.py) with its publisher also listening on the docker bridge's
gateway address, the way any container reaches its host: a control container on the bridge
does reach it, the sandbox does not.
"""

from __future__ import annotations

import ipaddress
import json
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
from adapters.sandbox_providers import DEFAULT_IMAGE, ProviderSettings, SandboxProviders
from adapters.sandbox_providers.docker import LABEL, container_name
from domain.sandbox import Sandbox
from domain.spec import SandboxOptions
from domain.targets import ResolvedTarget
from lab.isolation import IsolationLab, isolation_lab
from tests.conftest import postgres_processes_under
from workers.cli import main as cli

IMAGE = os.environ.get("PITRDRILL_SANDBOX_IMAGE", DEFAULT_IMAGE)
PROMOTE = ResolvedTarget(mode="immediate", action="promote")
PAUSE = ResolvedTarget(mode="immediate", action="pause")
LIMITS = {"memory_mb": 384, "cpus": 1.5, "pids": 300}


def _docker_or_why_not():
    try:
        import docker
    except ImportError:
        return None, "the `docker` Python package is not installed"
    try:
        client = docker.from_env(timeout=10)
        client.ping()
    except Exception as exc:  # any way of not reaching the daemon
        return None, f"Docker is not reachable: {exc}"
    try:
        client.images.get(IMAGE)
    except docker.errors.ImageNotFound:
        return None, f"image {IMAGE} is missing: run `make images`"
    return client, None


CLIENT, WHY_NOT = _docker_or_why_not()
pytestmark = pytest.mark.skipif(CLIENT is None, reason=str(WHY_NOT))


def _bridge() -> tuple[str, str]:
    """(gateway address, subnet) of docker's default bridge: how a container reaches its host."""
    config = CLIENT.networks.get("bridge").attrs["IPAM"]["Config"][0]
    subnet = ipaddress.ip_network(config["Subnet"])
    return config.get("Gateway") or str(next(subnet.hosts())), str(subnet)


@pytest.fixture(scope="module")
def iso(work_root: Path, runtime) -> IsolationLab:
    gateway, subnet = _bridge()
    with isolation_lab(work_root / "docker-iso", runtime,
                       listen_addresses=f"127.0.0.1,{gateway}",
                       trusted_networks=(subnet,)) as built:
        yield built


@pytest.fixture(scope="module")
def providers(runtime, sandbox_root: Path) -> SandboxProviders:
    return SandboxProviders(ProviderSettings(root=sandbox_root, runtime=runtime,
                                             default="docker", image=IMAGE))


def drill(runtime, sources, providers, iso: IsolationLab, target: ResolvedTarget,
          root: Path | None = None, **options) -> tuple[SandboxActivities, Sandbox, list[str]]:
    if root is not None:
        providers = SandboxProviders(ProviderSettings(
            root=root, runtime=runtime, default="docker", image=IMAGE))
    sandboxes = SandboxActivities(runtime, providers.settings.root, "test@host", providers)
    env = ActivityEnvironment()
    sandbox = env.run(sandboxes.provision, SandboxRequest(
        drill_id=f"dock-{uuid.uuid4().hex[:8]}", options=SandboxOptions(**options),
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


def containers_of(drill_id: str) -> list:
    return CLIENT.containers.list(all=True, filters={"label": f"{LABEL}={drill_id}"})


@pytest.fixture
def no_leftovers():
    """Drill ids a test creates: their containers are removed even when the test fails."""
    drill_ids: list[str] = []
    yield drill_ids
    for drill_id in drill_ids:
        for container in containers_of(drill_id):
            container.remove(force=True)


@pytest.fixture(scope="module")
def promoted(iso: IsolationLab, runtime, sources, providers):
    sandboxes, sandbox, warnings = drill(runtime, sources, providers, iso, PROMOTE, **LIMITS)
    yield sandbox, warnings
    ActivityEnvironment().run(sandboxes.teardown, sandbox)
    assert containers_of(sandbox.drill_id) == [] and not Path(sandbox.root).exists()
    iso.assert_untouched()


def sandbox_sql(runtime, sandbox: Sandbox, sql: str) -> list[tuple]:
    with server_of(sandbox, runtime).connect() as conn:
        cur = conn.execute(sql)
        return cur.fetchall() if cur.description else []


def attack(runtime, sandbox: Sandbox, sql: str) -> str:
    with server_of(sandbox, runtime).connect() as conn:
        with pytest.raises(psycopg.Error) as raised, conn.transaction(force_rollback=True):
            conn.execute("SET TRANSACTION READ WRITE")
            conn.execute(sql)
    return str(raised.value)


def literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def test_the_server_runs_in_a_container_without_network_with_the_specs_limits(promoted):
    sandbox, _ = promoted
    [container] = containers_of(sandbox.drill_id)
    assert container.name == container_name(sandbox.drill_id) and container.status == "running"
    host = container.attrs["HostConfig"]
    assert host["NetworkMode"] == "none"
    assert host["Memory"] == LIMITS["memory_mb"] * 1024 * 1024 == host["MemorySwap"]
    assert host["NanoCpus"] == int(LIMITS["cpus"] * 1e9) and host["PidsLimit"] == LIMITS["pids"]
    assert host["ReadonlyRootfs"] is True and host["CapDrop"] == ["ALL"]
    assert host["PidMode"] == "" and host["IpcMode"] in ("private", "shareable")
    assert "no-new-privileges" in host["SecurityOpt"]
    mounts = {m["Destination"]: (m["Source"], m["RW"]) for m in container.attrs["Mounts"]}
    assert mounts == {"/sandbox": (sandbox.root, True),
                      "/archive": (str(Path(sandbox.mounts[1].host)), False)}
    labels = container.labels
    assert labels[LABEL] == sandbox.drill_id and labels["pitrdrill.root"] == sandbox.root
    assert "pitrdrill.created" in labels and labels["pitrdrill.ttl"] == "0"
    assert sandbox.provider == "docker" and sandbox.isolation.not_enforced() == []


def test_the_restore_command_reads_the_in_container_archive(runtime, promoted):
    sandbox, _ = promoted
    assert sandbox_sql(runtime, sandbox, "SHOW restore_command")[0][0].startswith(
        "if [ -f /archive/%f ]")
    assert sandbox_sql(runtime, sandbox, "SHOW data_directory")[0][0] == "/sandbox/data"
    assert sandbox_sql(runtime, sandbox, "SELECT count(*) FROM events")[0][0] == 100


def test_a_restored_subscription_never_reaches_its_publisher_even_after_promote(
        iso: IsolationLab, runtime, promoted):
    sandbox, _ = promoted
    in_recovery, enabled, worker = sandbox_sql(runtime, sandbox, """
        SELECT pg_is_in_recovery(), s.subenabled, st.pid
        FROM pg_subscription s LEFT JOIN pg_stat_subscription st ON st.subid = s.oid
        WHERE s.subname = 'sub'""")[0]
    assert in_recovery is False and enabled is True and worker is None
    time.sleep(3)
    assert sandbox_sql(runtime, sandbox, "SELECT count(*) FROM pg_stat_activity WHERE "
                       "backend_type LIKE 'logical replication%'")[0][0] == 0
    assert iso.publisher.slot("sub") == iso.slot_before
    assert iso.publisher.walsenders() == []


def test_a_container_on_the_bridge_reaches_the_publisher_the_sandbox_does_not(
        iso: IsolationLab, runtime, promoted):
    sandbox, _ = promoted
    gateway, _ = _bridge()
    publisher = iso.publisher
    # Control: an ordinary container reaches the host's PostgreSQL through the bridge.
    control = CLIENT.containers.run(
        IMAGE, ["psql", f"host={gateway} port={publisher.port} dbname=postgres user=postgres",
                "-Atc", "select 'reached'"], remove=True)
    assert control.decode().strip() == "reached"
    for host, error in ((gateway, "Network is unreachable"),
                        ("127.0.0.1", "Connection refused")):  # its own loopback only
        conninfo = f"host={host} port={publisher.port} dbname=postgres user=postgres"
        assert error in attack(runtime, sandbox, f"SELECT dblink_connect('{conninfo}')")
    fdw = attack(runtime, sandbox, f"""
        DO $$ BEGIN
          CREATE SERVER host_pg FOREIGN DATA WRAPPER postgres_fdw
            OPTIONS (host '{gateway}', port '{publisher.port}', dbname 'postgres');
          CREATE USER MAPPING FOR CURRENT_USER SERVER host_pg OPTIONS (user 'postgres');
          CREATE FOREIGN TABLE host_events (id bigint) SERVER host_pg
            OPTIONS (table_name 'events');
          PERFORM count(*) FROM host_events;
        END $$""")
    assert "Network is unreachable" in fdw
    assert "No such file or directory" in attack(
        runtime, sandbox, f"SELECT dblink_connect('host={publisher.server.socket_dir} "
                          f"port={publisher.port} dbname=postgres user=postgres')")
    assert publisher.walsenders() == [] and publisher.slot("sub") == iso.slot_before


def test_the_archive_is_mounted_read_only_and_nothing_else_of_the_host(iso, runtime, promoted):
    sandbox, _ = promoted
    assert "Read-only file system" in attack(runtime, sandbox,
                                             "COPY (SELECT 1) TO '/archive/planted'")
    for elsewhere in (iso.archive, iso.lab.base_backups, iso.publisher.root):
        assert "No such file or directory" in attack(
            runtime, sandbox, f"COPY (SELECT 1) TO {literal(f'{elsewhere}/planted')}")
    assert "Read-only file system" in attack(runtime, sandbox, "COPY (SELECT 1) TO '/etc/x'")
    iso.assert_untouched()


def test_outward_preload_libraries_are_not_loaded_and_the_report_says_so(runtime, promoted):
    sandbox, warnings = promoted
    assert sandbox_sql(runtime, sandbox, "SHOW shared_preload_libraries")[0][0] == \
        "pg_stat_statements"
    assert any(w.startswith("shared_preload_libraries: pg_cron removed") for w in warnings)


_KILLED_PROVISION = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from temporalio.testing import ActivityEnvironment
    import activities.sandbox as module
    from activities.models import SandboxRequest
    from adapters.pg_runtime import PostgresRuntime
    from domain.spec import FilesystemSource, SandboxOptions

    def stuck(sandbox):  # the directories exist, the record is not written yet
        print("provisioning", flush=True)
        time.sleep(120)

    module.write_record = stuck
    sandboxes = module.SandboxActivities(PostgresRuntime.from_env(), Path(sys.argv[1]), "w@h")
    ActivityEnvironment().run(sandboxes.provision, SandboxRequest(
        drill_id=sys.argv[2], options=SandboxOptions(provider="docker"),
        source=FilesystemSource(base_backups=sys.argv[3], wal_archive=sys.argv[4])))
""")


def sandbox_cli(root: Path, capsys, monkeypatch, *args: str) -> dict:
    monkeypatch.setenv("PITRDRILL_SANDBOX_ROOT", str(root))
    monkeypatch.setenv("PITRDRILL_SANDBOX_IMAGE", IMAGE)
    monkeypatch.setenv("TEMPORAL_ADDRESS", "127.0.0.1:9")  # nothing there: age decides
    capsys.readouterr()
    assert cli(["sandbox", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_a_killed_worker_leaves_one_container_per_drill_that_reap_removes(
        iso: IsolationLab, runtime, sources, work_root: Path, capsys, monkeypatch,
        no_leftovers):
    root = work_root / "docker-reaped"
    drill_id = f"killed-{uuid.uuid4().hex[:8]}"
    no_leftovers.append(drill_id)
    worker = subprocess.Popen(
        [sys.executable, "-c", _KILLED_PROVISION, str(root), drill_id,
         str(iso.lab.base_backups), str(iso.archive)],
        stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[2],
        env={**os.environ, "PITRDRILL_SANDBOX_IMAGE": IMAGE})
    assert worker.stdout.readline().strip() == "provisioning"
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait()
    providers = SandboxProviders(ProviderSettings(root=root, runtime=runtime, image=IMAGE))
    sandboxes = SandboxActivities(runtime, root, "w@h", providers)
    env = ActivityEnvironment()
    request = SandboxRequest(drill_id=drill_id, options=SandboxOptions(provider="docker"),
                             source=iso.source)
    sandbox = env.run(sandboxes.provision, request)
    assert [p.name for p in root.iterdir()] == [drill_id] and sandbox.provider == "docker"
    env.run(RestoreActivities(sources).restore_base_backup,
            RestoreRequest(sandbox=sandbox, backup=iso.backup(), source=iso.source))
    replay = ReplayRequest(sandbox=sandbox, target=PAUSE, source=iso.source)
    env.run(ReplayActivities(runtime, sources).replay_to_target, replay)
    [first] = containers_of(drill_id)
    # A retried replay (its worker died) re-attaches to the running container.
    env.run(ReplayActivities(runtime, sources).replay_to_target, replay)
    assert [c.id for c in containers_of(drill_id)] == [first.id]
    listed = sandbox_cli(root, capsys, monkeypatch, "list")["sandboxes"]
    assert [(s["drill_id"], s["provider"], s["containers"]) for s in listed] == [
        (drill_id, "docker", [container_name(drill_id)])]
    reaped = sandbox_cli(root, capsys, monkeypatch, "reap", "--older-than", "0")
    assert [s["drill_id"] for s in reaped["removed"]] == [drill_id]
    assert containers_of(drill_id) == [] and list(root.iterdir()) == []
    iso.assert_untouched()


def test_keep_leaves_the_container_running_until_reap_finds_it_expired(
        iso: IsolationLab, runtime, sources, work_root: Path, capsys, monkeypatch,
        no_leftovers):
    root = work_root / "docker-kept"
    sandboxes, sandbox, _ = drill(runtime, sources, None, iso, PAUSE, root=root, keep="3s")
    no_leftovers.append(sandbox.drill_id)
    assert sandbox.isolation.kept_for_seconds == 3
    torn = ActivityEnvironment().run(sandboxes.teardown, sandbox)
    assert torn.removed is False
    [container] = containers_of(sandbox.drill_id)
    assert container.status == "running" and container.labels["pitrdrill.ttl"] == "3"
    assert sandbox_sql(runtime, sandbox, "SELECT count(*) FROM events")[0][0] == 100
    kept = sandbox_cli(root, capsys, monkeypatch, "reap", "--older-than", "0")
    assert kept["removed"] == [] and kept["kept"][0]["reason"].startswith("kept until")
    time.sleep(3.1)
    reaped = sandbox_cli(root, capsys, monkeypatch, "reap", "--older-than", "0")
    assert [s["drill_id"] for s in reaped["removed"]] == [sandbox.drill_id]
    assert containers_of(sandbox.drill_id) == [] and not Path(sandbox.root).exists()
    assert postgres_processes_under(root) == []
    iso.assert_untouched()


def test_a_missing_image_is_refused_before_anything_exists(iso, runtime, work_root: Path):
    root = work_root / "docker-noimage"
    providers = SandboxProviders(ProviderSettings(root=root, runtime=runtime,
                                                  image="pitrdrill/no-such-image:0"))
    with pytest.raises(ApplicationError) as raised:
        ActivityEnvironment().run(
            SandboxActivities(runtime, root, "w@h", providers).provision,
            SandboxRequest(drill_id="no-image", options=SandboxOptions(provider="docker"),
                           source=iso.source))
    assert raised.value.type == "SANDBOX_PROVIDER_UNAVAILABLE"
    assert "make images" in raised.value.message and not root.exists()
