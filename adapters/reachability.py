"""Reading, with os.stat, what domain.reachability decides on: can the PostgreSQL OS user pass
through every directory above the ones it must work in (a lab, a sandbox root, the WAL index)?

Checked before anything is created, so a clone in /root (mode 0700) is refused with
PATH_UNREACHABLE and the exact fix instead of initdb's "Permission denied". When we are not
root the server binaries run as we do, and there is nothing to check.
"""

from __future__ import annotations

import os
import pwd
from pathlib import Path, PurePosixPath

from domain.reachability import DirectoryFacts, Traverser, ancestors, check_reachable

DEFAULT_EXAMPLE = "/var/tmp/pitrdrill"


def current_umask() -> int:
    """This process's umask, read without changing it (Linux /proc); 022 if unknown."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o022


def _owner(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def directory_chain(path: Path) -> list[DirectoryFacts]:
    """Facts about every directory above `path`, outermost first: as written and with symlinks
    resolved (both are walked to get there). Directories not there yet are described as
    `mkdir -p` would create them."""
    created = DirectoryFacts(path="", mode=0o777 & ~current_umask(), uid=os.geteuid(),
                             gid=os.getegid(), owner=_owner(os.geteuid()), exists=False)
    chain: dict[str, DirectoryFacts] = {}
    for spelling in (PurePosixPath(os.path.abspath(path)), PurePosixPath(path.resolve())):
        missing = False
        for directory in ancestors(spelling):
            key = str(directory)
            if key in chain:
                missing = not chain[key].exists
                continue
            if not missing:
                try:
                    facts = os.stat(key)
                except FileNotFoundError:
                    missing = True
                except OSError:  # a file in the way: creating under it fails loudly later
                    break
                else:
                    chain[key] = DirectoryFacts(path=key, mode=facts.st_mode & 0o7777,
                                                uid=facts.st_uid, gid=facts.st_gid,
                                                owner=_owner(facts.st_uid))
                    continue
            chain[key] = DirectoryFacts(path=key, mode=created.mode, uid=created.uid,
                                        gid=created.gid, owner=created.owner, exists=False)
    return list(chain.values())


def server_user(os_user: str) -> Traverser | None:
    """Who the server binaries run as (adapters.os_user: its primary group only, no
    supplementary groups); None when we are not root and they run as we do."""
    if os.geteuid() != 0:
        return None
    entry = pwd.getpwnam(os_user)
    return Traverser(name=os_user, uid=entry.pw_uid, gids=frozenset({entry.pw_gid}))


def ensure_reachable(path: Path, os_user: str, setting: str | None = None,
                     example: str = DEFAULT_EXAMPLE) -> None:
    """Raise PATH_UNREACHABLE (naming the directory, its mode and owner, and the fix) when
    `os_user` cannot pass through every directory above `path`. `setting` names the
    environment variable that moves `path` elsewhere."""
    user = server_user(os_user)
    if user is None:
        return
    check_reachable(str(path), directory_chain(path), user, setting, example)
