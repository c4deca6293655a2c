"""Durable drills, proven by breaking things: real PostgreSQL, a real Temporal server
(`pitrdrill server` on a SQLite file) and real `pitrdrill worker` processes, SIGKILLed
mid-stage. No mocks, and no fixed sleep as the moment to strike: every kill waits for the
drill's own status (`workers.api.drill_status`: its stage) and then for the work itself —
bytes of the base backup landing in the sandbox, the sandbox server's replay LSN moving.

Each fault ends in the report an uninterrupted run of the same spec gives (the same recovered
LSN, last commit time and checks), with one sandbox, provisioned once, and nothing left behind.

Notes on what these tests found and how they are timed:

- The SDK sends an activity's heartbeats to the server at most every 0.8 x its heartbeat
  timeout unless the worker sets `max_heartbeat_throttle_interval` (workers/worker.py: 1 s).
  These stages last a few seconds here, so the kills watch the sandbox itself rather than the
  heartbeated progress.
- A killed worker's attempt is retried once its 10 s heartbeat timeout expires: each kill of
  a worker costs ~11 s (it was 2 minutes). The sandbox server replays on without its worker
  meanwhile and has usually reached the target when the retry re-attaches to it.
- A cancel reaches a running activity with its next heartbeat: a replay that ends sooner
  completes, and the drill honours the cancel at the stage boundary.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import psycopg
import pytest
import pytest_asyncio
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter

from activities.models import Sandbox, TeardownResult
from adapters.pg_runtime import PostgresRuntime, remove_tree
from adapters.pg_server import PostgresServer
from adapters.processes import is_alive
from domain.errors import DrillError, ErrorCode
from domain.lsn import parse_lsn
from domain.report import DrillReport, mb_per_s
from domain.spec import DrillSpec
from domain.stages import LiveProgress, Stage
from lab.lab import Lab, Marker
from lab.workload import OrdersWorkload
from tests.conftest import Scenario, postgres_processes_under
from tests.e2e.processes import Processes, TemporalServer, WorkerProcess
from workers import api
from workers.client import connect

# Wide rows (~1 kB, stored inline) give a base backup of ~560 MB and ~540 MB of WAL after it:
# on 2 cores a restore takes 0.4-1.3 s and a replay 2-4.5 s, long enough to strike in the
# middle of either (the restore is watched tightly), short enough for the module to stay quick.
ROWS_BEFORE_BACKUP = 500_000
ROWS_AFTER_BACKUP = 500_000
PAD = "repeat(md5(g::text), 30)"
COUNT = "select count(*) from orders"
BALLAST = "select count(*) from ballast"
POLL_S = 0.02
STRIKE_TIMEOUT_S = 120

HOST_QUEUE_ACTIVITIES = ("restore_base_backup", "replay_to_target", "run_checks",
                         "teardown_sandbox")


# --- the lab ---------------------------------------------------------------------------------


@dataclass
class BigLab:
    lab: Lab
    database: str
    kept: Marker
    dropped: Marker
    ballast_rows: int
    seconds: float

    def source(self) -> dict:
        return {"kind": "filesystem", "base_backups": str(self.lab.base_backups),
                "wal_archive": str(self.lab.wal_archive)}

    def spec(self) -> DrillSpec:
        target = self.kept.commit_time + (self.dropped.commit_time - self.kept.commit_time) / 2
        return DrillSpec.model_validate({
            "database": self.database, "source": self.source(),
            "target": {"time": new_york(target)},
            "checks": [{"name": "orders at target", "sql": COUNT, "expect": self.kept.rows},
                       {"name": "ballast replayed", "sql": BALLAST, "expect": self.ballast_rows}],
        })


def new_york(instant) -> str:
    return instant.astimezone(ZoneInfo("America/New_York")).strftime(
        "%Y-%m-%d %H:%M:%S.%f America/New_York")


@pytest.fixture(scope="module")
def area(work_root: Path, runtime: PostgresRuntime):
    """This module's corner of the session's work root; on the way out, whatever a failed
    test left running there is stopped — and reported, since nothing should have been."""
    root = work_root / "durability"
    runtime.make_private_dir(root, 0o755)
    yield root
    leftovers = stop_leftover_sandboxes(root, runtime)
    still_running = postgres_processes_under(root)
    remove_tree(root)
    assert not leftovers, f"sandboxes left behind: {leftovers}"
    assert not still_running, f"postgres processes left running under {root}: {still_running}"


@pytest.fixture(scope="module")
def big_lab(area: Path, runtime: PostgresRuntime) -> BigLab:
    began = time.perf_counter()
    with Lab(area / "lab", runtime) as lab:
        orders = OrdersWorkload(lab, "shop")
        orders.create()
        orders.insert_batches(3, 100)
        lab.sql("CREATE TABLE ballast (id int NOT NULL, pad text NOT NULL)", "shop")
        lab.sql("ALTER TABLE ballast ALTER pad SET STORAGE PLAIN", "shop")
        lab.sql(f"INSERT INTO ballast SELECT g, {PAD} "
                f"FROM generate_series(1, {ROWS_BEFORE_BACKUP}) g", "shop")
        lab.base_backup("nightly")
        lab.sql(f"INSERT INTO ballast SELECT g, {PAD} "
                f"FROM generate_series(1, {ROWS_AFTER_BACKUP}) g", "shop")
        markers = []
        for _ in range(3):
            markers.append(orders.insert_batch(100))
            time.sleep(0.02)  # distinct commit timestamps, room for a target between them
        lab.archive_all()
        built = BigLab(lab=lab, database="shop", kept=markers[-2], dropped=markers[-1],
                       ballast_rows=ROWS_BEFORE_BACKUP + ROWS_AFTER_BACKUP,
                       seconds=time.perf_counter() - began)
        print(f"\n[durability] lab built in {built.seconds:.1f}s: base backup "
              f"{tree_bytes(lab.base_backups) / 1e6:.0f} MB, archive "
              f"{tree_bytes(lab.wal_archive) / 1e6:.0f} MB")
        yield built


# --- processes -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def processes(area: Path):
    """Every server and worker this module starts; all SIGKILLed at the end, then checked."""
    started = Processes()
    yield started
    started.kill_all()
    survivors = [f"{p.name} ({p.pid})" for p in started.started if p.popen and is_alive(p.pid)]
    assert not survivors, f"processes survived the module: {survivors}"


@pytest_asyncio.fixture(scope="module")
async def temporal(processes: Processes, area: Path) -> TemporalServer:
    server = TemporalServer(processes, area / "temporal.sqlite", area / "temporal.log")
    await server.start()
    return server


@pytest_asyncio.fixture(scope="module")
async def client(temporal: TemporalServer) -> Client:
    return await connect(temporal.address)


def new_worker(processes: Processes, temporal: TemporalServer, area: Path, task_queue: str,
               host_id: str) -> WorkerProcess:
    return WorkerProcess(processes, temporal.address, task_queue, host_id,
                         sandbox_root=area / f"sandboxes-{host_id}",
                         index_path=area / f"wal-index-{host_id}.sqlite",
                         log=area / f"worker-{host_id}.log")


@pytest_asyncio.fixture(scope="module")
async def alpha(processes: Processes, temporal: TemporalServer, area: Path) -> WorkerProcess:
    """The single host of tests 1–4, on its own task queue."""
    return await new_worker(processes, temporal, area, f"durable-{uuid.uuid4().hex[:6]}",
                            "alpha").start()


@pytest_asyncio.fixture
async def worker(alpha: WorkerProcess) -> WorkerProcess:
    """alpha, running (a test before may have killed it)."""
    if not alpha.running():
        await alpha.start()
    return alpha


class Drills:
    """Starts a test's drills; whatever still runs when the test ends (it failed) is
    cancelled, so that its sandbox is torn down before the next test."""

    def __init__(self, client: Client, processes: Processes) -> None:
        self.client = client
        self.processes = processes
        self.started: list[str] = []

    async def start(self, spec: DrillSpec, name: str, task_queue: str) -> str:
        drill_id = f"dur-{name}-{uuid.uuid4().hex[:6]}"
        self.started.append(drill_id)
        return await api.start_drill(self.client, spec, drill_id, task_queue)

    async def cancel_unfinished(self) -> None:
        running = [drill_id for drill_id in self.started if await self._running(drill_id)]
        if running:  # the test failed: its drills' hosts must be up to tear down
            for host in self.processes.workers:
                if not host.running():
                    await host.start()
        for drill_id in running:
            handle = self.client.get_workflow_handle(drill_id)
            try:
                await handle.cancel()
                await asyncio.wait_for(handle.result(), 60)
            except Exception:  # cancelled, or beyond saving: the area's finalizer reports it
                pass

    async def _running(self, drill_id: str) -> bool:
        try:
            description = await self.client.get_workflow_handle(drill_id).describe()
        except Exception:
            return False
        return description.status == WorkflowExecutionStatus.RUNNING


@pytest_asyncio.fixture
async def drills(client: Client, processes: Processes):
    started = Drills(client, processes)
    yield started
    await started.cancel_unfinished()


@pytest_asyncio.fixture(scope="module")
async def reference(client: Client, alpha: WorkerProcess, big_lab: BigLab) -> DrillReport:
    """The uninterrupted run every fault is compared with."""
    began = time.perf_counter()
    drill_id = f"dur-reference-{uuid.uuid4().hex[:6]}"
    await api.start_drill(client, big_lab.spec(), drill_id, alpha.task_queue)
    report, seen = await finish(client, drill_id, [alpha.sandbox_root], set())
    assert report.status == "verified", report.errors
    assert [c.observed for c in report.checks] == [big_lab.kept.rows, big_lab.ballast_rows]
    assert report.recovered.matches_prediction is True
    assert report.recovered.last_commit_time == big_lab.kept.commit_time
    runs = await activity_runs(client.get_workflow_handle(drill_id))
    assert seen == {drill_id} and provisioned(runs).root == str(alpha.sandbox_root / drill_id)
    assert all(run.attempt == 1 for run in runs)
    assert_nothing_left(alpha.sandbox_root)
    say("reference (uninterrupted)", report, time.perf_counter() - began, sandboxes=len(seen),
        wal_replayed=f"{report.metrics.wal_bytes_replayed / 1e6:.0f} MB")
    return report


# --- looking at the work itself --------------------------------------------------------------


def tree_bytes(path: Path) -> int:
    total = 0
    for root, _, names in os.walk(path):
        for name in names:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


def sandbox_dirs(root: Path) -> set[str]:
    try:
        return {entry.name for entry in root.iterdir() if entry.is_dir()}
    except FileNotFoundError:
        return set()


def sandbox_record(root: Path, drill_id: str) -> Sandbox | None:
    try:
        return Sandbox.model_validate_json((root / drill_id / "sandbox.json").read_text())
    except (OSError, ValueError):
        return None


def sandbox_server(sandbox: Sandbox, runtime: PostgresRuntime) -> PostgresServer:
    return PostgresServer(runtime=runtime, data_dir=Path(sandbox.data_dir),
                          socket_dir=Path(sandbox.socket_dir), port=sandbox.port,
                          log_file=Path(sandbox.log_file))


def replay_state(sandbox: Sandbox, runtime: PostgresRuntime) -> tuple[str, str] | None:
    """(replay LSN, pause state) straight from the sandbox server, None while it does not
    accept connections yet."""
    server = sandbox_server(sandbox, runtime)
    if server.pid() is None:
        return None
    try:
        with psycopg.connect(server.conninfo("postgres"), autocommit=True,
                             connect_timeout=2) as conn:
            return conn.execute("SELECT pg_last_wal_replay_lsn()::text, "
                                "pg_get_wal_replay_pause_state()").fetchone()
    except psycopg.Error:
        return None


def log_records(log: Path, drill_id: str, event: str) -> list[dict]:
    """A worker's JSON log records of one event for one drill (all its generations: each
    restart appends to the same file)."""
    found = []
    for line in log.read_text(errors="replace").splitlines():
        if event in line and drill_id in line:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if record.get("event") == event and record.get("drill_id") == drill_id:
                found.append(record)
    return found


def stop_leftover_sandboxes(area: Path, runtime: PostgresRuntime) -> list[str]:
    left = []
    for root in area.glob("sandboxes-*"):
        for name in sorted(sandbox_dirs(root)):
            left.append(str(root / name))
            data = root / name / "data"
            if (data / "postmaster.pid").exists():
                runtime.run("pg_ctl", "stop", "-D", str(data), "-m", "immediate", "-w",
                            check=False)
            remove_tree(root / name)
    return left


@dataclass
class Strike:
    """What was true at the moment of the kill."""

    live: LiveProgress
    seen_dirs: set[str]
    bytes_on_disk: int = 0
    bytes_total: int = 0
    replay_lsn: str | None = None
    postmaster_pid: int | None = None
    at: float = field(default_factory=time.perf_counter)


async def strike_mid_restore(client: Client, drill_id: str, root: Path) -> Strike:
    """Wait until the drill says it is in restore, then until 5–95 % of the backup's bytes
    are in its sandbox. (The heartbeat's byte count reaches the server only every 8 s — see
    the module's notes — so the bytes are read from the sandbox itself, tightly: a warm
    restore of this backup takes about half a second.)"""
    seen: set[str] = set()
    deadline = time.monotonic() + STRIKE_TIMEOUT_S
    while True:
        live = await api.drill_status(client, drill_id)
        seen |= sandbox_dirs(root)
        stage, total = live.progress.stage, live.progress.restore_bytes_total
        if stage == Stage.RESTORE and total:
            break
        if live.progress.finished or stage in (Stage.REPLAY, Stage.CHECKS, Stage.TEARDOWN):
            pytest.fail(f"missed the restore: the drill is already at {stage}")
        if time.monotonic() > deadline:
            pytest.fail(f"drill {drill_id} never got into its restore")
        await asyncio.sleep(POLL_S)
    data = root / drill_id / "data"
    while time.monotonic() < deadline:
        on_disk = tree_bytes(data)
        if on_disk >= 0.95 * total:
            pytest.fail(f"missed the restore: {on_disk} of {total} bytes already restored")
        if on_disk > 0.05 * total:
            return Strike(live=live, seen_dirs=seen | sandbox_dirs(root), bytes_on_disk=on_disk,
                          bytes_total=total)
        await asyncio.sleep(0.005)
    pytest.fail(f"the restore of drill {drill_id} did not progress")


async def strike_mid_replay(client: Client, drill_id: str, root: Path,
                            runtime: PostgresRuntime) -> Strike:
    """Wait until the drill is in replay and its sandbox server has replayed some WAL but is
    not yet at the target (not paused). The LSN is the server's own: the heartbeat's is as
    stale as its byte count."""
    seen: set[str] = set()
    deadline = time.monotonic() + STRIKE_TIMEOUT_S
    while time.monotonic() < deadline:
        live = await api.drill_status(client, drill_id)
        seen |= sandbox_dirs(root)
        stage = live.progress.stage
        if live.progress.finished or stage in (Stage.CHECKS, Stage.TEARDOWN):
            pytest.fail(f"missed the replay: the drill is already at {stage}")
        sandbox = sandbox_record(root, drill_id) if stage == Stage.REPLAY else None
        state = await asyncio.to_thread(replay_state, sandbox, runtime) if sandbox else None
        if state is not None and state[0] is not None:
            lsn, pause_state = state
            start = parse_lsn(live.progress.replay_start_lsn)
            stop = parse_lsn(live.progress.predicted_stop_lsn)
            if pause_state != "not paused" or parse_lsn(lsn) >= stop:
                pytest.fail(f"missed the replay: the server is {pause_state} at {lsn}")
            if parse_lsn(lsn) > start:
                return Strike(live=live, seen_dirs=seen, replay_lsn=lsn,
                              postmaster_pid=sandbox_server(sandbox, runtime).pid())
        await asyncio.sleep(POLL_S)
    pytest.fail(f"drill {drill_id} never got into its replay")


async def finish(client: Client, drill_id: str, roots: list[Path], seen: set[str],
                 restart_if_gone: list[WorkerProcess] = (), timeout_s: float = 180,
                 ) -> tuple[DrillReport, set[str]]:
    """Wait for the report, noting every sandbox directory that appears meanwhile; a worker
    of `restart_if_gone` that exits is started again (and counted in its `generations`)."""
    result = asyncio.ensure_future(api.drill_result(client, drill_id))
    deadline = time.monotonic() + timeout_s
    try:
        while not result.done():
            for root in roots:
                seen |= sandbox_dirs(root)
            for worker in restart_if_gone:
                if not worker.running():
                    await worker.start()
            if time.monotonic() > deadline:
                status = await api.drill_status(client, drill_id)
                pytest.fail(f"drill {drill_id} did not finish in {timeout_s}s: {status}")
            await asyncio.wait([result], timeout=POLL_S)
    finally:
        result.cancel()
    return result.result(), seen


# --- the history -----------------------------------------------------------------------------


@dataclass
class ActivityRun:
    """One scheduled activity: its queue, its last attempt, who ran that, how it ended."""

    type: str
    task_queue: str
    attempt: int = 0
    identity: str = ""
    outcome: str = "pending"
    result: object = None
    scheduled_at: datetime | None = None
    heartbeat_timeout: timedelta | None = None
    started_at: datetime | None = None  # of the last attempt
    closed_at: datetime | None = None


RESULT_TYPES = {"provision_sandbox": Sandbox, "teardown_sandbox": TeardownResult}


async def activity_runs(handle: WorkflowHandle) -> list[ActivityRun]:
    history = await handle.fetch_history()
    runs: dict[int, ActivityRun] = {}
    for event in history.events:
        kind = event.WhichOneof("attributes")
        if kind == "activity_task_scheduled_event_attributes":
            attrs = event.activity_task_scheduled_event_attributes
            runs[event.event_id] = ActivityRun(
                attrs.activity_type.name, attrs.task_queue.name,
                scheduled_at=event.event_time.ToDatetime(),
                heartbeat_timeout=attrs.heartbeat_timeout.ToTimedelta())
        elif kind == "activity_task_started_event_attributes":
            attrs = event.activity_task_started_event_attributes
            run = runs[attrs.scheduled_event_id]
            run.attempt, run.identity = attrs.attempt, attrs.identity
            run.started_at = event.event_time.ToDatetime()
        elif kind == "activity_task_completed_event_attributes":
            attrs = event.activity_task_completed_event_attributes
            run = runs[attrs.scheduled_event_id]
            run.outcome, run.closed_at = "completed", event.event_time.ToDatetime()
            if run.type in RESULT_TYPES:
                run.result = pydantic_data_converter.payload_converter.from_payloads(
                    attrs.result.payloads, [RESULT_TYPES[run.type]])[0]
        elif kind in ("activity_task_failed_event_attributes",
                      "activity_task_timed_out_event_attributes",
                      "activity_task_canceled_event_attributes"):
            attrs = getattr(event, kind)
            run = runs[attrs.scheduled_event_id]
            run.outcome, run.closed_at = kind.split("_")[2], event.event_time.ToDatetime()
    return list(runs.values())


def only(runs: list[ActivityRun], activity_type: str) -> ActivityRun:
    matching = [run for run in runs if run.type == activity_type]
    assert len(matching) == 1, f"{activity_type} scheduled {len(matching)} times: {matching}"
    return matching[0]


def utc_now() -> datetime:
    """Naive UTC, as history event times come."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


