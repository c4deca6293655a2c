from datetime import datetime, timezone

import pytest

from domain.catalog import BaseBackup, candidate_backups, describe_backup, parse_label_time
from domain.errors import DrillError, ErrorCode
from domain.targets import ResolvedTarget

LABEL = """START WAL LOCATION: 0/2000028 (file 000000010000000000000002)
CHECKPOINT LOCATION: 0/2000060
BACKUP METHOD: streamed
BACKUP FROM: primary
START TIME: 2026-11-22 04:40:12 UTC
LABEL: pg_basebackup base backup
START TIMELINE: 1
"""
HISTORY = LABEL + "STOP WAL LOCATION: 0/2000100 (file 000000010000000000000002)\n" \
    "STOP TIME: 2026-11-22 04:40:13 UTC\nSTOP TIMELINE: 1\n"
MANIFEST = '{"WAL-Ranges": [{"Timeline": 1, "Start-LSN": "0/2000028", "End-LSN": "0/2000138"}]}'


def backup(backup_id: str, stop_lsn: str, stop_second: int | None) -> BaseBackup:
    stop = None if stop_second is None else datetime(2026, 1, 1, 12, 0, stop_second, tzinfo=timezone.utc)
    return BaseBackup(
        id=backup_id, path=f"/b/{backup_id}", timeline=1, start_lsn="0/1000028",
        stop_lsn=stop_lsn, start_time=datetime(2026, 1, 1, tzinfo=timezone.utc),
        stop_time=stop, size_bytes=1, has_manifest=True,
    )


def time_target(second: int, micro: int = 0) -> ResolvedTarget:
    return ResolvedTarget(mode="time", utc=datetime(2026, 1, 1, 12, 0, second, micro, tzinfo=timezone.utc))


def test_describe_prefers_the_manifest_end_and_reads_the_history_stop_time():
    described = describe_backup("b1", "/b/b1", LABEL, MANIFEST, HISTORY, 42)
    assert (described.start_lsn, described.stop_lsn, described.timeline) == ("0/2000028", "0/2000138", 1)
    assert described.stop_time == datetime(2026, 11, 22, 4, 40, 13, tzinfo=timezone.utc)
    assert described.start_time == datetime(2026, 11, 22, 4, 40, 12, tzinfo=timezone.utc)


def test_describe_without_manifest_uses_the_history_file():
    assert describe_backup("b1", "/b", LABEL, None, HISTORY, 1).stop_lsn == "0/2000100"


def test_describe_refuses_a_backup_with_no_known_end():
    with pytest.raises(DrillError) as raised:
        describe_backup("b1", "/b/b1", LABEL, None, None, 1)
    assert raised.value.code == ErrorCode.BACKUP_METADATA_UNREADABLE
    assert "b1" in raised.value.message


def test_label_times_in_a_named_local_zone_are_refused_not_guessed():
    assert parse_label_time("2026-01-01 10:00:00 +05:30") == datetime(2026, 1, 1, 4, 30, tzinfo=timezone.utc)
    with pytest.raises(ValueError):
        parse_label_time("2026-01-01 10:00:00 IST")  # India, Ireland or Israel?


def ids(backups, target) -> list[str]:
    return [b.id for b in candidate_backups(backups, target)]


def test_candidates_are_backups_that_ended_a_whole_second_before_the_target_newest_first():
    backups = [backup("old", "0/1000100", 1), backup("new", "0/5000100", 5)]
    assert ids(backups, time_target(6)) == ["new", "old"]
    # Within the backup's last labelled second the end is uncertain: only the older one.
    assert ids(backups, time_target(5, 999_999)) == ["old"]


def test_lsn_candidates_compare_consistency_points():
    backups = [backup("old", "0/1000100", 1), backup("new", "0/5000100", 5)]
    assert ids(backups, ResolvedTarget(mode="lsn", lsn="0/5000100")) == ["new", "old"]
    assert ids(backups, ResolvedTarget(mode="lsn", lsn="0/50000FF")) == ["old"]


def test_positionless_targets_consider_every_backup_newest_first():
    backups = [backup("old", "0/1000100", 1), backup("new", "0/5000100", 5)]
    for target in (ResolvedTarget(mode="xid", xid=900), ResolvedTarget(mode="name", name="x"),
                   ResolvedTarget(mode="latest"), ResolvedTarget(mode="immediate")):
        assert ids(backups, target) == ["new", "old"]


def test_target_before_every_backup_is_refused_with_the_oldest_backup_named():
    with pytest.raises(DrillError) as raised:
        candidate_backups([backup("old", "0/1000100", 1)], time_target(1))
    assert raised.value.code == ErrorCode.TARGET_BEFORE_EARLIEST_BACKUP
    assert "old" in raised.value.message and "0/1000100" in raised.value.message


def test_no_backup_at_all():
    with pytest.raises(DrillError) as raised:
        candidate_backups([], time_target(1))
    assert raised.value.code == ErrorCode.NO_BASE_BACKUP
