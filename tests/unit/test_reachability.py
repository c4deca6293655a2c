"""Which directory stops the PostgreSQL OS user on the way to a path, from (mode, owner) facts."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path, PurePosixPath

import pytest

from adapters.reachability import directory_chain, ensure_reachable
from domain.errors import DrillError, ErrorCode
from domain.reachability import (
    DirectoryFacts,
    Traverser,
    ancestors,
    blocking_directory,
    check_reachable,
)

POSTGRES = Traverser(name="postgres", uid=101, gids=frozenset({104}))
ROOT_DIR = DirectoryFacts("/", 0o755, 0, 0, "root")


def chain(*dirs: DirectoryFacts) -> list[DirectoryFacts]:
    return [ROOT_DIR, *dirs]


def test_ancestors_are_outermost_first_without_the_path_itself():
    assert ancestors(PurePosixPath("/root/clone/var/demo")) == [
        PurePosixPath(p) for p in ("/", "/root", "/root/clone", "/root/clone/var")]
    with pytest.raises(ValueError):
        ancestors(PurePosixPath("var/demo"))


def test_a_private_home_blocks_the_server_user():
    home = DirectoryFacts("/root", 0o700, 0, 0, "root")
    clone = DirectoryFacts("/root/clone", 0o755, 0, 0, "root")
    blocked = blocking_directory(chain(home, clone), POSTGRES)
    assert blocked is not None
    assert blocked.directory == home and blocked.permission_class == "o"


def test_open_directories_let_it_through():
    assert blocking_directory(chain(DirectoryFacts("/var", 0o755, 0, 0),
                                    DirectoryFacts("/var/tmp", 0o1777, 0, 0),
                                    DirectoryFacts("/var/tmp/x", 0o711, 0, 0)), POSTGRES) is None


def test_only_the_class_the_user_falls_in_counts():
    # The owner's bits apply to the owner even when the others' bits would let it pass.
    owned = DirectoryFacts("/srv/pg", 0o601, POSTGRES.uid, 0)
    assert blocking_directory(chain(owned), POSTGRES).permission_class == "u"
    # Its group's bits apply to a member of the group.
    grouped = DirectoryFacts("/srv/pg", 0o701, 0, 104)
    assert blocking_directory(chain(grouped), POSTGRES).permission_class == "g"
    assert blocking_directory(chain(DirectoryFacts("/srv/pg", 0o710, 0, 104)), POSTGRES) is None
    # A group the user is not in (supplementary groups are dropped) does not help.
    other_group = DirectoryFacts("/srv/pg", 0o710, 0, 999)
    assert blocking_directory(chain(other_group), POSTGRES).permission_class == "o"


def test_execute_is_what_counts_not_read():
    assert blocking_directory(chain(DirectoryFacts("/d", 0o744, 0, 0)), POSTGRES) is not None
    assert blocking_directory(chain(DirectoryFacts("/d", 0o711, 0, 0)), POSTGRES) is None


def test_the_first_blocking_directory_is_named():
    outer = DirectoryFacts("/a", 0o700, 0, 0, "root")
    inner = DirectoryFacts("/a/b", 0o700, 0, 0, "root")
    assert blocking_directory(chain(outer, inner), POSTGRES).directory == outer


def test_root_passes_everywhere():
    root = Traverser(name="root", uid=0, gids=frozenset({0}))
    assert blocking_directory(chain(DirectoryFacts("/root", 0o700, 0, 0)), root) is None


def test_the_error_names_user_directory_mode_owner_path_and_the_fix():
    home = DirectoryFacts("/root", 0o700, 0, 0, "root")
    with pytest.raises(DrillError) as raised:
        check_reachable("/root/clone/var/demo/lab", chain(home), POSTGRES,
                        setting="PITRDRILL_WORK_ROOT", example="/var/tmp/pitrdrill/demo")
    error = raised.value
    assert error.code == ErrorCode.PATH_UNREACHABLE and error.kind == "input"
    assert error.message == ("postgres cannot enter /root (mode 0700, owner root) on the way "
                             "to /root/clone/var/demo/lab")
    assert "`chmod o+x /root`" in error.hint
    assert "PITRDRILL_WORK_ROOT" in error.hint and "/var/tmp/pitrdrill/demo" in error.hint


def test_a_directory_still_to_be_created_under_a_strict_umask_is_named_too():
    coming = DirectoryFacts("/var/tmp/new", 0o700, 0, 0, "root", exists=False)
    with pytest.raises(DrillError) as raised:
        check_reachable("/var/tmp/new/lab", chain(coming), POSTGRES)
    assert "not there yet" in raised.value.message and "0700" in raised.value.message
    assert "mkdir -p -m 755 /var/tmp/new" in raised.value.hint


# --- the adapter: facts read with os.stat -------------------------------------------------------


@pytest.fixture
def private_dir():
    outer = Path(tempfile.mkdtemp(prefix="pitrdrill-reach-", dir="/var/tmp"))
    outer.chmod(0o700)
    yield outer
    outer.chmod(0o755)
    for path in sorted(outer.rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() and not path.is_symlink() else path.unlink()
    outer.rmdir()


def test_the_chain_covers_the_path_as_written_and_resolved(private_dir: Path):
    target = private_dir / "real"
    target.mkdir(mode=0o711)
    os.symlink(target, private_dir / "link")
    facts = {f.path: f for f in directory_chain(private_dir / "link" / "x" / "y")}
    # As written: through the link (stat follows it) ...
    assert facts[str(private_dir)].mode == 0o700 and facts[str(private_dir)].owner
    assert facts[str(private_dir / "link")].mode == 0o711
    # ... and resolved: the directories the link leads through.
    assert facts[str(target)].mode == 0o711
    # Not there yet: described as `mkdir -p` would create it.
    assert not facts[str(target / "x")].exists and not facts[str(private_dir / "link" / "x")].exists
    assert list(facts)[0] == "/"


@pytest.mark.skipif(os.geteuid() != 0, reason="the server user differs from us only as root")
def test_ensure_reachable_refuses_a_path_under_a_0700_directory(private_dir: Path):
    with pytest.raises(DrillError) as raised:
        ensure_reachable(private_dir / "clone" / "var" / "demo", "postgres",
                         setting="PITRDRILL_WORK_ROOT")
    assert raised.value.code == ErrorCode.PATH_UNREACHABLE
    assert f"cannot enter {private_dir} (mode 0700, owner root)" in raised.value.message
    private_dir.chmod(0o711)
    ensure_reachable(private_dir / "clone" / "var" / "demo", "postgres")