def retry_timeline(run: ActivityRun, killed: datetime) -> str:
    """When the retry of a killed attempt started and ended, counted from the kill."""
    return (f"attempt {run.attempt} started {(run.started_at - killed).total_seconds():.1f}s "
            f"after the kill, {run.outcome} at {(run.closed_at - killed).total_seconds():.1f}s")


def provisioned(runs: list[ActivityRun]) -> Sandbox:
    """The one sandbox: provision scheduled and completed exactly once."""
    provision = only(runs, "provision_sandbox")
    assert provision.outcome == "completed"
    return provision.result


# --- reporting -------------------------------------------------------------------------------


def say(what: str, report: DrillReport, seconds: float, **facts) -> None:
    recovered = report.recovered
    print(f"\n[durability] {what}: {seconds:.1f}s; status {report.status}; recovered "
          f"{recovered.replay_lsn if recovered else None} (last commit "
          f"{recovered.last_commit_time if recovered else None}); stage seconds "
          f"{report.metrics.stage_seconds}; failed stages {report.metrics.failed_stages}; "
          + "; ".join(f"{key} {value}" for key, value in facts.items()))


def assert_nothing_left(*roots: Path) -> None:
    for root in roots:
        assert sandbox_dirs(root) == set(), f"sandboxes left under {root}"
        assert postgres_processes_under(root) == []


