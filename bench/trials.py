"""Timed runs, and the ABAB order that pairs each baseline run with a pitrdrill run."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Timing:
    seconds: float  # what the figure compares
    parts: dict[str, float] = field(default_factory=dict)  # phases or pitrdrill stages


Run = Callable[[], Awaitable[Timing]]


@contextmanager
def phase(parts: dict[str, float], name: str) -> Iterator[None]:
    """Time one phase of a run into parts[name]."""
    began = time.perf_counter()
    try:
        yield
    finally:
        parts[name] = time.perf_counter() - began


async def interleave(sides: Sequence[Run], runs: int,
                     settle: Callable[[], object]) -> list[list[Timing]]:
    """Baseline, pitrdrill, baseline, pitrdrill, ... (ABAB): slow drift on a shared machine
    (another job, the host) lands on both sides instead of on whichever side ran last. The
    page cache is settled before every run, outside its time."""
    results: list[list[Timing]] = [[] for _ in sides]
    for _ in range(runs):
        for timings, run in zip(results, sides):
            await asyncio.to_thread(settle)
            timings.append(await run())
    return results


def threaded(fn: Callable[..., Timing], *args: object, **kwargs: object) -> Run:
    """A blocking run as a Run: in a thread, so the in-process Temporal worker stays live."""
    return lambda: asyncio.to_thread(fn, *args, **kwargs)


async def concurrently(run: Run, count: int) -> Timing:
    """`count` runs at once: the total wall time; parts are the mean over the runs of each
    run's time ("per_run") and of each of its parts."""
    began = time.perf_counter()
    timings = await asyncio.gather(*(run() for _ in range(count)))
    total = time.perf_counter() - began
    names = dict.fromkeys(name for t in timings for name in t.parts)
    means = {name: sum(t.parts.get(name, 0.0) for t in timings) / count for name in names}
    return Timing(total, {"per_run": sum(t.seconds for t in timings) / count, **means})
