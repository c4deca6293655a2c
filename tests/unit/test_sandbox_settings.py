from datetime import datetime, timezone

import pytest

from domain.errors import DrillError, ErrorCode
from domain.sandbox import Sandbox, restore_command, sandbox_dir_name, server_settings
from domain.targets import ResolvedTarget


def settings():
    target = ResolvedTarget(mode="time", utc=datetime(2026, 1, 15, 19, 30, 0, 123456, tzinfo=timezone.utc))
    sandbox = Sandbox(drill_id="d1", root="/sb/d1", data_dir="/sb/d1/data",
                      socket_dir="/sb/d1/socket", log_file="/sb/d1/postgres.log", port=6543)
    return server_settings(sandbox, restore_command("/arch ive"), target)


def test_the_sandbox_cannot_write_to_the_archive_or_reach_a_primary():
    s = settings()
    assert s["archive_mode"] == "off" and s["archive_command"] == "" and s["archive_library"] == ""
    assert s["primary_conninfo"] == "" and s["primary_slot_name"] == ""
    assert s["listen_addresses"] == "" and s["unix_socket_directories"] == "/sb/d1/socket"
    assert s["external_pid_file"] == "" and s["archive_cleanup_command"] == ""
    assert s["hba_file"] == "/sb/d1/pg_hba.conf"
    assert s["default_transaction_read_only"] == "on"


def test_recovery_settings_are_explicit_and_in_utc():
    s = settings()
    assert s["recovery_target_time"] == "2026-01-15 19:30:00.123456+00"
    assert s["recovery_target_inclusive"] == "off"
    assert s["recovery_target_action"] == "pause"


def test_restore_command_quotes_the_archive_path_reads_compressed_copies_and_only_reads():
    command = restore_command("/arch ive")
    assert command == (
        "if [ -f '/arch ive/%f' ]; then cp '/arch ive/%f' %p; "
        "elif [ -f '/arch ive/%f'.gz ]; then gzip -dc '/arch ive/%f'.gz > %p; "
        "elif [ -f '/arch ive/%f'.zst ]; then zstd -qdc '/arch ive/%f'.zst > %p; "
        "elif [ -f '/arch ive/%f'.lz4 ]; then lz4 -qdc '/arch ive/%f'.lz4 > %p; "
        "else exit 1; fi")
    assert settings()["restore_command"] == command


def test_the_sandbox_runs_on_its_own_data_and_ignores_trigger_files():
    s = settings()
    assert s["data_directory"] == "/sb/d1/data" and s["promote_trigger_file"] == ""


def test_every_other_recovery_target_is_blanked_before_the_chosen_one():
    names = list(settings())
    blanks = ["recovery_target", "recovery_target_lsn", "recovery_target_name", "recovery_target_xid"]
    assert all(settings()[name] == "" for name in blanks)
    assert max(names.index(n) for n in blanks) < names.index("recovery_target_time")


def test_a_long_drill_id_gets_a_short_unique_directory_whose_socket_path_fits():
    root = "/var/tmp/pitrdrill/sandboxes"
    long_id = "drill-warehouse_eu_central-nightly-proof-20261129T023000Z-abcdef"
    name = sandbox_dir_name(long_id, root)
    assert len(f"{root}/{name}/socket/.s.PGSQL.65535") <= 107
    assert name != sandbox_dir_name(long_id + "x", root)
    assert name == sandbox_dir_name(long_id, root)  # a retry finds the same sandbox
    assert sandbox_dir_name("drill-shop-1", root) == "drill-shop-1"
    assert sandbox_dir_name("../../etc", root) == ".._.._etc"


def test_a_sandbox_root_too_long_for_any_socket_is_refused():
    with pytest.raises(DrillError) as raised:
        sandbox_dir_name("d", "/" + "x" * 90)
    assert raised.value.code == ErrorCode.SANDBOX_FAILED and "PITRDRILL_SANDBOX_ROOT" in raised.value.hint


# --- hardening, for every provider -------------------------------------------------------------

import pytest  # noqa: E402

from datetime import timedelta  # noqa: E402

from adapters.sandbox_providers import (  # noqa: E402
    HeldSandbox,
    ProviderSettings,
    SandboxProviders,
    reap_reason,
)
from adapters.sandbox_providers.docker import DockerProvider, _mounts  # noqa: E402
from adapters.sandbox_providers.local import isolation_of  # noqa: E402
from domain.errors import DrillError  # noqa: E402
from domain.sandbox import (  # noqa: E402
    OUTWARD_LIBRARIES,
    SandboxMount,
    join_library_list,
    preload_settings,
    split_library_list,
)
from domain.spec import FilesystemSource, PgBackRestSource, SandboxOptions  # noqa: E402


