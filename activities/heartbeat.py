"""One heartbeater for every long activity: beats on a clock from a side thread with the latest
progress model, so a slow step with nothing to report (a checksum, pg_verifybackup, a
pgbackrest restore) never looks like a dead worker, and a dead worker is noticed in seconds.

Cancellation still reaches the activity's own thread: the SDK raises CancelledError there.
"""

from __future__ import annotations

import contextvars
import threading
from typing import Generic, TypeVar

from pydantic import BaseModel
from temporalio import activity

Progress = TypeVar("Progress", bound=BaseModel)

# Beat well inside every heartbeat timeout the workflows set (activities/options.py).
BEAT_EVERY_S = 1.0


class Heartbeater(Generic[Progress]):
    """`with Heartbeater(progress) as beat:` then `beat(new_progress)` whenever it moves."""

    def __init__(self, progress: Progress, every_s: float = BEAT_EVERY_S) -> None:
        self.progress = progress
        self._every_s = every_s
        self._done = threading.Event()
        self._ticker: threading.Thread | None = None

    def __call__(self, progress: Progress) -> None:
        self.progress = progress

    def _beat_until_done(self) -> None:
        while not self._done.wait(self._every_s):
            activity.heartbeat(self.progress)

    def __enter__(self) -> Heartbeater[Progress]:
        activity.heartbeat(self.progress)
        # The heartbeat belongs to this activity's context: the ticker runs inside a copy.
        self._ticker = threading.Thread(
            target=contextvars.copy_context().run, args=(self._beat_until_done,), daemon=True)
        self._ticker.start()
        return self

    def __exit__(self, *_) -> None:
        self._done.set()
        if self._ticker is not None:
            self._ticker.join()
        activity.heartbeat(self.progress)  # the last word, however quick the work was


def resumed(progress: type[Progress]) -> Progress:
    """The progress the previous attempt last heartbeated, or a fresh one: a retry resumes."""
    details = activity.info().heartbeat_details
    return progress.model_validate(details[0]) if details else progress()
