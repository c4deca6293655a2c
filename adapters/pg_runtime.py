"""Running PostgreSQL's own binaries, as an unprivileged OS user when we are root.

PostgreSQL refuses to run as root, and our machines run as root: every server binary is run
as `os_user` (default `postgres`, see adapters.os_user), and every directory it writes is
owned by that user.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from adapters.os_user import as_server_user

DEFAULT_PG_BIN = Path("/usr/lib/postgresql/15/bin")


@dataclass(frozen=True)
class PostgresRuntime:
    bin_dir: Path = DEFAULT_PG_BIN
    os_user: str = "postgres"

    @classmethod
    def from_env(cls) -> PostgresRuntime:
        return cls(
            bin_dir=Path(os.environ.get("PITRDRILL_PG_BIN", str(DEFAULT_PG_BIN))),
            os_user=os.environ.get("PITRDRILL_PG_USER", "postgres"),
        )

    @property
    def as_root(self) -> bool:
        return os.geteuid() == 0

    def tool(self, name: str) -> str:
        return str(self.bin_dir / name)

    def run(
        self, tool: str, *args: str, check: bool = True, timeout: float | None = None,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run a PostgreSQL binary as the server's OS user and capture its output."""
        return subprocess.run(
            [self.tool(tool), *args],
            check=check,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd="/",
            **as_server_user(self.os_user, env),
        )

    def make_private_dir(self, path: Path, mode: int = 0o700) -> Path:
        """Create a directory the server user owns (PostgreSQL insists on 0700/0750)."""
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(mode)
        self.give(path)
        return path

    def owner(self) -> tuple[int, int] | None:
        """(uid, gid) that what the server reads or writes must belong to; None when we are
        not root (then everything we create is already the server user's)."""
        if not self.as_root:
            return None
        entry = pwd.getpwnam(self.os_user)
        return entry.pw_uid, entry.pw_gid

    def give(self, path: Path, recursive: bool = False) -> None:
        """Hand a path to the server user (no-op when we are not root)."""
        owner = self.owner()
        if owner is None:
            return
        if not recursive:
            os.chown(path, *owner)
            return
        for root, dirs, files in os.walk(path):
            os.chown(root, *owner)
            for name in dirs + files:
                os.chown(os.path.join(root, name), *owner, follow_symlinks=False)


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
