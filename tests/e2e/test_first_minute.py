"""A new user's first minute: clone as root into a private home directory (like /root, mode
0700) and run the demo. The PostgreSQL OS user cannot enter that directory, so the lab, the
sandboxes and the WAL index live under PITRDRILL_WORK_ROOT (default /var/tmp/pitrdrill/demo);
pointed somewhere it cannot reach, the demo says exactly what to change, with no traceback."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DEMO = [sys.executable, "-m", "workers.demo"]  # this venv, run from the copy


def working_tree_files() -> list[str]:
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO, capture_output=True, check=True).stdout.decode()
    return [name for name in listed.split("\0") if name]


@pytest.fixture
def private_dir():
    """A root-owned 0700 directory, like /root."""
    home = Path(tempfile.mkdtemp(prefix="pitrdrill-home-", dir="/var/tmp"))
    home.chmod(0o700)
    yield home
    shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def private_home(private_dir: Path) -> Path:
    """The private directory holding `clone/`, a copy of the working tree (uncommitted files
    included, as a clone of this state would have them)."""
    clone = private_dir / "clone"
    for name in working_tree_files():
        source = REPO / name
        if source.is_file():
            (clone / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, clone / name)
    return private_dir


def run_demo(clone: Path, **env: str) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k != "PITRDRILL_WORK_ROOT"}
    return subprocess.run(DEMO, cwd=clone, capture_output=True, text=True, timeout=900,
                          env={**environment, **env})


@pytest.mark.skipif(os.geteuid() != 0, reason="the first minute as root, the server as postgres")
def test_the_demo_verifies_from_a_clone_in_a_private_home(private_home: Path):
    clone = private_home / "clone"
    done = run_demo(clone)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "VERIFIED" in done.stdout
    assert "Traceback" not in done.stderr
    # The copies a user reads stay in the clone; the server's work went where it can reach.
    assert f"spec written to {clone}/var/demo/drill.yaml" in done.stdout
    assert (clone / "var" / "demo" / "report.json").is_file()
    assert "lab under /var/tmp/pitrdrill/demo/lab" in done.stdout
    assert not (clone / "var" / "demo" / "lab").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="the first minute as root, the server as postgres")
def test_a_work_root_the_server_user_cannot_reach_is_refused_with_the_fix(private_home: Path):
    clone = private_home / "clone"
    work = private_home / "work"
    done = run_demo(clone, PITRDRILL_WORK_ROOT=str(work))
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert f"error PATH_UNREACHABLE: postgres cannot enter {private_home} (mode 0700, owner " \
           f"root) on the way to {work}/lab" in done.stderr
    assert f"chmod o+x {private_home}" in done.stderr and "PITRDRILL_WORK_ROOT" in done.stderr
    assert not work.exists()  # refused before anything was created


@pytest.mark.skipif(os.geteuid() != 0, reason="the server user differs from us only as root")
def test_workers_refuse_a_sandbox_root_the_server_user_cannot_reach(private_dir: Path):
    """The same check where the worker settings meet the sandbox root (here an embedded run)."""
    private_home = private_dir
    sandboxes = private_home / "sandboxes"
    spec = private_home.parent / f"{private_home.name}-spec.json"
    spec.write_text(json.dumps({
        "database": "shop", "target": {"latest": True},
        "source": {"kind": "filesystem", "base_backups": "/b", "wal_archive": "/w"}}))
    try:
        done = subprocess.run(
            [sys.executable, "-c", "from workers.cli import entry_point; entry_point()",
             "drill", "run", str(spec), "--embedded", "--json"],
            cwd=REPO, capture_output=True, text=True, timeout=300,
            env={**os.environ, "PITRDRILL_SANDBOX_ROOT": str(sandboxes)})
    finally:
        spec.unlink()
    assert done.returncode == 2, done.stdout + done.stderr
    error = json.loads(done.stdout)["errors"][0]
    assert error["code"] == "PATH_UNREACHABLE"
    assert error["message"] == (f"postgres cannot enter {private_home} (mode 0700, owner root) "
                                f"on the way to {sandboxes}")
    assert "PITRDRILL_SANDBOX_ROOT" in error["hint"] and "Traceback" not in done.stderr
    assert not sandboxes.exists()
