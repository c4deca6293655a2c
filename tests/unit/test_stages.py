"""A running drill's rate and ETA from its stage start and last heartbeat."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from domain.stages import DrillProgress, Stage, live_progress

T0 = datetime(2026, 11, 29, 3, 0, tzinfo=timezone.utc)


def progress(stage: Stage) -> DrillProgress:
    return DrillProgress(drill_id="d", database="shop", stage=stage, stage_started_at=T0,
                         restore_bytes_total=400_000_000, replay_start_lsn="0/2000000",
                         predicted_stop_lsn="0/6000000")


def test_restore_rate_and_eta_from_bytes_done_of_total():
    live = live_progress(progress(Stage.RESTORE), {"bytes_done": 100_000_000},
                         T0 + timedelta(seconds=2))
    assert live.bytes_restored == 100_000_000
    assert live.mb_per_s == 50.0 and live.eta_seconds == 6.0


def test_replay_bytes_left_to_the_predicted_stop():
    live = live_progress(progress(Stage.REPLAY), {"replay_lsn": "0/4000000"},
                         T0 + timedelta(seconds=4))
    assert live.replay_lsn == "0/4000000"
    assert live.bytes_to_stop == 0x2000000
    assert live.mb_per_s == round(0x2000000 / 4 / 1e6, 3)
    assert live.eta_seconds == 4.0


def test_no_heartbeat_yet_gives_no_rate():
    live = live_progress(progress(Stage.REPLAY), None, T0 + timedelta(seconds=1))
    assert live.mb_per_s is None and live.eta_seconds is None and live.replay_lsn is None
