"""Can the PostgreSQL OS user reach a directory? Decided from facts about each directory on the
way (mode, owner, group), gathered elsewhere: no I/O here.

The server user needs search (x) permission on every directory above the ones it works in.
A new user cloning the repository as root into /root (mode 0700) gives it none: initdb then
fails with a bare "Permission denied". This says which directory stops it, and how to fix it.
POSIX classes only: the owner's bits apply to the owner, else the group's to the group, else
the others' bits (ACLs are not read).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from pathlib import PurePosixPath

from domain.errors import DrillError, ErrorCode

_CLASS_BITS = {"u": 0o100, "g": 0o010, "o": 0o001}


@dataclass(frozen=True)
class DirectoryFacts:
    """One directory on the way: its permission bits and owner. `exists` False: not there
    yet, and `mkdir -p` would create it with these facts (mode from the umask, owned by us)."""

    path: str
    mode: int
    uid: int
    gid: int
    owner: str = ""
    exists: bool = True


@dataclass(frozen=True)
class Traverser:
    """The OS user that must pass: its uid and the groups its processes carry."""

    name: str
    uid: int
    gids: frozenset[int]


@dataclass(frozen=True)
class Blocked:
    directory: DirectoryFacts
    permission_class: str  # "u", "g" or "o": whose x bit is missing


def ancestors(path: PurePosixPath) -> list[PurePosixPath]:
    """The directories above an absolute path, outermost first ("/" included, path not)."""
    if not path.is_absolute():
        raise ValueError(f"{path} is not absolute")
    return list(reversed(path.parents))


def permission_class(directory: DirectoryFacts, user: Traverser) -> str:
    if directory.uid == user.uid:
        return "u"
    if directory.gid in user.gids:
        return "g"
    return "o"


def blocking_directory(chain: Iterable[DirectoryFacts], user: Traverser) -> Blocked | None:
    """The first directory of `chain` (outermost first) that `user` cannot search, if any.
    Root passes everywhere."""
    if user.uid == 0:
        return None
    for directory in chain:
        who = permission_class(directory, user)
        if not directory.mode & _CLASS_BITS[who]:
            return Blocked(directory, who)
    return None


def unreachable_error(blocked: Blocked, user: Traverser, path: str,
                      setting: str | None = None,
                      example: str = "/var/tmp/pitrdrill") -> DrillError:
    """PATH_UNREACHABLE saying who cannot enter what on the way to where, and the exact fix."""
    directory = blocked.directory
    owner = directory.owner or str(directory.uid)
    if directory.exists:
        state = f"mode {directory.mode:04o}, owner {owner}"
        fix = f"`chmod {blocked.permission_class}+x {directory.path}` (lets {user.name} pass " \
              f"through it, not list it)"
    else:
        state = (f"not there yet: it would be created mode {directory.mode:04o}, owner {owner}, "
                 f"under the current umask")
        fix = f"`mkdir -p -m 755 {directory.path}` first, or a umask of 022"
    elsewhere = f"set {setting} to a directory {user.name} can reach" if setting \
        else f"use a directory {user.name} can reach"
    return DrillError(
        ErrorCode.PATH_UNREACHABLE,
        f"{user.name} cannot enter {directory.path} ({state}) on the way to {path}",
        f"Run {fix}, or {elsewhere}, e.g. {example}.",
    )


def check_reachable(path: str, chain: Collection[DirectoryFacts], user: Traverser,
                    setting: str | None = None, example: str = "/var/tmp/pitrdrill") -> None:
    """Raise PATH_UNREACHABLE when `user` cannot pass through every directory of `chain`."""
    blocked = blocking_directory(chain, user)
    if blocked is not None:
        raise unreachable_error(blocked, user, path, setting, example)