def assert_same_recovery(report: DrillReport, reference: DrillReport) -> None:
    assert report.status == "verified", report.errors
    assert report.recovered.replay_lsn == reference.recovered.replay_lsn
    assert report.recovered.last_commit_time == reference.recovered.last_commit_time
    assert report.recovered.stop_reason == reference.recovered.stop_reason
    assert report.recovered.matches_prediction is True
    # The same verdicts on the same data (each check's own seconds aside).
    assert [c.model_dump(exclude={"seconds"}) for c in report.checks] == \
        [c.model_dump(exclude={"seconds"}) for c in reference.checks]
    assert all(check.passed for check in report.checks)


# --- the faults ------------------------------------------------------------------------------


async def test_a_worker_killed_during_restore_is_replaced_and_the_drill_verifies(
        client, drills, worker, big_lab, reference):
    began = time.perf_counter()
    drill_id = await drills.start(big_lab.spec(), "restore", worker.task_queue)
    strike = await strike_mid_restore(client, drill_id, worker.sandbox_root)
    killed_pid, killed = worker.pid, utc_now()
    worker.kill()
    await worker.start()  # the same host id: the same host queue, the same sandbox root
    report, seen = await finish(client, drill_id, [worker.sandbox_root], strike.seen_dirs)

    assert_same_recovery(report, reference)
    assert_nothing_left(worker.sandbox_root)
    runs = await activity_runs(client.get_workflow_handle(drill_id))
    sandbox = provisioned(runs)
    assert seen == {drill_id} and sandbox.root == str(worker.sandbox_root / drill_id)
    restore = only(runs, "restore_base_backup")
    # The killed attempt never completed: the restore finished on a retry, in the new worker.
    assert restore.outcome == "completed" and restore.attempt >= 2
    assert restore.identity.startswith(f"{worker.pid}@") and worker.pid != killed_pid
    assert restore.task_queue == worker.host_queue == sandbox.task_queue
    assert report.metrics.bytes_restored == reference.metrics.bytes_restored
    assert len(log_records(worker.log, drill_id, "sandbox provisioned")) == 1
    restores = log_records(worker.log, drill_id, "restore started")
    assert [r["attempt"] for r in restores] == [1, restore.attempt]
    say("worker SIGKILLed mid-restore", report, time.perf_counter() - began, sandboxes=len(seen),
        killed_at=f"{strike.bytes_on_disk / 1e6:.0f} of {strike.bytes_total / 1e6:.0f} MB on disk",
        restore=retry_timeline(restore, killed),
        retry_resumed=f"{restores[-1]['resumed_files']} of {restores[-1]['files']} files")


