from datetime import datetime, timezone

from domain.sandbox import Sandbox, restore_command, server_settings
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
