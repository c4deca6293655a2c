"""`pitrdrill worker` logs JSON on stderr, one object a line, also while Temporal is down: the
SDK core's own warnings (ANSI-coloured console lines by default) are forwarded to Python logging.

Found out: with TEMPORAL_ADDRESS on a closed port the worker does not retry, it exits 3 at once
(before the core logs anything). The core's warnings come when the server goes away under a
running worker: its polls are retried, and from the sixth retry on each one is logged. Left to
itself the core writes them to stdout, so both streams are read here, as a container runtime
collects them.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

from workers.client import dev_server_command

REPO = Path(__file__).resolve().parents[2]
WORKER = [sys.executable, "-c", "from workers.cli import entry_point; entry_point()", "worker"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def json_lines(stderr: str) -> list[dict]:
    """Every non-empty line as JSON; fails naming the first line that is not."""
    assert "\x1b[" not in stderr, stderr
    records = []
    for line in stderr.splitlines():
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                raise AssertionError(f"not a JSON line on stderr: {line!r}") from None
    return records


def worker_env(work_root: Path, address: str) -> dict:
    name = f"hygiene-{uuid.uuid4().hex[:6]}"
    return {**os.environ, "TEMPORAL_ADDRESS": address, "PITRDRILL_TASK_QUEUE": name,
            "PITRDRILL_SANDBOX_ROOT": str(work_root / name / "sandboxes"),
            "PITRDRILL_INDEX": str(work_root / name / "index.sqlite")}


def test_a_worker_on_a_closed_port_exits_3_at_once_with_json_only(work_root: Path):
    started = time.monotonic()
    done = subprocess.run([*WORKER, "--json"], capture_output=True, text=True, timeout=60,
                          cwd=REPO, env=worker_env(work_root, f"127.0.0.1:{free_port()}"))
    assert done.returncode == 3, done.stderr
    assert time.monotonic() - started < 30
    assert json.loads(done.stdout)["errors"][0]["code"] == "TEMPORAL_UNAVAILABLE"
    json_lines(done.stderr)


def test_core_warnings_while_the_server_is_down_are_json_lines_on_stderr(work_root: Path):
    port = free_port()
    server = subprocess.Popen(
        dev_server_command(work_root / f"hygiene-{port}.sqlite", port, free_port()),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    stderr_file = work_root / f"hygiene-worker-{port}.err"
    stdout_file = work_root / f"hygiene-worker-{port}.out"
    worker = None
    try:
        wait_for(lambda: socket.socket().connect_ex(("127.0.0.1", port)) == 0, 60,
                 "the dev server")
        with stderr_file.open("w") as errors, stdout_file.open("w") as out:
            worker = subprocess.Popen(WORKER, stdout=out, stderr=errors, cwd=REPO,
                                      env=worker_env(work_root, f"127.0.0.1:{port}"))
        wait_for(lambda: "worker started" in stderr_file.read_text(), 60, "the worker")
        os.killpg(server.pid, signal.SIGKILL)  # the server and anything it started
        server.wait(10)
        wait_for(lambda: "retried" in stderr_file.read_text() + stdout_file.read_text(), 90,
                 "the core to log a retried poll")
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(10)
        if worker is not None:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(30)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait(10)
    assert stdout_file.read_text() == ""
    records = json_lines(stderr_file.read_text())
    core = [r for r in records if r.get("logger") == "temporalio.core"]
    assert core, records
    assert all(r["level"] == "warning" or r["level"] == "error" for r in core)
    retried = next(r for r in core if "retried" in r["event"])
    assert retried["event"].startswith("gRPC call poll_")
    assert retried["core_target"] == "temporalio_client::retry"
    assert "Unavailable" in retried["core_fields"]["error"]