async def test_a_worker_killed_during_replay_reattaches_to_the_running_sandbox_server(
        client, drills, worker, big_lab, reference, runtime):
    began = time.perf_counter()
    drill_id = await drills.start(big_lab.spec(), "replay", worker.task_queue)
    strike = await strike_mid_replay(client, drill_id, worker.sandbox_root, runtime)
    killed = utc_now()
    worker.kill()
    # The sandbox server is not the worker's child: it goes on replaying without it.
    assert strike.postmaster_pid is not None and is_alive(strike.postmaster_pid)
    await worker.start()
    sandbox = sandbox_record(worker.sandbox_root, drill_id)
    at_restart = await asyncio.to_thread(replay_state, sandbox, runtime)
    report, seen = await finish(client, drill_id, [worker.sandbox_root], strike.seen_dirs)

    assert_same_recovery(report, reference)
    assert_nothing_left(worker.sandbox_root)
    runs = await activity_runs(client.get_workflow_handle(drill_id))
    assert provisioned(runs) == sandbox
    assert seen == {drill_id} and sandbox.root == str(worker.sandbox_root / drill_id)
    restore = only(runs, "restore_base_backup")
    assert (restore.outcome, restore.attempt) == ("completed", 1)  # never restored again
    replay = only(runs, "replay_to_target")
    assert replay.outcome == "completed" and replay.attempt >= 2
    assert replay.identity.startswith(f"{worker.pid}@")
    # A dead worker is noticed in seconds, not after a 2-minute heartbeat timeout.
    assert replay.heartbeat_timeout <= timedelta(seconds=10)
    # Throughput over the whole stage, both attempts: not the retry's few seconds alone.
    metrics = report.metrics
    assert metrics.stage_seconds["replay"] >= (replay.closed_at - replay.scheduled_at
                                               ).total_seconds() - 0.5
    assert metrics.replay_mb_per_s == mb_per_s(metrics.wal_bytes_replayed,
                                               metrics.stage_seconds["replay"])
    # The retry re-attached to the very server the killed worker had started: teardown
    # stopped that postmaster, not a second one.
    assert only(runs, "teardown_sandbox").result.stopped_pid == strike.postmaster_pid
    assert len(log_records(worker.log, drill_id, "sandbox server started in recovery")) == 1
    assert len(log_records(worker.log, drill_id, "sandbox provisioned")) == 1
    say("worker SIGKILLed mid-replay", report, time.perf_counter() - began, sandboxes=len(seen),
        killed_at=f"replay LSN {strike.replay_lsn} of {strike.live.progress.predicted_stop_lsn}",
        replay=retry_timeline(replay, killed), postmaster=strike.postmaster_pid,
        server_when_new_worker_up=at_restart)


