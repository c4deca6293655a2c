"""Cache warming: load the relations the spec names into the sandbox's cache after the checks
passed, so that a promoted recovery starts with a warm cache (adapters/cache_warm.py says
how: pg_prewarm when the backup has it, else a sequential read)."""

from __future__ import annotations

from temporalio import activity

from activities.boundary import activity_boundary
from activities.heartbeat import Heartbeater
from activities.models import WarmRequest
from activities.sandbox import server_of
from adapters.cache_warm import warm
from adapters.pg_runtime import PostgresRuntime
from domain.report import WarmReport


class WarmActivities:
    def __init__(self, runtime: PostgresRuntime) -> None:
        self._runtime = runtime

    @activity.defn(name="warm_cache")
    @activity_boundary
    def warm_cache(self, request: WarmRequest) -> WarmReport:
        server = server_of(request.sandbox, self._runtime)
        with Heartbeater(WarmReport()) as beat, \
                server.connect(request.database, request.db_user) as conn:
            return warm(conn, request.warm, request.database, beat)
