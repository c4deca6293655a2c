"""One options constant per activity: timeouts, retries and cancellation, said once.

Heartbeat timeouts are short because every long activity beats each second
(activities/heartbeat.py): a killed worker is noticed in seconds and its attempt retried.
Host-bound activities (they touch a sandbox) also get a schedule-to-start timeout from the
spec, so a host that never returns ends the drill with SANDBOX_HOST_LOST instead of waiting
forever.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio.common import RetryPolicy
from temporalio.workflow import ActivityCancellationType

HEARTBEAT = timedelta(seconds=10)

QUICK = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_attempts=3)
IO = RetryPolicy(initial_interval=timedelta(seconds=1), backoff_coefficient=2.0,
                 maximum_interval=timedelta(seconds=30), maximum_attempts=5)
# Teardown must happen: keep trying for a long time rather than leave a server behind.
TEARDOWN_RETRY = RetryPolicy(initial_interval=timedelta(seconds=2),
                             maximum_interval=timedelta(seconds=30))
# On cancel, wait for the activity to stop: teardown must not race a copy still writing.
WAIT_FOR_CANCEL = ActivityCancellationType.WAIT_CANCELLATION_COMPLETED

RESOLVE_TARGET = dict(start_to_close_timeout=timedelta(seconds=30), retry_policy=QUICK)
PLAN_DRILL = dict(start_to_close_timeout=timedelta(hours=2), heartbeat_timeout=HEARTBEAT,
                  retry_policy=IO)
RECORD_THROUGHPUT = dict(start_to_close_timeout=timedelta(seconds=30), retry_policy=QUICK)
NOTIFY_ESCALATION = dict(start_to_close_timeout=timedelta(minutes=1), retry_policy=QUICK)
APPEND_TO_LEDGER = dict(start_to_close_timeout=timedelta(seconds=30), retry_policy=QUICK)
PROVISION_SANDBOX = dict(start_to_close_timeout=timedelta(minutes=2), retry_policy=IO)

# Sent to the sandbox's host queue; `host_bound` adds the wait for that host.
RESTORE_BASE_BACKUP = dict(start_to_close_timeout=timedelta(hours=6),
                           heartbeat_timeout=HEARTBEAT, retry_policy=IO,
                           cancellation_type=WAIT_FOR_CANCEL)
REPLAY_TO_TARGET = dict(start_to_close_timeout=timedelta(hours=12),
                        heartbeat_timeout=HEARTBEAT, retry_policy=IO,
                        cancellation_type=WAIT_FOR_CANCEL)
RUN_CHECKS = dict(start_to_close_timeout=timedelta(minutes=30), heartbeat_timeout=HEARTBEAT,
                  retry_policy=QUICK, cancellation_type=WAIT_FOR_CANCEL)
WARM_CACHE = dict(start_to_close_timeout=timedelta(hours=1), heartbeat_timeout=HEARTBEAT,
                  retry_policy=QUICK, cancellation_type=WAIT_FOR_CANCEL)
PROMOTE_RECOVERY = dict(start_to_close_timeout=timedelta(minutes=10), heartbeat_timeout=HEARTBEAT,
                        retry_policy=QUICK)
TEARDOWN_SANDBOX = dict(start_to_close_timeout=timedelta(minutes=5),
                        retry_policy=TEARDOWN_RETRY)


def host_bound(options: dict, task_queue: str, host_wait_seconds: float) -> dict:
    return {**options, "task_queue": task_queue,
            "schedule_to_start_timeout": timedelta(seconds=host_wait_seconds)}


# Bisect (activities/probe.py). Planning runs on the shared queue, the rest on the sandbox's
# host (`host_bound`). A probe is a restart and a replay: it may take as long as a replay.
PLAN_BISECTION = dict(start_to_close_timeout=timedelta(hours=2), heartbeat_timeout=HEARTBEAT,
                      retry_policy=IO)
LIST_BISECT_CANDIDATES = dict(start_to_close_timeout=timedelta(hours=2),
                              heartbeat_timeout=HEARTBEAT, retry_policy=IO,
                              cancellation_type=WAIT_FOR_CANCEL)
PROBE_BEFORE = dict(start_to_close_timeout=timedelta(hours=12), heartbeat_timeout=HEARTBEAT,
                    retry_policy=IO, cancellation_type=WAIT_FOR_CANCEL)