async def test_the_temporal_server_killed_mid_replay_restarts_on_its_file_and_the_drill_verifies(
        client, drills, worker, big_lab, reference, runtime, temporal):
    began = time.perf_counter()
    drill_id = await drills.start(big_lab.spec(), "server", worker.task_queue)
    strike = await strike_mid_replay(client, drill_id, worker.sandbox_root, runtime)
    killed = utc_now()
    temporal.kill()
    await temporal.start()  # the same --db-file and port
    back = utc_now()
    generation = worker.generations
    # Should the worker exit for want of its server, it is started again (and reported).
    report, seen = await finish(client, drill_id, [worker.sandbox_root], strike.seen_dirs,
                                restart_if_gone=[worker])
    restarted_worker = worker.generations - generation

    assert_same_recovery(report, reference)
    assert_nothing_left(worker.sandbox_root)
    runs = await activity_runs(client.get_workflow_handle(drill_id))
    sandbox = provisioned(runs)
    assert seen == {drill_id} and sandbox.root == str(worker.sandbox_root / drill_id)
    assert only(runs, "restore_base_backup").attempt == 1
    replay = only(runs, "replay_to_target")
    assert replay.outcome == "completed"
    assert len(log_records(worker.log, drill_id, "sandbox server started in recovery")) == 1
    say("Temporal server SIGKILLed mid-replay", report, time.perf_counter() - began,
        sandboxes=len(seen), killed_at=f"replay LSN {strike.replay_lsn}",
        server_down_s=f"{(back - killed).total_seconds():.1f}",
        replay=retry_timeline(replay, killed), worker_restarts=restarted_worker)


