"""Last in the e2e session (the file name sorts last): every DrillWorkflow history the real
drills above left on the session's server replays without a non-determinism error against
today's DrillWorkflow."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.history_replay import replay_drills

# A full e2e run leaves far more drills than this: fewer means the replay saw almost nothing.
AT_LEAST = 5


async def test_every_drill_history_of_the_e2e_session_replays(temporal_env, request):
    replayed = await replay_drills(temporal_env.client)
    assert replayed.failures == {}, replayed.failures
    here = Path(__file__).parent
    others = [item for item in request.session.items
              if Path(item.path).parent == here and item.path != Path(__file__)]
    if not others:
        pytest.skip("run with the e2e tests: alone, this session ran no drill to replay")
    assert len(replayed.histories) >= AT_LEAST, [h.workflow_id for h in replayed.histories]
