"""Which processes run, read from /proc (Linux): the one place that parses /proc/<pid>/stat.

A zombie (Z) or dead (X) process has stopped running even while its pid is still listed: it
writes nothing more and holds no lock, so it counts as gone.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

_GONE = ("Z", "X")


@dataclass(frozen=True)
class ProcessState:
    pid: int
    state: str  # R, S, D, ...; Z and X are gone
    process_group: int

    @property
    def alive(self) -> bool:
        return self.state not in _GONE


def process_state(pid: int) -> ProcessState | None:
    """The process's state (None: no such process)."""
    try:
        # The command name in parentheses may hold spaces and parentheses: split after the last.
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return ProcessState(pid, fields[0], int(fields[2]))
    except (OSError, IndexError, ValueError):
        return None


def is_alive(pid: int) -> bool:
    state = process_state(pid)
    return state is not None and state.alive


def live_processes(predicate: Callable[[ProcessState], bool]) -> list[int]:
    """The pids of the running processes for which `predicate` holds."""
    states = (process_state(int(pid)) for pid in os.listdir("/proc") if pid.isdigit())
    return [s.pid for s in states if s is not None and s.alive and predicate(s)]


def command_line(pid: int) -> list[bytes]:
    """The process's arguments (none once it has exited)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return []
