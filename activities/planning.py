"""Planning as one activity: read the catalog, bring the WAL index up to date, and predict the
stop from the newest backup that reaches the target. Reads backups and archive; writes only the
index cache, which lives outside both."""

from __future__ import annotations

import time
from pathlib import Path

from pydantic import BaseModel
from temporalio import activity

from activities.boundary import domain_errors
from activities.catalog import FilesystemCatalog
from activities.log import drill_log
from activities.waldump import IndexProgress, IndexResult, WalIndexer
from domain.plan import DrillPlan, plan_recovery
from domain.spec import FilesystemSource
from domain.targets import ResolvedTarget

_HEARTBEAT_EVERY_S = 2.0


class PlanRequest(BaseModel):
    source: FilesystemSource
    target: ResolvedTarget


class PlanResult(BaseModel):
    plan: DrillPlan
    index: IndexResult
    seconds: float


class DrillPlanner:
    def __init__(self, catalog: FilesystemCatalog, indexer: WalIndexer) -> None:
        self._catalog = catalog
        self._indexer = indexer

    def plan(self, request: PlanRequest, on_progress=lambda _: None) -> PlanResult:
        started = time.perf_counter()
        archive = Path(request.source.wal_archive)
        backups = self._catalog.backups(request.source)
        indexed = self._indexer.index(archive, on_progress)
        plan = plan_recovery(
            backups, request.target,
            lambda backup: self._indexer.predict(archive, request.target, backup),
        )
        return PlanResult(plan=plan, index=indexed, seconds=time.perf_counter() - started)

    @activity.defn(name="plan_drill")
    @domain_errors
    def plan_drill(self, request: PlanRequest) -> PlanResult:
        last_beat = 0.0

        def beat(progress: IndexProgress) -> None:
            nonlocal last_beat
            if time.monotonic() - last_beat > _HEARTBEAT_EVERY_S:
                activity.heartbeat(progress)
                last_beat = time.monotonic()

        result = self.plan(request, beat)
        drill_log().info("planned", backup=result.plan.backup.id,
                         predicted_replay_lsn=result.plan.predicted.replay_lsn,
                         segments_indexed=result.index.segments_indexed)
        return result
