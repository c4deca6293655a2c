"""Telemetry of a real drill: one span per stage carrying the drill id, nested in Temporal's
own workflow and activity spans; drill metrics; a workflow that replays its history exports
nothing twice; Temporal's worker metrics on a Prometheus endpoint."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer, Worker

from domain.spec import DrillSpec
from tests.conftest import Scenario
from tests.e2e.processes import PITRDRILL, REPO, free_port
from tests.e2e.test_drill import COUNT, new_york
from tests.e2e.test_log_hygiene import json_lines, wait_for, worker_env
from tests.workflow.drills import make_spec, start
from tests.workflow.standins import StandIns
from workers import telemetry
from workers.cli.drill import run_drill
from workers.client import plugins
from workflows.drill import DrillWorkflow
from workflows.drill_telemetry import DATABASE, DRILL_ID, OUTCOME, STAGE, STAGE_SPAN


@pytest.fixture
def exported():
    """This process's spans and metrics from now on, in memory."""
    spans, reader = InMemorySpanExporter(), InMemoryMetricReader()
    telemetry.add_span_exporter(spans, batch=False)
    telemetry.add_metric_reader(reader)
    yield spans, reader
    spans.shutdown()
    telemetry.providers()[1].remove_metric_reader(reader)


def verified_spec(scenario: Scenario) -> DrillSpec:
    kept, dropped = scenario.batches[2], scenario.batches[3]
    target = kept.commit_time + (dropped.commit_time - kept.commit_time) / 2
    return DrillSpec.model_validate({
        "database": scenario.database, "source": scenario.source(),
        "target": {"time": new_york(target)},
        "checks": [{"name": "orders at target", "sql": COUNT, "expect": kept.rows}]})


def points(reader: InMemoryMetricReader) -> dict[str, list]:
    """Every data point collected, by metric name."""
    found: dict[str, list] = {}
    for resource in reader.get_metrics_data().resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                found.setdefault(metric.name, []).extend(metric.data.data_points)
    return found


async def test_a_drill_exports_one_span_per_stage_with_its_id_and_its_metrics(
        temporal_env, worker, scenario, exported):
    spans, reader = exported
    drill_id = f"e2e-telemetry-{uuid.uuid4().hex[:8]}"
    report = await run_drill(temporal_env.client, verified_spec(scenario), drill_id,
                             worker.task_queue, show_progress=False)
    telemetry.flush()
    assert report.status == "verified", report.errors
    ran = [str(stage.stage) for stage in report.stages]
    assert ran == ["resolve_target", "plan", "provision", "restore", "replay", "checks",
                   "teardown"]

    finished = spans.get_finished_spans()
    stage_spans = sorted((s for s in finished if s.name.startswith(STAGE_SPAN)),
                         key=lambda s: s.start_time)
    assert [s.name for s in stage_spans] == [STAGE_SPAN + stage for stage in ran]
    for span, stage in zip(stage_spans, report.stages):
        assert span.attributes[DRILL_ID] == drill_id
        assert span.attributes[DATABASE] == scenario.database
        assert span.attributes[STAGE] == str(stage.stage)
        assert span.attributes[OUTCOME] == stage.outcome == "done"
        assert abs((span.end_time - span.start_time) / 1e9 - stage.seconds) < 1.0

    # Temporal's own spans: the client's start, the workflow's run, each activity's run.
    def named(name: str) -> list:
        return [s for s in finished if s.name == name
                and s.attributes.get("temporalWorkflowID") == drill_id]

    [started], [run] = named("StartWorkflow:DrillWorkflow"), named("RunWorkflow:DrillWorkflow")
    for activity in ("resolve_target", "plan_drill", "provision_sandbox", "restore_base_backup",
                     "replay_to_target", "run_checks", "teardown_sandbox", "append_to_ledger"):
        assert len(named(f"RunActivity:{activity}")) == 1, activity
    trace_id = started.context.trace_id
    assert all(s.context.trace_id == trace_id for s in stage_spans + [run])
    assert run.parent.span_id == started.context.span_id
    assert all(s.parent.span_id == run.context.span_id for s in stage_spans)
    # An activity's spans nest in its stage's: StartActivity in the stage, RunActivity in it.
    by_id = {s.context.span_id: s for s in finished}
    [restore_run] = named("RunActivity:restore_base_backup")
    assert by_id[by_id[restore_run.parent.span_id].parent.span_id].name == \
        STAGE_SPAN + "restore"

    # The drill's metrics.
    mine = {DATABASE: scenario.database, "pitrdrill.workflow": "DrillWorkflow"}

    def of_this_run(name: str) -> list:
        return [p for p in points(reader)[name] if mine.items() <= dict(p.attributes).items()]

    [runs] = of_this_run("pitrdrill.runs")
    assert runs.value == 1 and runs.attributes["pitrdrill.status"] == "verified"
    durations = {p.attributes[STAGE]: p for p in of_this_run("pitrdrill.stage.duration")}
    assert sorted(durations) == sorted(ran)
    assert all(p.count == 1 for p in durations.values())
    assert durations["restore"].sum == report.metrics.stage_seconds["restore"]
    for name, value in (("pitrdrill.restore.throughput", report.metrics.restore_mb_per_s),
                        ("pitrdrill.replay.throughput", report.metrics.replay_mb_per_s),
                        ("pitrdrill.validation.pass_rate", 1.0),
                        ("pitrdrill.time_to_verify", report.metrics.time_to_verify_seconds),
                        ("pitrdrill.data_lost", report.metrics.data_lost_seconds)):
        [point] = of_this_run(name)
        assert (point.count, point.sum) == (1, value), name

    # Replaying the whole finished history (as a restarted worker would) exports nothing.
    before = len(spans.get_finished_spans())
    history = await temporal_env.client.get_workflow_handle(drill_id).fetch_history()
    replayer = Replayer(workflows=[DrillWorkflow], data_converter=pydantic_data_converter,
                        plugins=plugins())
    await replayer.replay_workflow(history)
    telemetry.flush()
    assert len(spans.get_finished_spans()) == before
    [runs] = of_this_run("pitrdrill.runs")
    assert runs.value == 1


