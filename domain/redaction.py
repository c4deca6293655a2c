"""Secrets out of everything pitrdrill writes: connection strings and webhook URLs keep their
shape (an operator can still tell which server or hook) but lose passwords and tokens."""

from __future__ import annotations

import re

MASK = "***"

# scheme://user:password@host → scheme://user:***@host
_URL_PASSWORD = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^/\s:@]+:)[^@\s/]+(?=@)")
# ?token=...&sig=... in URLs; password=... in libpq keyword DSNs.
_SECRET_PARAM = re.compile(
    r"(?P<head>\b(?:password|passwd|pwd|token|access_token|api_key|apikey|key|secret|sig|"
    r"signature|auth)\s*=\s*)(?P<value>'(?:[^'\\]|\\.)*'|[^\s&'\";,]+)",
    re.IGNORECASE)


def redact(text: str) -> str:
    """`text` with every password and token found in a URL or DSN replaced by ***."""
    text = _URL_PASSWORD.sub(lambda m: m.group("head") + MASK, text)
    return _SECRET_PARAM.sub(lambda m: m.group("head") + MASK, text)
