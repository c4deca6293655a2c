"""Target resolution as an activity: the clock is read here, never in the domain."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timezone

from temporalio import activity

from activities.boundary import activity_boundary
from activities.models import ResolveTargetRequest, ResolveTargetResult
from domain.targets import resolve_target


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


class TargetActivities:
    def __init__(self, clock: Callable[[], datetime] = utc_now) -> None:
        self._clock = clock

    @activity.defn(name="resolve_target")
    @activity_boundary
    def resolve_target(self, request: ResolveTargetRequest) -> ResolveTargetResult:
        started = time.perf_counter()
        target = resolve_target(request.target, self._clock())
        return ResolveTargetResult(target=target, seconds=time.perf_counter() - started)
