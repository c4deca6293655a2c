"""Telling a human that a drill waits for them: a webhook POST and/or a command, each given
the escalation as JSON. A hook that fails is reported, not fatal: the drill still waits, and
the Temporal UI shows it waiting."""

from __future__ import annotations

import base64
import subprocess
import urllib.parse
import urllib.request

import structlog
from temporalio import activity

from activities.boundary import activity_boundary
from activities.models import EscalationNotice, NotifyResult
from domain.redaction import redact

_HOOK_TIMEOUT_S = 15
_log = structlog.get_logger("pitrdrill.escalation")


def _post(url: str, body: bytes) -> None:
    """POST the escalation. Credentials in the URL (https://user:pw@host/...) are sent as
    HTTP Basic auth: urllib itself would take `user:pw@host` for the host name."""
    headers = {"Content-Type": "application/json"}
    parts = urllib.parse.urlsplit(url)
    if parts.username is not None:
        login = f"{urllib.parse.unquote(parts.username)}:" \
                f"{urllib.parse.unquote(parts.password or '')}"
        headers["Authorization"] = "Basic " + base64.b64encode(login.encode()).decode()
        host = parts.hostname or ""
        netloc = f"[{host}]" if ":" in host else host
        url = urllib.parse.urlunsplit(parts._replace(
            netloc=netloc + (f":{parts.port}" if parts.port else "")))
    request = urllib.request.Request(url, data=body, method="POST", headers=headers)
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
                # Into the report and the log: urllib quotes a bad URL, a failed command
                # quotes itself, and the whole hook URL may be its token.
                failed.append(redact(f"{kind}: {exc}", [notice.webhook]))
        _log.warning("drill escalated", cause=notice.cause.code, delivered=delivered,
                     failed=failed)
        return NotifyResult(delivered=delivered, failed=failed)
