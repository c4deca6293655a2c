"""How big a benchmark run is: BENCH_SCALE=small (a two-minute smoke run) or full (default)."""

from __future__ import annotations

import os
from dataclasses import dataclass

MiB = 1 << 20
GiB = 1 << 30


@dataclass(frozen=True)
class Profile:
    name: str
    base_bytes: int  # heap written before the base backup: the backup is at least this big
    wal_bytes: int  # WAL between the backup's redo point and the last recovery target
    # Recovery targets at these fractions of wal_bytes: the growth section drills to each.
    growth: tuple[float, ...]
    runs: int  # timed runs per side; the table shows their median, min and max
    concurrency: tuple[int, ...]
    budget_s: float  # sections not started by then are reported as skipped
    drill_timeout_s: float  # a drill still running by then is terminated and reported

    def __post_init__(self) -> None:
        # Each UPDATE writes about twice the heap it touches (full-page image + new tuple);
        # past ~half the heap the workload would update rows it already moved.
        if self.wal_bytes > self.base_bytes:
            raise ValueError(f"{self.name}: wal_bytes must not exceed base_bytes")
        if self.runs < 3:
            raise ValueError(f"{self.name}: medians need at least 3 runs")


PROFILES = {
    "small": Profile("small", base_bytes=64 * MiB, wal_bytes=48 * MiB, growth=(0.25, 0.5, 1.0),
                     runs=3, concurrency=(1, 2, 4), budget_s=5 * 60, drill_timeout_s=120),
    # Sizes are GiB, so "at least 1 GB" holds in either unit.
    "full": Profile("full", base_bytes=GiB + 64 * MiB, wal_bytes=GiB + 64 * MiB,
                    growth=(0.25, 0.5, 1.0), runs=5, concurrency=(1, 2, 4), budget_s=28 * 60,
                    drill_timeout_s=600),
}


def sections_from_env() -> set[str] | None:
    """BENCH_SECTIONS=1,4: only those sections (to rerun one figure); unset: all of them."""
    chosen = os.environ.get("BENCH_SECTIONS", "").strip()
    return {part.strip() for part in chosen.split(",")} if chosen else None


def from_env() -> Profile:
    name = os.environ.get("BENCH_SCALE", "full")
    try:
        return PROFILES[name]
    except KeyError:
        raise SystemExit(f"BENCH_SCALE={name!r}: use one of {', '.join(PROFILES)}") from None