async def test_a_drill_cancelled_mid_replay_ends_cancelled_with_its_sandbox_gone(
        client, drills, worker, big_lab, runtime):
    began = time.perf_counter()
    drill_id = await drills.start(big_lab.spec(), "cancel", worker.task_queue)
    strike = await strike_mid_replay(client, drill_id, worker.sandbox_root, runtime)
    await api.cancel_drill(client, drill_id)
    with pytest.raises(DrillError) as cancelled:
        await api.drill_result(client, drill_id)
    cancel_s = time.perf_counter() - strike.at

    assert cancelled.value.code == ErrorCode.DRILL_CANCELLED
    assert not (worker.sandbox_root / drill_id).exists()
    assert postgres_processes_under(worker.sandbox_root) == []
    assert not is_alive(strike.postmaster_pid)
    runs = await activity_runs(client.get_workflow_handle(drill_id))
    provisioned(runs)
    teardown = only(runs, "teardown_sandbox")
    assert teardown.outcome == "completed" and teardown.result.stopped_pid == strike.postmaster_pid
    replay = only(runs, "replay_to_target")
    status = (await api.drill_status(client, drill_id)).progress
    print(f"\n[durability] cancel mid-replay: {time.perf_counter() - began:.1f}s; cancelled "
          f"{cancel_s:.1f}s after the request; replay ended {replay.outcome}; stages done "
          f"{[(t.stage.value, t.seconds) for t in status.done]}; failed "
          f"{[(t.stage.value, t.seconds) for t in status.failed]}; sandboxes 1, removed")


