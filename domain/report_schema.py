"""The report's published JSON schema (docs/report.schema.json), generated from the models:
a drill's report, or a recovery's (the same fields plus its destination, decision and
promotion). Serialization mode: it describes the JSON pitrdrill writes, computed fields
(`workflow_id`, `requested_target`) included.

    python -m domain.report_schema > docs/report.schema.json
"""

from __future__ import annotations

import json

from pydantic import TypeAdapter

from domain.recovery import RecoveryReport
from domain.report import DrillReport


def report_schema() -> dict:
    schema = TypeAdapter(DrillReport | RecoveryReport).json_schema(mode="serialization")
    return {"$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": "pitrdrill report",
            "description": "A drill's report (DrillReport) or a recovery's (RecoveryReport), "
                           "as `pitrdrill drill result --json`, `pitrdrill report show --json` "
                           "and the drill ledger hold it. See docs/report.md.",
            **schema}


def render() -> str:
    return json.dumps(report_schema(), indent=2) + "\n"


if __name__ == "__main__":
    print(render(), end="")