async def test_a_drill_whose_every_task_replays_its_history_exports_each_stage_once(
        temporal_env, exported):
    """Stand-in activities on a worker without a workflow cache: each workflow task first
    replays the history so far, as a restarted worker does, so every stage but the first
    starts in one task and ends in another, after a replay of its start."""
    spans, reader = exported
    stand_ins = StandIns(f"telemetry-uncached-{uuid.uuid4().hex[:6]}")
    client = temporal_env.client
    with ThreadPoolExecutor(4) as executor:
        async with Worker(client, task_queue=stand_ins.task_queue, workflows=[DrillWorkflow],
                          activities=stand_ins.shared_activities(), activity_executor=executor,
                          max_cached_workflows=0), \
                Worker(client, task_queue=stand_ins.host_queue,
                       activities=stand_ins.host_activities(), activity_executor=executor):
            handle = await start(client, make_spec(), stand_ins.task_queue, [])
            report = await handle.result()
    telemetry.flush()
    assert report.status == "verified", report.errors
    ran = [str(stage.stage) for stage in report.stages]
    assert len(ran) == 7
    stage_spans = sorted((s for s in spans.get_finished_spans()
                          if s.attributes.get(DRILL_ID) == handle.id),
                         key=lambda s: s.start_time)
    assert [s.name for s in stage_spans] == [STAGE_SPAN + stage for stage in ran]
    for span, stage in zip(stage_spans, report.stages):
        # Started (again) at the workflow's time of its start, ended once, live.
        assert abs((span.end_time - span.start_time) / 1e9 - stage.seconds) < 1.0
    [runs] = [p for p in points(reader)["pitrdrill.runs"]
              if p.attributes[DATABASE] == "shop"]
    assert runs.value == 1


async def test_the_workers_temporal_metrics_are_served_for_prometheus(
        temporal_env, scenario, work_root: Path):
    port = free_port()
    address = temporal_env.client.service_client.config.target_host
    env = worker_env(work_root, address)
    log = work_root / f"prometheus-worker-{port}.err"
    with log.open("w") as errors:
        worker = subprocess.Popen([*PITRDRILL, "worker", "--prometheus", f"127.0.0.1:{port}"],
                                  stdout=subprocess.DEVNULL, stderr=errors, cwd=REPO, env=env)
    try:
        await asyncio.to_thread(wait_for, lambda: "worker started" in log.read_text(), 60,
                                "the worker")
        # Something to count: a drill the worker rejects at its first stage.
        spec = DrillSpec.model_validate({"database": scenario.database,
                                         "source": scenario.source(),
                                         "target": {"time": "2026-01-15 14:30:00"}})
        report = await run_drill(temporal_env.client, spec, f"e2e-prom-{uuid.uuid4().hex[:6]}",
                                 env["PITRDRILL_TASK_QUEUE"], show_progress=False)
        assert report.status == "rejected"

        def scraped() -> str:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as page:
                return page.read().decode()

        queue = f'task_queue="{env["PITRDRILL_TASK_QUEUE"]}"'
        await asyncio.to_thread(wait_for, lambda: any(
            line.startswith("temporal_workflow_completed") and queue in line
            for line in scraped().splitlines()), 30, "the completed workflow's metric")
        body = scraped()
    finally:
        worker.send_signal(signal.SIGTERM)
        exit_code = await asyncio.to_thread(worker.wait, 30)
    assert exit_code == 0
    lines = [line for line in body.splitlines() if line.startswith("temporal_")]
    assert any(line.startswith("temporal_activity_execution_latency") and queue in line
               for line in lines), lines
    json_lines(log.read_text())