# --- per-host routing ------------------------------------------------------------------------


@pytest_asyncio.fixture(scope="module")
async def two_hosts(processes: Processes, temporal: TemporalServer, area: Path):
    """Two hosts, east and west, serving ONE shared task queue, each its own sandbox root."""
    queue = f"routing-{uuid.uuid4().hex[:6]}"
    hosts = [new_worker(processes, temporal, area, queue, host) for host in ("east", "west")]
    await asyncio.gather(*(host.start() for host in hosts))
    return hosts


def small_spec(scenario: Scenario, batch: int) -> DrillSpec:
    return DrillSpec.model_validate({
        "database": scenario.database, "source": scenario.source(),
        "target": {"xid": str(scenario.batches[batch].xid)},
        "checks": [{"name": "orders at target", "sql": COUNT,
                    "expect": scenario.batches[batch - 1].rows}],
    })


def assert_routed(runs: list[ActivityRun], hosts: list[WorkerProcess]) -> WorkerProcess:
    """Every sandbox step went to the queue provision returned, the sandbox lies under that
    host's root; returns that host."""
    sandbox = provisioned(runs)
    host = next(h for h in hosts if h.host_queue == sandbox.task_queue)
    assert Path(sandbox.root).parent == host.sandbox_root
    bound = [run for run in runs if run.type in HOST_QUEUE_ACTIVITIES]
    assert sorted(run.type for run in bound) == sorted(HOST_QUEUE_ACTIVITIES)
    assert {run.task_queue for run in bound} == {sandbox.task_queue}
    assert all(run.outcome == "completed" for run in bound)
    return host


