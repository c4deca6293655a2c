"""Every way in, seen as a person sees it: on `pitrdrill server` (the dev server with its UI),
a drill started with `temporal workflow start --input-file` and the JSON of
docs/drill-input.json, and one started from the UI's own Start Workflow form by uploading that
JSON, both verified; then headless Chromium finds both in the UI's workflow list filtered by
`PitrDatabase = '<db>'`, Completed. Asserts on the page's text; the screenshot is for people.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path
from urllib.parse import quote, urlencode

import pytest
import pytest_asyncio

from tests.conftest import Scenario
from tests.e2e.processes import REPO, Processes, TemporalServer
from workers import api
from workers.client import connect, temporal_cli
from workers.worker import TASK_QUEUE, WorkerSettings, running_workers

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
COUNT = "select count(*) from orders"


@pytest.fixture(scope="module")
def area(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("ui")


@pytest.fixture(scope="module")
def processes():
    started = Processes()
    yield started
    started.kill_all()


@pytest_asyncio.fixture(scope="module")
async def ui_server(processes: Processes, area: Path) -> TemporalServer:
    server = TemporalServer(processes, area / "temporal.sqlite", area / "temporal.log")
    await server.start()
    return server


@pytest_asyncio.fixture(scope="module")
async def ui_worker(ui_server: TemporalServer, sandbox_root: Path, runtime):
    """This host's workers on the documented task queue, as `pitrdrill worker` runs them."""
    client = await connect(ui_server.address)
    settings = WorkerSettings(task_queue=TASK_QUEUE, sandbox_root=sandbox_root,
                              index_path=sandbox_root.parent / "wal-index.sqlite",
                              runtime=runtime, ledger=os.environ["PITRDRILL_LEDGER"])
    async with running_workers(client, settings):
        yield client


@pytest.fixture(scope="module")
def drill_input(scenario: Scenario, area: Path) -> tuple[Path, int]:
    """docs/drill-input.json with this lab's database, source, target and check: between
    the third and fourth batch, as a New York wall time like the documented one."""
    kept, dropped = scenario.batches[2], scenario.batches[3]
    middle = kept.commit_time + (dropped.commit_time - kept.commit_time) / 2
    from zoneinfo import ZoneInfo

    wall = middle.astimezone(ZoneInfo("America/New_York")).strftime("%Y-%m-%d %H:%M:%S.%f")
    document = json.loads((REPO / "docs" / "drill-input.json").read_text())
    document.update(database=scenario.database, source=scenario.source(),
                    checks=[{"name": "orders at target", "sql": COUNT, "expect": kept.rows}])
    document["target"]["time"] = f"{wall} America/New_York"
    path = area / "drill-input.json"
    path.write_text(json.dumps(document, indent=2))
    return path, kept.rows


def _browser():
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.fail("selenium is missing: `make setup` installs the dev extra")
    if not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)):
        pytest.fail("chromium/chromium-driver are missing: `make setup` installs them (apt)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(argument)
    # Driver and browser named: Selenium Manager never downloads anything.
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def _wait(browser, condition, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            found = condition()
        except Exception:  # an element re-rendered under us: look again
            found = None
        if found:
            return found
        if time.monotonic() > deadline:
            text = browser.find_element("tag name", "body").text[-2000:]
            raise AssertionError(f"timed out waiting for {what}; the page says: {text}")
        time.sleep(0.1)


def _start_from_the_form(base: str, drill_id: str, input_file: Path, screenshot: Path) -> None:
    """The UI's Start Workflow form, prefilled by its URL, the input uploaded as a file."""
    from selenium.webdriver.common.by import By

    browser = _browser()
    try:
        query = urlencode({"workflowId": drill_id, "taskQueue": TASK_QUEUE,
                           "workflowType": "DrillWorkflow"})
        browser.get(f"{base}/namespaces/default/workflows/start-workflow?{query}")
        field = lambda id_: browser.find_element(By.ID, id_).get_attribute("value")  # noqa: E731
        _wait(browser, lambda: field("workflowType") == "DrillWorkflow", 20, "the form")
        assert field("workflowId") == drill_id and field("taskQueue") == TASK_QUEUE
        assert browser.find_element(By.ID, "json/plain").is_selected()
        browser.find_element(By.CSS_SELECTOR, "input[type=file]").send_keys(str(input_file))
        _wait(browser, lambda: '"database"' in browser.find_element(By.TAG_NAME, "body").text,
              10, "the uploaded input in the Data field")
        start = [b for b in browser.find_elements(By.TAG_NAME, "button")
                 if b.text.strip() == "Start Workflow"][-1]
        assert start.is_enabled()
        start.click()
        _wait(browser, lambda: "Workflow started successfully" in browser.find_element(
            By.TAG_NAME, "body").text, 10, "the UI to say the workflow started")
        browser.save_screenshot(str(screenshot))
    finally:
        browser.quit()


def _find_in_list(base: str, database: str, drill_ids: list[str], screenshot: Path) -> str:
    from selenium.webdriver.common.by import By

    browser = _browser()
    try:
        query = quote(f"PitrDatabase = '{database}'")
        browser.get(f"{base}/namespaces/default/workflows?query={query}")
        def listed() -> str | None:
            text = browser.find_element(By.TAG_NAME, "body").text
            return text if all(_status_in_list(text, i) for i in drill_ids) else None

        text = _wait(browser, listed, 20, f"{drill_ids} in the workflow list")
        browser.save_screenshot(str(screenshot))
        return text
    finally:
        browser.quit()


def _status_in_list(text: str, drill_id: str) -> str | None:
    """A row of the list reads "Select Workflow <id>", then its status (upper-cased by CSS)."""
    lines = [line.strip() for line in text.splitlines()]
    for at, line in enumerate(lines[:-1]):
        if line == f"Select Workflow {drill_id}":
            return lines[at + 1].capitalize()
    return None


async def test_the_cli_and_the_ui_form_start_verified_drills_the_ui_lists_completed(
        ui_server: TemporalServer, ui_worker, scenario: Scenario, drill_input, tmp_path: Path):
    input_file, expected_rows = drill_input
    suffix = uuid.uuid4().hex[:4]
    by_cli, by_form = f"ui-cli-{suffix}", f"ui-form-{suffix}"
    base = f"http://127.0.0.1:{ui_server.ui_port}"

    # 1. The documented `temporal workflow start`: plain JSON in, the pydantic converter reads it.
    started = await asyncio.to_thread(subprocess.run, [
        temporal_cli(), "workflow", "start", "--type", "DrillWorkflow", "--task-queue",
        TASK_QUEUE, "--workflow-id", by_cli, "--input-file", str(input_file),
        "--address", ui_server.address], capture_output=True, text=True, timeout=60)
    assert started.returncode == 0, started.stderr
    # 2. The UI's Start Workflow form, with the same file.
    await asyncio.to_thread(_start_from_the_form, base, by_form, input_file,
                            tmp_path / "start-workflow.png")

    for drill_id in (by_cli, by_form):
        report = await api.drill_result(ui_worker, drill_id)
        assert report.status == "verified", report.errors
        assert report.checks[0].observed == expected_rows
        assert report.target.local_reading and "America/New_York" in report.target.local_reading

    text = await asyncio.to_thread(_find_in_list, base, scenario.database, [by_cli, by_form],
                                   tmp_path / "workflows.png")
    assert "DrillWorkflow" in text and f"PitrDatabase = \"{scenario.database}\"" in text
    assert [_status_in_list(text, i) for i in (by_cli, by_form)] == ["Completed", "Completed"]
    assert (tmp_path / "workflows.png").stat().st_size > 10_000
