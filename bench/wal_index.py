"""WAL index throughput: pitrdrill's WalIndex against one plain pg_waldump process.

Both read the same directory: hard links to every archived segment from the base backup's
redo point to the end of the archive (what recovery may read). The baseline that the target
is judged on is one pg_waldump over that whole range with the resource-manager filter the
indexer uses (Transaction and XLOG: commits, aborts, restore points), so both decode every
record and print the same ones; one unfiltered pg_waldump (every record printed) is shown
beside it.
Each indexer run gets a fresh store: a warm one skips every segment it has seen.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import time
import uuid
from pathlib import Path

from adapters.pg_runtime import PostgresRuntime
from bench.dataset import RecoverySet
from bench.trials import Timing
from domain.lsn import (
    DEFAULT_WAL_SEGMENT_SIZE,
    format_lsn,
    is_segment_name,
    parse_lsn,
    parse_segment_name,
    segment_number,
)

EVENT_RMGRS = ("--rmgr=Transaction", "--rmgr=XLOG")


def link_segments(data: RecoverySet, directory: Path, runtime: PostgresRuntime) -> list[Path]:
    runtime.make_private_dir(directory, 0o755)
    first = segment_number(parse_lsn(data.start_lsn))
    names = sorted(n for n in os.listdir(data.wal_archive)
                   if is_segment_name(n) and parse_segment_name(n)[1] >= first)
    for name in names:
        os.link(data.wal_archive / name, directory / name)
    return [directory / name for name in names]


def index_unavailable() -> str | None:
    """Why the WalIndex cannot be measured in this tree, or None when it can."""
    try:
        importlib.import_module("adapters.wal_index_store").WalIndexStore
        importlib.import_module("adapters.waldump").PgWaldump
        importlib.import_module("adapters.wal_index").WalIndex
    except (ImportError, AttributeError) as exc:
        return f"not yet available: adapters.wal_index.WalIndex does not import ({exc})"
    return None


def waldump_once(runtime: PostgresRuntime, segments: list[Path],
                 rmgrs: tuple[str, ...] = EVENT_RMGRS) -> Timing:
    """One pg_waldump process over all the segments, its output to /dev/null (as
    `pg_waldump ... > /dev/null`; no Python reads it)."""
    first = parse_segment_name(segments[0].name)[1]
    last = parse_segment_name(segments[-1].name)[1]
    command = [runtime.tool("pg_waldump"), f"--path={segments[0].parent}", "--timeline=1",
               *rmgrs, f"--start={format_lsn(first * DEFAULT_WAL_SEGMENT_SIZE)}",
               f"--end={format_lsn((last + 1) * DEFAULT_WAL_SEGMENT_SIZE)}"]
    began = time.perf_counter()
    done = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - began
    if done.returncode != 0:
        raise RuntimeError(f"pg_waldump failed: {done.stderr.strip()[-600:]}")
    return Timing(seconds)


def index_once(runtime: PostgresRuntime, segments: list[Path], scratch: Path) -> Timing:
    from adapters.wal_index import WalIndex
    from adapters.wal_index_store import WalIndexStore
    from adapters.waldump import PgWaldump

    store = WalIndexStore(scratch / f"index-{uuid.uuid4().hex[:8]}.sqlite")
    began = time.perf_counter()
    result = WalIndex(PgWaldump(runtime, scratch_root=scratch), store).index(segments[0].parent)
    seconds = time.perf_counter() - began
    if result.segments_indexed != len(segments):
        raise RuntimeError(f"indexed {result.segments_indexed} of {len(segments)} segments")
    return Timing(seconds, {"events": float(result.events_indexed)})
