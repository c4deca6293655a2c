"""Last in this directory: every drill history the tests above produced replays without a
non-determinism error against today's DrillWorkflow."""

from __future__ import annotations

import pytest

from tests.history_replay import replay_drills


async def test_every_history_of_this_session_replays(temporal_env, started_drills):
    if not started_drills:
        pytest.skip("no drill ran in this session")
    replayed = await replay_drills(temporal_env.client, set(started_drills))
    assert replayed.failures == {}
    assert set(started_drills) <= replayed.workflow_ids
    assert len(replayed.histories) >= len(started_drills)
