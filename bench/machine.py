"""What the numbers were measured on, and how busy the machine was meanwhile.

Other engineers run test suites on this machine: each settle samples the load average and
counts foreign pytest processes, so a disturbed run says so in its own results.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from adapters.pg_runtime import PostgresRuntime


def _mem_total_gib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) / (1 << 20)
    return 0.0


def _foreign_pytests() -> int:
    mine = os.getpid()
    count = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        count += int(pid) != mine and b"pytest" in cmdline
    return count


def free_bytes(path: Path) -> int:
    return shutil.disk_usage(path).free


def _tree() -> str:
    """The commit measured, and whether the working tree differed from it (read-only git:
    --no-optional-locks keeps status from rewriting the index under other engineers)."""
    def git(*args: str) -> str:
        done = subprocess.run(["git", "--no-optional-locks", *args], capture_output=True,
                              text=True, cwd=Path(__file__).resolve().parent)
        return done.stdout.strip() if done.returncode == 0 else "?"
    changed = [line for line in git("status", "--porcelain").splitlines()
               if not line[3:].startswith("bench/")]
    head = git("rev-parse", "--short", "HEAD")
    return f"{head} + {len(changed)} uncommitted paths outside bench/"


def describe(runtime: PostgresRuntime) -> dict:
    version = runtime.run("pg_ctl", "--version").stdout.strip()
    return {"cpus": os.cpu_count(), "mem_gib": round(_mem_total_gib(), 1),
            "kernel": platform.release(), "postgres": version, "tree": _tree()}


@dataclass
class Noise:
    loads: list[float] = field(default_factory=list)
    pytest_seen: int = 0  # settles that saw another engineer's pytest running
    samples: int = 0

    def sample(self) -> None:
        self.loads.append(os.getloadavg()[0])
        self.pytest_seen += _foreign_pytests() > 0
        self.samples += 1

    def summary(self) -> str:
        if not self.loads:
            return "no samples"
        return (f"1-min load average {min(self.loads):.2f}-{max(self.loads):.2f} "
                f"(this run alone keeps it near 1-2 on {os.cpu_count()} cores); "
                f"other pytest processes running at {self.pytest_seen} of {self.samples} runs")

    def as_json(self) -> dict:
        return {"load_1min": self.loads, "pytest_seen": self.pytest_seen,
                "samples": self.samples}
