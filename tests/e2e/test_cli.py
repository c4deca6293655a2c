"""The `pitrdrill` command as incident tooling calls it: JSON on stdout, meaningful exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from tests.conftest import Scenario, postgres_processes_under


def pitrdrill(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", "from workers.cli import entry_point; entry_point()", *args], capture_output=True, text=True,
        timeout=300, env={**os.environ, **(env or {})},
    )


def write_spec(path: Path, spec: dict) -> str:
    path.write_text(yaml.safe_dump(spec))
    return str(path)


def test_drill_run_embedded_json_verifies_and_exits_0(scenario: Scenario, work_root: Path):
    kept = scenario.late_batches[0]
    spec = write_spec(work_root / "cli-spec.yaml", {
        "database": scenario.database, "source": scenario.source(),
        "target": {"lsn": kept.lsn_after},
        "checks": [{"name": "rows", "sql": "select count(*) from orders", "expect": kept.rows}],
    })
    sandboxes = work_root / "cli-sandboxes"
    done = pitrdrill("drill", "run", spec, "--embedded", "--json",
                     env={"PITRDRILL_SANDBOX_ROOT": str(sandboxes),
                          "PITRDRILL_INDEX": str(work_root / "cli-index.sqlite")})
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["status"] == "verified"
    assert report["checks"][0]["observed"] == kept.rows == 900
    assert report["base_backup"]["id"] == "second"
    assert postgres_processes_under(sandboxes) == [] and not any(sandboxes.iterdir())


def test_a_bad_spec_is_rejected_with_exit_2_and_a_typed_error(work_root: Path):
    spec = write_spec(work_root / "bad-spec.yaml", {
        "database": "x", "source": {"base_backups": "/b", "wal_archive": "/w"},
        "target": {"time": "2026-01-01 00:00:00 UTC", "inclusiv": True},
    })
    done = pitrdrill("drill", "run", spec, "--json")
    assert done.returncode == 2
    body = json.loads(done.stdout)
    assert body["status"] == "rejected"
    assert body["errors"][0]["code"] == "SPEC_INVALID"
    assert "target.inclusiv" in body["errors"][0]["message"]
    assert body["errors"][0]["hint"]


def test_an_unreachable_temporal_exits_3(scenario: Scenario, work_root: Path):
    spec = write_spec(work_root / "ok-spec.yaml", {
        "database": "demo", "source": scenario.source(), "target": {"latest": True},
    })
    done = pitrdrill("drill", "run", spec, "--json", env={"TEMPORAL_ADDRESS": "127.0.0.1:9"})
    assert done.returncode == 3, done.stderr
    assert json.loads(done.stdout)["errors"][0]["code"] == "TEMPORAL_UNAVAILABLE"


def test_target_resolve_json_carries_utc_and_the_exact_settings():
    done = pitrdrill("target", "resolve", "--time", "2024-11-03 01:30:00-04:00", "--json")
    assert done.returncode == 0, done.stderr
    body = json.loads(done.stdout)
    assert body["target"]["mode"] == "time"
    assert body["target"]["utc"] == "2024-11-03T05:30:00Z"
    assert body["recovery_settings"] == {
        "recovery_target_time": "2024-11-03 05:30:00.000000+00",
        "recovery_target_inclusive": "off",
        "recovery_target_action": "pause",
        "recovery_target_timeline": "latest",
    }


def test_target_resolve_refuses_an_ambiguous_time_with_exit_2_and_both_instants():
    done = pitrdrill("target", "resolve", "--time", "2024-11-03 01:30:00 America/New_York",
                     "--json")
    assert done.returncode == 2
    error = json.loads(done.stdout)["errors"][0]
    assert error["code"] == "TARGET_AMBIGUOUS_LOCAL_TIME"
    assert "05:30:00" in error["message"] and "06:30:00" in error["message"]


def test_target_resolve_human_output_shows_the_settings_lines():
    done = pitrdrill("target", "resolve", "--lsn", "0/3000148", "--inclusive")
    assert done.returncode == 0
    assert "recovery_target_lsn = '0/3000148'" in done.stdout
    assert "recovery_target_inclusive = 'on'" in done.stdout


def test_a_failure_while_planning_is_a_typed_error_with_exit_1_never_a_traceback(work_root):
    spec = write_spec(work_root / "plan-spec.yaml", {
        "database": "x", "source": {"base_backups": str(work_root), "wal_archive": str(work_root)},
        "target": {"latest": True},
    })
    done = pitrdrill("plan", spec, "--json", env={"PITRDRILL_INDEX": "/proc/no-such/index.sqlite"})
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert json.loads(done.stdout)["errors"][0]["code"] == "PREFLIGHT_FAILED"
