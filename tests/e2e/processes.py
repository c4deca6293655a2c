"""Real processes for fault tests: a `pitrdrill server` (Temporal dev server on a SQLite file)
and `pitrdrill worker`s, each in its own session so that SIGKILL takes the whole process
group (the worker and any tool it was running, as a crashed host would) — but never a sandbox
postmaster, which pg_ctl daemonizes into a session of its own.

Every process started here is registered in a `Processes` set whose `kill_all()` the test
fixtures call on the way out, whatever happened.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from temporalio.api.workflowservice.v1 import GetSystemInfoRequest

from adapters.processes import live_processes
from workers.client import connect

REPO = Path(__file__).resolve().parents[2]
PITRDRILL = [sys.executable, "-c", "from workers.cli import entry_point; entry_point()"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass(eq=False)
class Process:
    """One child process in its own session, output to a log file."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log: Path
    popen: subprocess.Popen | None = None

    def start(self) -> Process:
        with self.log.open("ab") as log:
            log.write(f"--- start {' '.join(self.argv)}\n".encode())
            log.flush()
            self.popen = subprocess.Popen(self.argv, env=self.env, cwd=REPO,
                                          stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                          start_new_session=True)
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def kill(self) -> None:
        """SIGKILL the process group (the process leads it) and reap the leader."""
        if self.popen is None:
            return
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.popen.wait()
        # Members of the group outlive a leader's reaping for a moment: wait them out.
        deadline = time.monotonic() + 10
        while _group_members(self.popen.pid) and time.monotonic() < deadline:
            time.sleep(0.02)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def _group_members(pgid: int) -> list[int]:
    return live_processes(lambda process: process.process_group == pgid)


@dataclass
class Processes:
    """Everything started by the tests, so that a finalizer can kill it all."""

    started: list[Process] = field(default_factory=list)
    workers: list[WorkerProcess] = field(default_factory=list)

    def add(self, process: Process) -> Process:
        self.started.append(process)
        return process

    def kill_all(self) -> None:
        for process in reversed(self.started):
            process.kill()


class TemporalServer:
    """`pitrdrill server --db-file F --port P --ui-port U`: the process is the Temporal CLI."""

    def __init__(self, processes: Processes, db_file: Path, log: Path) -> None:
        self.processes = processes
        self.db_file = db_file
        self.port, self.ui_port = free_port(), free_port()
        self.log = log
        self.process: Process | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self, timeout_s: float = 60) -> None:
        argv = [*PITRDRILL, "server", "--db-file", str(self.db_file), "--port", str(self.port),
                "--ui-port", str(self.ui_port)]
        self.process = self.processes.add(
            Process("temporal", argv, dict(os.environ), self.log).start())
        deadline = time.monotonic() + timeout_s
        while True:
            if not self.process.running():
                raise RuntimeError(f"temporal server exited: {self.process.log_text()[-3000:]}")
            try:
                client = await connect(self.address)
                await client.workflow_service.get_system_info(GetSystemInfoRequest())
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()


@dataclass(eq=False)
class WorkerProcess:
    """`pitrdrill worker` for one host id: shared queue + `<queue>@<host id>`."""

    processes: Processes
    address: str
    task_queue: str
    host_id: str
    sandbox_root: Path
    index_path: Path
    log: Path
    process: Process | None = None
    generations: int = 0

    @property
    def host_queue(self) -> str:
        return f"{self.task_queue}@{self.host_id}"

    def env(self) -> dict[str, str]:
        return {**os.environ, "TEMPORAL_ADDRESS": self.address,
                "PITRDRILL_TASK_QUEUE": self.task_queue, "PITRDRILL_HOST_ID": self.host_id,
                "PITRDRILL_SANDBOX_ROOT": str(self.sandbox_root),
                "PITRDRILL_INDEX": str(self.index_path)}

    async def start(self, timeout_s: float = 60) -> WorkerProcess:
        """Start and wait until both its workers poll (it logs "worker started" then)."""
        before = self.log.stat().st_size if self.log.exists() else 0
        self.generations += 1
        if self not in self.processes.workers:
            self.processes.workers.append(self)
        self.process = self.processes.add(
            Process(f"worker {self.host_id}", [*PITRDRILL, "worker"], self.env(), self.log).start())
        deadline = time.monotonic() + timeout_s
        while True:
            text = self.log.read_bytes()[before:].decode(errors="replace")
            if '"worker started"' in text:
                return self
            if not self.process.running():
                raise RuntimeError(f"worker {self.host_id} exited "
                                   f"{self.process.popen.returncode}: {text[-3000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"worker {self.host_id} did not start: {text[-3000:]}")
            await asyncio.sleep(0.05)

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def running(self) -> bool:
        return self.process is not None and self.process.running()
