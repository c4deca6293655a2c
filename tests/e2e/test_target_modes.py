"""One real drill per target mode and action, in the manner of PostgreSQL's own
src/test/recovery/t/003_recovery_targets.pl: each asserts the exact rows at the stop."""

from __future__ import annotations

import pytest

from tests.conftest import Scenario
from tests.e2e.test_drill import COUNT, VOID, drill, new_york


def rows_and_void(expected_rows: int, expected_void: int):
    return [("rows", COUNT, expected_rows), ("void", VOID, expected_void)]


async def verified(temporal_env, worker, scenario, target, rows, void=0):
    report = await drill(temporal_env, worker, scenario, target, rows_and_void(rows, void))
    assert report.status == "verified", (report.errors, report.checks)
    assert [c.observed for c in report.checks] == [rows, void]
    assert report.recovered.matches_prediction is True
    return report


@pytest.mark.parametrize("inclusive, kept_index", [(False, 2), (True, 3)])
async def test_time_exactly_at_a_commit_timestamp(temporal_env, worker, scenario: Scenario,
                                                  inclusive, kept_index):
    at = scenario.batches[3]
    kept = scenario.batches[kept_index]
    report = await verified(temporal_env, worker, scenario,
                            {"time": new_york(at.commit_time), "inclusive": inclusive}, kept.rows)
    assert report.recovered.last_commit_time == kept.commit_time


@pytest.mark.parametrize("inclusive, kept_index", [(False, 2), (True, 3)])
async def test_xid(temporal_env, worker, scenario: Scenario, inclusive, kept_index):
    kept = scenario.batches[kept_index]
    report = await verified(temporal_env, worker, scenario,
                            {"xid": scenario.batches[3].xid, "inclusive": inclusive}, kept.rows)
    assert report.recovered.last_commit_time == kept.commit_time
    assert f"transaction {scenario.batches[3].xid}" in report.recovered.stop_reason


@pytest.mark.parametrize("inclusive, kept_index, stamped_index", [(False, 2, 2), (True, 3, 2)])
async def test_lsn_exactly_at_a_commit_record(temporal_env, worker, scenario: Scenario,
                                              inclusive, kept_index, stamped_index):
    # The commit record's LSN, as the plan of an xid drill predicts it.
    probe = await drill(temporal_env, worker, scenario, {"xid": scenario.batches[3].xid})
    commit_lsn = probe.plan.predicted.first_dropped.lsn
    report = await verified(temporal_env, worker, scenario,
                            {"lsn": commit_lsn, "inclusive": inclusive},
                            scenario.batches[kept_index].rows)
    # Inclusive replays that commit, yet PostgreSQL leaves pg_last_xact_replay_timestamp()
    # at the one before (recoveryStopsAfter returns before SetLatestXTime): as predicted.
    assert report.recovered.last_commit_time == scenario.batches[stamped_index].commit_time


@pytest.mark.parametrize("inclusive", [False, True])
async def test_lsn_between_two_commits(temporal_env, worker, scenario: Scenario, inclusive):
    kept = scenario.batches[2]
    report = await verified(temporal_env, worker, scenario,
                            {"lsn": kept.lsn_after, "inclusive": inclusive}, kept.rows)
    assert report.recovered.last_commit_time == kept.commit_time


async def test_named_restore_point_is_before_the_damage(temporal_env, worker, scenario: Scenario):
    report = await verified(temporal_env, worker, scenario, {"name": scenario.restore_point},
                            scenario.batches[-1].rows, void=0)
    assert f'restore point "{scenario.restore_point}"' in report.recovered.stop_reason
    assert report.recovered.replay_lsn >= scenario.restore_point_lsn


async def test_immediate_stops_at_the_newest_backups_consistency_point(
        temporal_env, worker, scenario: Scenario):
    report = await verified(temporal_env, worker, scenario, {"immediate": True},
                            scenario.batches[-1].rows, void=150)
    assert report.base_backup.id == "second"
    assert report.recovered.replay_lsn == report.base_backup.stop_lsn


async def test_latest_replays_the_whole_archive_and_ends_recovery(
        temporal_env, worker, scenario: Scenario):
    last = scenario.late_batches[-1]
    report = await verified(temporal_env, worker, scenario, {"latest": True}, last.rows, void=150)
    assert report.recovered.in_recovery is False
    assert report.recovered.last_commit_time == last.commit_time


@pytest.mark.parametrize("action, in_recovery", [("promote", False), ("shutdown", True)])
async def test_actions(temporal_env, worker, scenario: Scenario, action, in_recovery):
    kept = scenario.batches[1]
    report = await verified(temporal_env, worker, scenario,
                            {"xid": scenario.batches[2].xid, "action": action}, kept.rows)
    # shutdown: the server stopped at the target and was re-opened paused to be verified.
    assert report.recovered.in_recovery is in_recovery
    assert report.recovered.last_commit_time == kept.commit_time
