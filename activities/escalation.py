"""Telling a human that a drill waits for them: a webhook POST and/or a command, each given
the escalation as JSON. A hook that fails is reported, not fatal: the drill still waits, and
the Temporal UI shows it waiting."""

from __future__ import annotations

import subprocess
import urllib.request

import structlog
from temporalio import activity

from activities.boundary import activity_boundary
from activities.models import EscalationNotice, NotifyResult

_HOOK_TIMEOUT_S = 15
_log = structlog.get_logger("pitrdrill.escalation")


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
    @activity_boundary
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
        _log.warning("drill escalated", cause=notice.cause.code, delivered=delivered,
                     failed=failed)
        return NotifyResult(delivered=delivered, failed=failed)
