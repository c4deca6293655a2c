"""A real drill ends up in the drill ledger; `pitrdrill report list|summary|show` read it back
as an auditor would (the command run as a process), and the HTML page of its report renders
in headless Chromium with every stage of its timeline on it."""

from __future__ import annotations

import json
from pathlib import Path

from adapters.ledger import open_ledger
from domain.ledger import LedgerQuery
from tests.conftest import Scenario
from tests.e2e.test_cli import pitrdrill
from tests.e2e.test_drill import COUNT, drill, new_york
from tests.e2e.test_ui import _browser


async def test_a_drill_is_in_the_ledger_and_its_page_renders_every_stage(
        temporal_env, worker, scenario: Scenario, work_root: Path):
    kept, dropped = scenario.batches[2], scenario.batches[3]
    target = kept.commit_time + (dropped.commit_time - kept.commit_time) / 2
    report = await drill(temporal_env, worker, scenario, {"time": new_york(target)},
                         [("orders at target", COUNT, kept.rows)])
    assert report.status == "verified", report.errors
    # Commits replayed from backup `first`: the three batches up to the one kept.
    assert report.metrics.transactions_replayed == report.plan.replay_commits == 3
    assert report.metrics.replay_transactions_per_s > 0
    assert report.requested_target == report.target and report.workflow_id == report.drill_id

    # The workflow appended it before returning: the ledger holds this run, exactly once.
    [record] = [r for r in open_ledger(worker.ledger).records(LedgerQuery(database="demo"))
                if r.drill_id == report.drill_id]
    assert record.run_id == report.workflow_run_id and record.status == "verified"
    assert record.report.stages == report.stages

    env = {"PITRDRILL_LEDGER": worker.ledger}
    listed = pitrdrill("report", "list", "--database", "demo", "--since", "1d", "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    [row] = [r for r in json.loads(listed.stdout) if r["drill_id"] == report.drill_id]
    assert row["status"] == "verified" and row["base_backup"] == "first"
    assert row["data_given_up_seconds"] == (target - kept.commit_time).total_seconds()

    summed = pitrdrill("report", "summary", "--database", "demo", "--json", env=env)
    assert summed.returncode == 0, summed.stderr
    [demo] = json.loads(summed.stdout)["databases"]
    assert demo["database"] == "demo" and demo["passed"] >= 1
    assert demo["median_time_to_verify_seconds"] > 0
    # This drill proved backup `first`'s consistency point .. the kept commit, at least.
    assert 0 < demo["window"]["share"] <= 1

    page = work_root / f"{report.drill_id}.html"
    shown = pitrdrill("report", "show", report.drill_id, "--html", str(page), "--json", env=env)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["workflow_run_id"] == report.workflow_run_id

    screenshot = work_root / f"{report.drill_id}.png"
    browser = _browser()
    try:
        browser.get(page.as_uri())
        text = browser.find_element("tag name", "body").text
        svg_labels = [t.text for t in browser.find_elements("css selector", "svg text")]
        assert browser.save_screenshot(str(screenshot))
    finally:
        browser.quit()
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    stages = [str(span.stage) for span in report.stages]
    assert stages[:2] == ["resolve_target", "plan"] and "replay" in stages
    for stage in stages:
        assert stage in text, stage
        assert stage in svg_labels, stage  # on the timeline itself, not only in the table
    assert "VERIFIED" in text and report.drill_id in text
