"""`pitrdrill drill watch`: a live view of one drill, redrawn each second with rich."""

from __future__ import annotations

import asyncio

from rich.console import Console, Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from temporalio.client import Client
from temporalio.service import RPCError

from domain.stages import LiveProgress, Stage
from workers import api


def _view(live: LiveProgress) -> Group:
    progress = live.progress
    table = Table(title=f"drill {progress.drill_id} ({progress.database})", expand=False)
    for column in ("stage", "state", "seconds"):
        table.add_column(column)
    for timing in progress.done:
        table.add_row(str(timing.stage), "[green]done", f"{timing.seconds:.2f}")
    for timing in progress.failed:
        table.add_row(str(timing.stage), "[red]failed", f"{timing.seconds:.2f}")
    if progress.stage is not None:
        table.add_row(str(progress.stage), "[yellow]running", "")
    parts: list = [table]
    done = total = None
    if progress.stage == Stage.RESTORE and live.bytes_restored is not None:
        done, total = live.bytes_restored, progress.restore_bytes_total
        parts.append(f"restored {done / 1e6:.1f} of {(total or 0) / 1e6:.1f} MB")
    elif progress.stage == Stage.REPLAY and live.replay_lsn is not None:
        left = live.bytes_to_stop or 0
        parts.append(f"replay at {live.replay_lsn}, predicted stop {progress.predicted_stop_lsn}, "
                     f"{left / 1e6:.1f} MB to go")
    if done is not None and total:
        parts.append(ProgressBar(total=total, completed=done, width=50))
    if live.mb_per_s is not None:
        eta = "-" if live.eta_seconds is None else f"{live.eta_seconds:.0f} s"
        parts.append(f"{live.mb_per_s} MB/s, ETA {eta}")
    return Group(*parts)


async def watch_until_done(client: Client, drill_id: str, every_s: float = 1.0) -> None:
    console = Console(stderr=True)
    with Live(console=console, refresh_per_second=4, transient=False) as screen:
        while True:
            try:
                live = await api.drill_status(client, drill_id)
            except RPCError:
                return  # finished and gone from the query path, or the server is away
            screen.update(_view(live))
            if live.progress.finished:
                return
            await asyncio.sleep(every_s)