async def test_sandbox_work_runs_on_the_host_that_provisioned_it(client, drills, two_hosts,
                                                                  scenario):
    began = time.perf_counter()
    batches = (1, 2, 3, 4)
    started = await asyncio.gather(*(
        drills.start(small_spec(scenario, batch), f"route-{batch}", two_hosts[0].task_queue)
        for batch in batches))
    routed = dict(zip(started, batches))
    seen: set[str] = set()
    reports = await asyncio.gather(*(finish(client, drill_id, [h.sandbox_root for h in two_hosts],
                                            seen) for drill_id in routed))
    placed = {}
    for (drill_id, batch), (report, _) in zip(routed.items(), reports):
        assert report.status == "verified", report.errors
        assert report.checks[0].observed == scenario.batches[batch - 1].rows
        runs = await activity_runs(client.get_workflow_handle(drill_id))
        host = assert_routed(runs, two_hosts)
        placed[drill_id] = host.host_id
        assert [len(log_records(h.log, drill_id, "sandbox provisioned")) for h in two_hosts
                ].count(1) == 1
        # The sandbox steps ran in that host's worker process, nowhere else.
        assert {run.identity for run in runs if run.type in HOST_QUEUE_ACTIVITIES} == {
            f"{host.pid}@{os.uname().nodename}"}
    assert seen == set(routed)
    assert_nothing_left(*(host.sandbox_root for host in two_hosts))
    print(f"\n[durability] 4 concurrent drills on 2 hosts: {time.perf_counter() - began:.1f}s; "
          f"placed {sorted(placed.values())}; every one verified, 4 sandboxes in all")


async def test_a_killed_host_restarted_with_its_id_finishes_its_drill(
        client, drills, two_hosts, big_lab, reference, runtime):
    began = time.perf_counter()
    drill_id = await drills.start(big_lab.spec(), "host", two_hosts[0].task_queue)
    live = await api.drill_status(client, drill_id)
    while live.progress.sandbox_task_queue is None:
        assert not live.progress.finished
        await asyncio.sleep(POLL_S)
        live = await api.drill_status(client, drill_id)
    host = next(h for h in two_hosts if h.host_queue == live.progress.sandbox_task_queue)
    other = next(h for h in two_hosts if h is not host)
    strike = await strike_mid_restore(client, drill_id, host.sandbox_root)
    killed = utc_now()
    host.kill()
    await host.start()
    report, seen = await finish(client, drill_id, [host.sandbox_root, other.sandbox_root],
                                strike.seen_dirs | sandbox_dirs(other.sandbox_root))

    assert_same_recovery(report, reference)
    assert_nothing_left(host.sandbox_root, other.sandbox_root)
    assert seen == {drill_id}
    runs = await activity_runs(client.get_workflow_handle(drill_id))
    assert assert_routed(runs, two_hosts) is host
    restore = only(runs, "restore_base_backup")
    assert restore.attempt >= 2 and restore.identity.startswith(f"{host.pid}@")
    restores = log_records(host.log, drill_id, "restore started")
    assert [r["attempt"] for r in restores] == [1, restore.attempt]
    assert log_records(other.log, drill_id, "restore started") == []
    assert sum(len(log_records(h.log, drill_id, "sandbox provisioned")) for h in two_hosts) == 1
    say(f"host {host.host_id} SIGKILLed mid-restore, restarted", report,
        time.perf_counter() - began, sandboxes=len(seen), restore=retry_timeline(restore, killed),
        killed_at=f"{strike.bytes_on_disk / 1e6:.0f} of {strike.bytes_total / 1e6:.0f} MB",
        retry_resumed=f"{restores[-1]['resumed_files']} of {restores[-1]['files']} files")
