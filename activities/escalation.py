"""Telling a human that a drill waits for them: a webhook POST and/or a command, each given
the escalation as JSON. A hook that fails is reported, not fatal: the drill still waits, and
the Temporal UI shows it waiting."""

from __future__ import annotations

import subprocess
import urllib.request

from pydantic import BaseModel
from temporalio import activity

from activities.log import drill_log
from domain.report import ErrorEntry

_HOOK_TIMEOUT_S = 15


class EscalationNotice(BaseModel):
    drill_id: str
    cause: ErrorEntry
    timeout_seconds: float
    how_to_decide: str
    webhook: str | None = None
    command: str | None = None


class NotifyResult(BaseModel):
    delivered: list[str]
    failed: list[str]


def _post(url: str, body: bytes) -> None:
    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=_HOOK_TIMEOUT_S) as response:
        response.read()


def _run(command: str, body: bytes) -> None:
    subprocess.run(command, shell=True, input=body, check=True, timeout=_HOOK_TIMEOUT_S,
                   capture_output=True)


class EscalationNotifier:
    @activity.defn(name="notify_escalation")
    def notify(self, notice: EscalationNotice) -> NotifyResult:
        body = notice.model_dump_json(exclude={"webhook", "command"}).encode()
        delivered, failed = [], []
        for kind, hook, send in (("webhook", notice.webhook, _post),
                                 ("command", notice.command, _run)):
            if not hook:
                continue
            try:
                send(hook, body)
                delivered.append(kind)
            except (OSError, subprocess.SubprocessError, ValueError) as exc:
                failed.append(f"{kind}: {exc}")
        drill_log().warning("drill escalated", cause=notice.cause.code, delivered=delivered,
                            failed=failed)
        return NotifyResult(delivered=delivered, failed=failed)


def decide_command(drill_id: str) -> str:
    return (f"pitrdrill drill decide {drill_id} proceed|abort "
            f"[--time T | --lsn L | ... to proceed to another target]")
