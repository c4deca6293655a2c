"""Running PostgreSQL's binaries and pgBackRest as the server's OS user.

PostgreSQL refuses to run as root, and so does pgBackRest for most commands; what they create
(a restored data directory, a scratch copy of a segment) must belong to the user the sandbox
server runs as. When we are not root, they run as we do.
"""

from __future__ import annotations

import os
import pwd
from typing import Any


def host_environment() -> dict[str, str]:
    """The environment for PostgreSQL and pgBackRest processes, without the host's
    PGBACKREST_* settings: a sandbox's archive-get must read only the repository it was told."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PGBACKREST_")}


def as_server_user(os_user: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    """subprocess keyword arguments running a command as `os_user` (when we are root), with
    the host's environment plus `env`."""
    environment = {**host_environment(), **(env or {})}
    if os.geteuid() != 0:
        return {"env": environment}
    entry = pwd.getpwnam(os_user)
    environment.update(HOME=entry.pw_dir, USER=os_user)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": [],
            "env": environment}
