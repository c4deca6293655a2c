"""Cache warming: load the relations the spec names into the sandbox's shared buffers after the
checks passed, so that a promoted recovery starts with a warm cache."""

from __future__ import annotations

from temporalio import activity

from activities.boundary import activity_boundary
from activities.models import WarmRequest
from adapters.pg_runtime import PostgresRuntime
from domain.report import WarmReport


class WarmActivities:
    def __init__(self, runtime: PostgresRuntime) -> None:
        self._runtime = runtime

    @activity.defn(name="warm_cache")
    @activity_boundary
    def warm_cache(self, request: WarmRequest) -> WarmReport:
        return WarmReport()
