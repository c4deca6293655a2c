"""WAL index at scale: an archive of 10,000 segments, already indexed.

Measures the two things a plan does on a large, known archive: bring the index up to date
(incremental: nothing new to read) and resolve a target to its stop point. 10,000 real segments
would be 160 GiB, so the files are sparse (full size, no disk used) and the store holds ten
commits per segment as pg_waldump would have recorded them; everything timed is the real code.
Baseline in the same run: listing the archive directory, the least any tool must do.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from adapters.pg_runtime import PostgresRuntime
from adapters.wal_archive import list_archive
from adapters.wal_index import WalIndex
from adapters.wal_index_store import SegmentKey, WalIndexStore
from adapters.waldump import PgWaldump
from domain.catalog import BaseBackup
from domain.lsn import DEFAULT_WAL_SEGMENT_SIZE, format_lsn, segment_name
from domain.targets import ResolvedTarget
from domain.wal_records import WalEvent

SEGMENTS = int(os.environ.get("BENCH_INDEX_SEGMENTS", "10000"))
COMMITS_PER_SEGMENT = 10
RUNS = 5
T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def _events(segno: int, name: str) -> list[WalEvent]:
    base = segno * DEFAULT_WAL_SEGMENT_SIZE + 0x1000
    return [WalEvent(kind="commit", timeline=1, start_lsn=format_lsn(base + i * 0x10000),
                     end_lsn=format_lsn(base + i * 0x10000 + 40), xid=segno * 100 + i,
                     timestamp=T0 + timedelta(seconds=segno, milliseconds=i), name=None,
                     segment=name)
            for i in range(COMMITS_PER_SEGMENT)]


def build(root: Path) -> tuple[Path, WalIndexStore]:
    archive = root / "archive"
    archive.mkdir()
    store = WalIndexStore(root / "index.sqlite")
    keys = []
    for segno in range(1, SEGMENTS + 1):
        name = segment_name(1, segno)
        path = archive / name
        with path.open("wb") as segment:
            segment.truncate(DEFAULT_WAL_SEGMENT_SIZE)  # sparse
        stat = path.stat()
        key = SegmentKey(1, name, stat.st_size, "synthetic", str(path), stat.st_mtime_ns)
        store.record_segment(key, _events(segno, name), tail_open=False)
        keys.append(key)
    store.set_archive_segments(str(archive.resolve()), keys)
    return archive, store


def timed(action) -> list[float]:
    samples = []
    for _ in range(RUNS):
        started = time.perf_counter()
        action()
        samples.append(time.perf_counter() - started)
    return samples


def main() -> int:
    root = Path(tempfile.mkdtemp(prefix="pitrdrill-bench-index-", dir="/var/tmp"))
    root.chmod(0o755)
    try:
        built = time.perf_counter()
        archive, store = build(root)
        build_s = time.perf_counter() - built
        indexer = WalIndex(PgWaldump(PostgresRuntime.from_env()), store)
        backup = BaseBackup(id="b", path="/nonexistent", timeline=1, start_lsn="0/1000028",
                            stop_lsn="0/1000100", start_time=T0, stop_time=T0, size_bytes=0,
                            has_manifest=False)
        target = ResolvedTarget(mode="time", utc=T0 + timedelta(seconds=SEGMENTS * 0.9))
        listing = timed(lambda: list_archive(archive))
        reindex = timed(lambda: indexer.index(archive))
        resolve = timed(lambda: indexer.predict(archive, target, backup))
        assert indexer.index(archive).segments_indexed == 0  # incremental: nothing re-read
        rows = {"segments": SEGMENTS, "events": SEGMENTS * COMMITS_PER_SEGMENT,
                "build_seconds": round(build_s, 1)}
        for label, samples in (("list archive (baseline)", listing),
                               ("incremental re-index", reindex),
                               ("resolve a time target", resolve)):
            rows[label] = {"median": statistics.median(samples), "min": min(samples),
                           "max": max(samples)}
        base = rows["list archive (baseline)"]["median"]
        print(f"WAL index at scale: {SEGMENTS} segments ({SEGMENTS * 16 / 1024:.0f} GiB), "
              f"{SEGMENTS * COMMITS_PER_SEGMENT} commits indexed; medians of {RUNS} runs")
        for label in ("list archive (baseline)", "incremental re-index", "resolve a time target"):
            r = rows[label]
            print(f"  {label:26s} {r['median']:.3f}s [{r['min']:.3f}-{r['max']:.3f}]  "
                  f"{r['median'] / base:.1f}x the listing")
        results = Path("bench/results")
        results.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        (results / f"{stamp}-index-scale.json").write_text(json.dumps(rows, indent=2))
        return 0
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
