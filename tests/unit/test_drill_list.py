"""`drill list` shows every workflow that restores a backup: drills, recoveries, bisections."""

from datetime import UTC, datetime

from workers.api import LISTED_KINDS, DrillListing
from workers.output import drill_list_text


def test_the_list_names_each_kind_of_workflow():
    rows = [DrillListing(drill_id=f"{kind}-1", kind=kind, database="shop", target_mode="time",
                         status="verified", workflow_status="COMPLETED",
                         started_at=datetime(2026, 11, 29, 9, 0, tzinfo=UTC), closed_at=None)
            for kind in ("drill", "recovery", "bisect")]
    lines = drill_list_text(rows).splitlines()
    assert lines[0].split()[:3] == ["DRILL", "KIND", "DATABASE"]
    assert [line.split()[1] for line in lines[1:]] == ["drill", "recovery", "bisect"]


def test_bisections_are_listed():
    assert LISTED_KINDS["BisectWorkflow"] == "bisect"