def test_no_subscription_can_start_and_libraries_load_only_from_libdir():
    s = settings()
    assert s["max_logical_replication_workers"] == "0"
    assert s["max_sync_workers_per_subscription"] == "0"
    assert s["dynamic_library_path"] == "$libdir"


def test_restore_command_is_shell_safe_for_a_space_a_quote_and_a_percent():
    command = restore_command("/ar chive's %f")
    # The shell sees one quoted word per path; PostgreSQL turns %% back into %.
    assert "cp '/ar chive'\"'\"'s %%f/%f' %p" in command
    assert command.count("%p") == 4 and "> %p" in command
    # Only reads the archive: nothing is written but %p.
    assert all(word not in command for word in ("rm ", "mv ", "> '/ar", ">>"))


def test_outward_background_worker_libraries_are_removed_and_reported():
    preload, warnings = preload_settings({
        "shared_preload_libraries": 'pg_stat_statements, "$libdir/pg_cron.so",pg_net,'
                                    'auto_explain,pglogical',
        "session_preload_libraries": "pg_background",
        "local_preload_libraries": "",
    })
    assert preload["shared_preload_libraries"] == "pg_stat_statements,auto_explain"
    assert preload["session_preload_libraries"] == "" and preload["local_preload_libraries"] == ""
    removed = sorted(w.split(":")[1].split()[0] for w in warnings)
    assert removed == ["pg_background", "pg_cron", "pg_net", "pglogical"]


def test_timescaledb_is_kept_with_its_scheduler_and_telemetry_off():
    preload, warnings = preload_settings({"shared_preload_libraries": "timescaledb",
                                          "session_preload_libraries": "",
                                          "local_preload_libraries": ""})
    assert preload["shared_preload_libraries"] == "timescaledb"
    assert preload["timescaledb.max_background_workers"] == "0"
    assert preload["timescaledb.telemetry_level"] == "off"
    assert warnings and "timescaledb kept" in warnings[0]


def test_an_unreadable_restored_configuration_loads_no_preload_library():
    preload, warnings = preload_settings({})
    assert preload == {"shared_preload_libraries": "", "session_preload_libraries": "",
                       "local_preload_libraries": ""}
    assert len(warnings) == 3


def test_the_deny_list_names_what_acts_outward():
    assert {"pg_cron", "pg_net", "pglogical", "pg_background"} <= set(OUTWARD_LIBRARIES)


@pytest.mark.parametrize("value, items", [
    ("a, b", ["a", "b"]),
    ('"a, b"', ["a, b"]),
    ('  a ,"b""c" , $libdir/x.so', ["a", 'b"c', "$libdir/x.so"]),
    ("", []),
])
def test_preload_lists_split_as_postgresql_splits_them(value, items):
    assert split_library_list(value) == items
    assert split_library_list(join_library_list(items)) == items


DOCKER = Sandbox(drill_id="d1", root="/sb/d1", data_dir="/sb/d1/data", socket_dir="/sb/d1/socket",
                 log_file="/sb/d1/postgres.log", port=6543, provider="docker", confined=True,
                 mounts=[SandboxMount(host="/sb/d1", server="/sandbox", read_only=False),
                         SandboxMount(host="/backups/wal", server="/archive")])


def test_a_docker_sandbox_is_given_its_in_container_paths():
    target = ResolvedTarget(mode="immediate")
    s = server_settings(DOCKER, restore_command(DOCKER.server_path("/backups/wal")), target)
    assert s["data_directory"] == "/sandbox/data"
    assert s["unix_socket_directories"] == "/sandbox/socket"
    assert s["hba_file"] == "/sandbox/pg_hba.conf"
    assert s["restore_command"].startswith("if [ -f /archive/%f ]; then cp /archive/%f %p")


def test_a_path_outside_a_confined_sandboxs_mounts_is_refused():
    with pytest.raises(DrillError) as raised:
        DOCKER.server_path("/var/lib/postgresql/15/main")
    assert raised.value.code == "SANDBOX_FAILED"
    assert DOCKER.server_path("/sb/d1") == "/sandbox"


