"""Secrets out of everything pitrdrill writes: connection strings and webhook URLs keep their
shape (an operator can still tell which server or hook) but lose passwords and tokens.

`redact` runs over rendered log lines (JSON) too, so no pattern here may end inside a JSON
escape or run past a string's closing quote: a redacted JSON line stays JSON.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import urlsplit

MASK = "***"

# scheme://user:password@host → scheme://user:***@host. The password runs to the last `@`
# of the authority, so an unencoded `@` in it does not leave its tail behind.
_URL_PASSWORD = re.compile(
    r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^/\s:@\"'\\]*:)(?:[^\s/?#\"'\\]|\\.)+(?=@)")
# Names whose value is a secret: anything ending in password, secret, token, api key,
# access key, signature or credential (PGPASSWORD, sslpassword, client_secret,
# refresh_token, X-Amz-Signature), and a few short names that only mean one thing.
_NAME = (r"(?:[\w.-]*?(?:password|passwd|secret|token|api[_-]?key|access[_-]?key|"
         r"private[_-]?key|signature|credentials?)|key|sig|pwd|pass|auth)")
# name=value in URL queries, libpq keyword DSNs and environment assignments.
_PARAM = re.compile(
    rf"(?P<head>\b{_NAME}\s*=\s*)(?:'(?:[^'\\]|\\.)*'|[^\s&'\";,\\]+)", re.IGNORECASE)
# "name": "value" in JSON (a rendered log record's keys).
_JSON_FIELD = re.compile(rf"(?P<head>\"{_NAME}\"\s*:\s*\")(?:[^\"\\]|\\.)*(?=\")",
                         re.IGNORECASE)
# Authorization: Bearer <token> (a header quoted in an error or a hook command).
_BEARER = re.compile(r"(?P<head>\bBearer\s+)[A-Za-z0-9._~+/-]+=*", re.IGNORECASE)

_PATTERNS = (_URL_PASSWORD, _PARAM, _JSON_FIELD, _BEARER)


def redact(text: str, secrets: Iterable[str | None] = ()) -> str:
    """`text` with every password and token found in a URL, DSN, query or header replaced by
    ***, and every whole `secrets` string (e.g. a webhook URL, whose path may be its token)
    replaced by its `masked_url`."""
    for secret in secrets:
        if secret and len(secret) > len(MASK):
            text = text.replace(secret, masked_url(secret))
            # Its password alone too: a client that misparses the URL quotes a piece of it.
            password = _password(secret)
            if password and len(password) > len(MASK):
                text = text.replace(password, MASK)
    for pattern in _PATTERNS:
        text = pattern.sub(lambda m: m.group("head") + MASK, text)
    return text


def _password(url: str) -> str | None:
    try:
        return urlsplit(url.strip()).password
    except ValueError:
        return None


def masked_url(url: str) -> str:
    """Which host a URL goes to, and nothing that could be a credential: its user, password,
    path, query and fragment become ***. Not a URL at all: ***."""
    try:
        parts = urlsplit(url.strip())
        host, port = parts.hostname, parts.port
    except ValueError:
        return MASK
    if not parts.scheme or not host:
        return MASK
    user = f"{MASK}@" if parts.username or parts.password else ""
    where = f"[{host}]" if ":" in host else host
    rest = f"/{MASK}" if parts.path.strip("/") or parts.query or parts.fragment else ""
    return f"{parts.scheme}://{user}{where}{f':{port}' if port else ''}{rest}"


def redact_report(report) -> None:
    """A report's free text redacted in place: error messages and hints, the escalation's
    cause and notify failures, a check's error. They quote exceptions, which may quote a DSN
    or a hook."""
    for error in report.errors:
        error.message, error.hint = redact(error.message), redact(error.hint)
    for check in report.checks:
        if check.error:
            check.error = redact(check.error)
    if report.escalation is not None:
        escalation = report.escalation
        escalation.cause = redact(escalation.cause)
        escalation.notify_failures = [redact(f) for f in escalation.notify_failures]
