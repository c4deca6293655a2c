"""Planning as activities: pre-flight for a drill, and remembering what drills measured."""

from __future__ import annotations

import structlog
from temporalio import activity

from activities.boundary import activity_boundary
from activities.heartbeat import Heartbeater
from activities.models import Metrics, PlanRequest, PlanResult
from adapters.preflight import Preflight, WindowResult
from adapters.throughput_history import ThroughputHistory
from adapters.wal_index import IndexProgress

_log = structlog.get_logger("pitrdrill.planning")


class PlanningActivities:
    def __init__(self, preflight: Preflight, throughput: ThroughputHistory) -> None:
        self._preflight = preflight
        self._throughput = throughput

    @activity.defn(name="plan_drill")
    @activity_boundary
    def plan_drill(self, request: PlanRequest) -> PlanResult:
        with Heartbeater(IndexProgress()) as beat:
            result = self._preflight.plan(request, beat)
        _log.info("planned", backup=result.plan.backup.id,
                  predicted_replay_lsn=result.plan.predicted.replay_lsn,
                  segments_indexed=result.index.segments_indexed)
        return result

    @activity.defn(name="record_throughput")
    @activity_boundary
    def record_throughput(self, metrics: Metrics) -> None:
        """Keep what a verified drill measured: the next plans estimate from it."""
        if metrics.restore_mb_per_s and metrics.replay_mb_per_s:
            self._throughput.record(metrics.restore_mb_per_s, metrics.replay_mb_per_s)

    @activity.defn(name="restorable_window")
    @activity_boundary
    def restorable_window(self, request: PlanRequest) -> WindowResult:
        """The window a synthetic target picks its instant from (request.target: its timeline)."""
        with Heartbeater(IndexProgress()) as beat:
            result = self._preflight.window(request, beat)
        _log.info("window", earliest_lsn=result.window.earliest_lsn,
                  latest=result.window.latest.lsn if result.window.latest else None)
        return result
