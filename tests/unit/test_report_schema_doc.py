import json
from pathlib import Path

from domain.report_schema import render, report_schema

DOC = Path(__file__).resolve().parents[2] / "docs" / "report.schema.json"


def test_docs_report_schema_is_generated_from_the_models():
    assert DOC.read_text() == render(), "run: make docs"


def test_the_schema_names_what_an_auditor_looks_for():
    schema = report_schema()
    drill = schema["$defs"]["DrillReport"]["properties"]
    for field in ("target", "requested_target", "plan", "recovered", "stages", "metrics",
                  "workflow_id", "workflow_run_id"):
        assert field in drill, field
    metrics = schema["$defs"]["Metrics"]["properties"]
    for field in ("restore_mb_per_s", "replay_mb_per_s", "replay_transactions_per_s",
                  "validation_pass_rate", "time_to_verify_seconds", "data_lost_seconds"):
        assert field in metrics, field
    assert "replay_commits" in schema["$defs"]["DrillPlan"]["properties"]
    assert "destination" in schema["$defs"]["RecoveryReport"]["properties"]
    assert json.loads(DOC.read_text())["title"] == "pitrdrill report"