def test_docker_mounts_the_archive_or_repository_read_only_and_only_them():
    fs = _mounts(DOCKER, FilesystemSource(base_backups="/backups/base", wal_archive="/backups/wal"))
    assert [(m.host, m.server, m.read_only) for m in fs] == [
        ("/sb/d1", "/sandbox", False), ("/backups/wal", "/archive", True)]
    repo = _mounts(DOCKER, PgBackRestSource(stanza="s", repo_path="/repo", config="/etc/pb.conf"))
    assert [(m.server, m.read_only) for m in repo[1:]] == [
        ("/backup", True), ("/etc/pitrdrill/pgbackrest.conf", True)]


def test_a_local_sandbox_without_root_reports_what_is_not_enforced():
    isolation = isolation_of(False, "not running as root", SandboxOptions(memory_mb=512), [])
    assert set(isolation.not_enforced()) == {"no_network", "private_filesystem",
                                             "archive_read_only", "no_new_privileges",
                                             "private_processes", "resource_limits"}
    assert "connect to any address" in isolation.properties[0].detail


def test_sandbox_options_take_a_provider_limits_and_a_keep_duration():
    options = SandboxOptions(provider="docker", memory_mb=512, cpus=1.5, pids=200, keep="2h")
    assert options.keep_seconds() == 7200
    with pytest.raises(ValueError):
        SandboxOptions(keep="forever")
    with pytest.raises(ValueError):
        SandboxOptions(provider="vm")


def test_an_unknown_or_unusable_provider_is_sandbox_provider_unavailable():
    with pytest.raises(DrillError) as unknown:
        ProviderSettings(default="vm")
    assert unknown.value.code == "SANDBOX_PROVIDER_UNAVAILABLE"
    with pytest.raises(DrillError) as recovery:
        DockerProvider(ProviderSettings()).provision(
            DOCKER.model_copy(update={"purpose": "recovery"}), SandboxOptions(), None)
    assert recovery.value.code == "SANDBOX_PROVIDER_UNAVAILABLE"
    assert "local provider" in recovery.value.message
    assert SandboxProviders(ProviderSettings()).get().name == "local"


def test_the_reaper_spares_recoveries_running_drills_and_kept_or_young_sandboxes():
    now = datetime(2026, 1, 1, 12, tzinfo=timezone.utc)
    old = HeldSandbox(drill_id="a", provider="local", created_at=now - timedelta(hours=7))
    young = HeldSandbox(drill_id="b", provider="docker", created_at=now - timedelta(hours=1))
    kept = HeldSandbox(drill_id="c", provider="local", created_at=now - timedelta(hours=9),
                       kept_until=now + timedelta(minutes=5))
    expired = HeldSandbox(drill_id="d", provider="local", created_at=now,
                          kept_until=now - timedelta(seconds=1))
    recovery = HeldSandbox(drill_id="e", provider="local", purpose="recovery",
                           created_at=now - timedelta(days=3))
    six_hours = 6 * 3600
    assert reap_reason(old, now, six_hours, set()) is None
    assert "still running" in reap_reason(old, now, six_hours, {"a"})
    assert "younger than" in reap_reason(young, now, six_hours, set())
    assert reap_reason(young, now, 0, set()) is None
    assert "kept until" in reap_reason(kept, now, 0, set())
    assert reap_reason(expired, now, six_hours, set()) is None
    assert "never reaped" in reap_reason(recovery, now, 0, set())


# --- speed settings: disposable drills only ------------------------------------------------------

def _sandbox_for(purpose: str) -> Sandbox:
    return Sandbox(drill_id="d1", root="/sb/d1", data_dir="/sb/d1/data",
                   socket_dir="/sb/d1/socket", log_file="/sb/d1/postgres.log", port=6543,
                   purpose=purpose)


def _speed_settings_for(purpose: str) -> dict[str, str]:
    target = ResolvedTarget(mode="lsn", lsn="0/3000000")
    return server_settings(_sandbox_for(purpose), restore_command("/archive"), target)


def test_a_drill_sandbox_replays_without_fsync_or_commit_waits_and_prefetches():
    s = _speed_settings_for("drill")
    assert s["fsync"] == "off" and s["synchronous_commit"] == "off"
    assert s["recovery_prefetch"] == "on"
    # Whatever the restored cluster had: a replay must produce the same pages.
    assert "full_page_writes" not in s


def test_a_recovery_keeps_every_durability_default():
    """A recovery's data directory is promoted and kept: it must survive a crash."""
    s = _speed_settings_for("recovery")
    for name in ("fsync", "synchronous_commit", "full_page_writes", "recovery_prefetch"):
        assert name not in s, name


def test_speed_settings_never_weaken_isolation_or_the_target():
    drill, recovery = _speed_settings_for("drill"), _speed_settings_for("recovery")
    assert {k: v for k, v in drill.items() if k in recovery} == recovery
