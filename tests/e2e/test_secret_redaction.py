"""A password and a token fed through a real worker and the CLI come out of nothing: not the
worker's log stream, not the CLI's stdout or stderr (text or --json), not a report, not an
exported span or metric.

The secrets: a spec's escalation webhook with a password and a token, and a worker's ledger
DSN with a password (unreachable, so every append fails and is logged). Spans and metrics are
exported with the console exporters (OTEL_*_EXPORTER=console), onto the same stderr streams.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
from pathlib import Path

from tests.conftest import Scenario
from tests.e2e.processes import PITRDRILL, REPO
from tests.e2e.test_cli import pitrdrill, write_spec
from tests.e2e.test_drill import COUNT, new_york
from tests.e2e.test_log_hygiene import json_lines, wait_for, worker_env

PASSWORD, TOKEN = "S3cretPw", "S3cretTok"
WEBHOOK = f"https://user:{PASSWORD}@127.0.0.1:9/hook?token={TOKEN}"
LEDGER = f"postgresql://ledger:{PASSWORD}@127.0.0.1:1/pitr"


def exported_spans(records: list[dict]) -> list[dict]:
    """The console exporter's spans among a stream's JSON lines."""
    return [r for r in records if "context" in r and "span_id" in r.get("context", {})]


async def test_no_output_carries_the_ledger_password_or_the_webhook_secrets(
        temporal_env, scenario: Scenario, work_root: Path):
    address = temporal_env.client.service_client.config.target_host
    env = {**worker_env(work_root, address), "PITRDRILL_LEDGER": LEDGER,
           "OTEL_TRACES_EXPORTER": "console", "OTEL_METRICS_EXPORTER": "console"}
    name = env["PITRDRILL_TASK_QUEUE"]
    worker_err, worker_out = work_root / f"{name}.err", work_root / f"{name}.out"
    escalating_id, verified_id = f"e2e-secret-esc-{name}", f"e2e-secret-ok-{name}"
    with worker_err.open("w") as errors, worker_out.open("w") as out:
        worker = subprocess.Popen([*PITRDRILL, "worker"], stdout=out, stderr=errors, cwd=REPO,
                                  env=env)
    try:
        await asyncio.to_thread(wait_for, lambda: "worker started" in worker_err.read_text(),
                                60, "the worker")
        # Rejected (a zoneless time), escalated to the webhook, which fails; nobody answers.
        escalating = write_spec(work_root / f"{name}-escalating.yaml", {
            "database": scenario.database, "source": scenario.source(),
            "target": {"time": "2026-01-15 14:30:00"}, "fallback": ["escalate"],
            "escalation": {"webhook": WEBHOOK, "timeout_seconds": 1}})
        rejected = await asyncio.to_thread(
            pitrdrill, "drill", "run", escalating, "--drill-id", escalating_id, "--json",
            env=env)
        # Verified, in text mode; then its report as JSON.
        kept, dropped = scenario.batches[2], scenario.batches[3]
        verifying = write_spec(work_root / f"{name}-verified.yaml", {
            "database": scenario.database, "source": scenario.source(),
            "target": {"time": new_york(kept.commit_time
                                        + (dropped.commit_time - kept.commit_time) / 2)},
            "checks": [{"name": "orders at target", "sql": COUNT, "expect": kept.rows}]})
        verified = await asyncio.to_thread(
            pitrdrill, "drill", "run", verifying, "--drill-id", verified_id, env=env)
        result = await asyncio.to_thread(
            pitrdrill, "drill", "result", verified_id, "--json", env=env)
    finally:
        worker.send_signal(signal.SIGTERM)  # it flushes its telemetry on the way out
        exit_code = await asyncio.to_thread(worker.wait, 60)

    outputs = {
        "worker stderr": worker_err.read_text(), "worker stdout": worker_out.read_text(),
        "escalated drill --json stdout": rejected.stdout,
        "escalated drill stderr": rejected.stderr,
        "verified drill stdout": verified.stdout, "verified drill stderr": verified.stderr,
        "drill result --json stdout": result.stdout, "drill result stderr": result.stderr,
    }
    for output, text in outputs.items():
        assert PASSWORD not in text and TOKEN not in text, f"{output}:\n{text}"

    # The secrets had every chance to leak: the hook was tried and failed, the ledger was
    # tried and failed, both drills ran to their end, their stages were exported.
    assert exit_code == 0
    assert rejected.returncode == 2, rejected.stderr
    escalated = json.loads(rejected.stdout)
    assert escalated["status"] == "rejected"
    assert escalated["escalation"]["outcome"] == "timeout"
    assert escalated["escalation"]["notified"] == []
    assert [f.split(":")[0] for f in escalated["escalation"]["notify_failures"]] == ["webhook"]
    assert verified.returncode == 0, verified.stderr
    assert f"Drill {verified_id}: VERIFIED" in verified.stdout
    assert json.loads(result.stdout)["status"] == "verified"

    records = json_lines(outputs["worker stderr"])
    events = [r.get("event") for r in records]
    assert events.count("not appended to the ledger") == 2, events
    assert "drill escalated" in events
    stages = {(s["attributes"]["pitrdrill.drill_id"], s["name"])
              for s in exported_spans(records) if s["name"].startswith("pitrdrill.stage.")}
    assert {(escalating_id, "pitrdrill.stage.resolve_target"),
            (verified_id, "pitrdrill.stage.restore"),
            (verified_id, "pitrdrill.stage.teardown")} <= stages
    assert any("resource_metrics" in r for r in records)  # the metrics, flushed on exit
    # The CLI's own spans (it started the drills), one JSON object a line among its records.
    cli_spans = exported_spans(json_lines(rejected.stderr))
    assert "StartWorkflow:DrillWorkflow" in {s["name"] for s in cli_spans}
