"""The compose stack for real: `docker-compose up` (Temporal, the demo primary, two workers),
a drill through it verified from inside a worker container, and `docker-compose down -v`
leaving no container, network or volume of the project behind.

Needs Docker, docker-compose and the images: `make test-docker` builds them first and sets
PITRDRILL_REQUIRE_DOCKER=1, so that anything missing fails the run; elsewhere (a bare `pytest`)
the test is skipped with what is missing. Each run uses a project name of its own and publishes
Temporal on free host ports, so it neither meets nor disturbs another stack or a
`pitrdrill server` on 7233.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import docker
import pytest
from docker.errors import DockerException, ImageNotFound

pytestmark = pytest.mark.docker

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
IMAGES = ("pitrdrill/temporal", "pitrdrill/primary", "pitrdrill/worker")
SERVICES = {"temporal", "primary", "worker", "worker-2"}
VOLUMES = {"temporal", "primary", "backups", "worker-1", "worker-2"}
DRILL = ["timeout", "180", "pitrdrill", "drill", "run", "/backups/drill.yaml", "--json"]


def unavailable(reason: str) -> None:
    if os.environ.get("PITRDRILL_REQUIRE_DOCKER") == "1":
        pytest.fail(reason)
    pytest.skip(f"{reason} (make test-docker builds and runs everything)")


@pytest.fixture(scope="module")
def client() -> docker.DockerClient:
    try:
        client = docker.from_env()
        client.ping()
    except DockerException as exc:
        unavailable(f"no Docker daemon: {exc}")
    if shutil.which("docker-compose") is None:
        unavailable("no docker-compose")
    missing = []
    for image in IMAGES:
        try:
            client.images.get(image)
        except ImageNotFound:
            missing.append(image)
    if missing:
        unavailable(f"images missing: {', '.join(missing)} (run: make images)")
    yield client
    client.close()


class Stack:
    """One compose project: its commands, and what of it exists, found by its label."""

    def __init__(self, client: docker.DockerClient) -> None:
        self.client = client
        self.project = f"pitrdrilltest{uuid.uuid4().hex[:10]}"
        self.label = f"com.docker.compose.project={self.project}"
        self.up = False

    def compose(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
        # Empty ports: Docker picks free ones (127.0.0.1::7233).
        env = {**os.environ, "PITRDRILL_TEMPORAL_PORT": "", "PITRDRILL_UI_PORT": ""}
        return subprocess.run(
            ["docker-compose", "--file", str(COMPOSE_FILE), "--project-name", self.project,
             *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout,
            stdin=subprocess.DEVNULL)

    def containers(self) -> list:
        return self.client.containers.list(all=True, filters={"label": self.label})

    def networks(self) -> list:
        return self.client.networks.list(filters={"label": self.label})

    def volumes(self) -> list:
        return self.client.volumes.list(filters={"label": self.label})

    def service(self, name: str):
        found = self.client.containers.list(filters={"label": [
            self.label, f"com.docker.compose.service={name}"]})
        assert len(found) == 1, f"{name}: {found}"
        return found[0]

    def logs(self) -> str:
        return self.compose("logs", "--no-color", "--tail", "40", timeout=60).stdout

    def down(self) -> subprocess.CompletedProcess:
        done = self.compose("down", "--volumes", "--remove-orphans", "--timeout", "10")
        self.up = False
        return done


@pytest.fixture
def stack(client: docker.DockerClient):
    stack = Stack(client)
    try:
        yield stack
    finally:
        if stack.up:  # the test failed before its own `down`
            stack.down()


def test_drill_through_compose_then_down_leaves_nothing(stack: Stack) -> None:
    started = time.monotonic()
    stack.up = True
    up = stack.compose("up", "--detach")
    assert up.returncode == 0, up.stderr + stack.logs()
    # `up` returns once Temporal and the primary (backup taken, incident archived, spec
    # written) are healthy and both workers were started.
    running = {c.labels["com.docker.compose.service"]: c.status for c in stack.containers()}
    assert running == dict.fromkeys(SERVICES, "running"), running
    assert {v.name.removeprefix(f"{stack.project}_") for v in stack.volumes()} == VOLUMES
    assert stack.networks(), "the project's network carries its label"
    up_seconds = time.monotonic() - started

    # The README's command, run inside a worker container: whichever worker provisions the
    # sandbox does the rest of the drill on its own host queue.
    drill_started = time.monotonic()
    code, (out, err) = stack.service("worker").exec_run(DRILL, demux=True)
    drill_seconds = time.monotonic() - drill_started
    out, err = (out or b"").decode(), (err or b"").decode()
    assert code == 0, f"exit {code}\n{out}\n{err}\n{stack.logs()}"
    report = json.loads(out)
    assert report["status"] == "verified", out
    checks = {check["name"]: check for check in report["checks"]}
    assert checks["orders at target"]["observed"] == 4100
    assert checks["month-end close kept"]["observed"] == 100
    assert checks["no voided orders"]["observed"] == 0
    assert all(check["passed"] for check in report["checks"]), report["checks"]
    # Teardown removed the sandbox on whichever host ran it.
    for name in ("worker", "worker-2"):
        code, listing = stack.service(name).exec_run(
            ["find", "/var/tmp/pitrdrill/sandboxes", "-mindepth", "1", "-maxdepth", "1"])
        assert code == 0 and listing.decode().strip() == "", (name, listing)

    down_started = time.monotonic()
    down = stack.down()
    down_seconds = time.monotonic() - down_started
    assert down.returncode == 0, down.stderr
    assert stack.containers() == []
    assert stack.networks() == []
    assert stack.volumes() == []
    print(f"\ncompose up {up_seconds:.1f}s, drill {drill_seconds:.1f}s, "
          f"down -v {down_seconds:.1f}s, total {time.monotonic() - started:.1f}s")
