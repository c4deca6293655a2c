from datetime import datetime, timezone

from domain.sandbox import restore_command, server_settings
from domain.targets import ResolvedTarget


def settings():
    target = ResolvedTarget(mode="time", utc=datetime(2026, 1, 15, 19, 30, 0, 123456, tzinfo=timezone.utc))
    return server_settings("/sb/d1", "/sb/d1/socket", 6543, "d1", restore_command("/arch ive"),
                           target)


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


def test_restore_command_quotes_the_archive_path_and_only_reads():
    assert restore_command("/arch ive") == "cp '/arch ive/%f' %p"
    assert settings()["restore_command"] == "cp '/arch ive/%f' %p"
