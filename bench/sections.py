"""The seven figures. Each section alternates its baseline and pitrdrill (ABAB) on the same
recovery set and target, with the page cache settled before every run, and returns rows."""

from __future__ import annotations

import asyncio
import traceback
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from adapters.pg_runtime import PostgresRuntime
from bench.baseline import BareRecovery, PgBackRestRecovery, plain_restore_command
from bench.cache import PageCache
from bench.candidate import OUTSIDE_STAGES, Pitrdrill
from bench.dataset import RecoverySet, RecoveryTarget
from bench.machine import Noise
from bench.profile import Profile
from bench.stats import Goal, Row, Sample, medians_line, size
from bench.trials import Run, Timing, concurrently, interleave, threaded
from bench.wal_index import index_once, index_unavailable, link_segments, waldump_once

WHOLE_DRILL = Goal("<= 0.80x bare", 0.80, "ratio")
COLD_DRILL = Goal("<= 1.10x bare", 1.10, "ratio")
RESTORE = Goal(">= 1.0x cp -a speed", 1.0, "ratio")
INDEX = Goal(">= 1.5x pg_waldump speed", 1 / 1.5, "ratio")
FIXED_OVERHEAD = Goal("<= 0.8 s", 0.8, "seconds")
PGBACKREST = Goal(">= 2x pgBackRest speed", 0.5, "ratio")
CONCURRENT = Goal("<= 1.1x bare at once", 1.1, "ratio")
BARE = "bare recovery: cp -a, pg_ctl, poll"
PGBACKREST_OWN = "pgbackrest restore + archive-get"


@dataclass
class Bench:
    profile: Profile
    runtime: PostgresRuntime
    cache: PageCache
    noise: Noise
    bare: BareRecovery
    pgbackrest: PgBackRestRecovery
    pitrdrill: Pitrdrill
    large: RecoverySet
    tiny: RecoverySet
    scratch: Path
    # (bare, pitrdrill) runs per target, so growth reuses section 1's runs of the full volume.
    recoveries: dict[tuple[str, str], tuple[list[Timing], list[Timing]]] = field(
        default_factory=dict)

    async def interleave(self, sides: list[Run], warm: list[Path]) -> list[list[Timing]]:
        def settle() -> None:
            self.noise.sample()
            self.cache.settle(warm)
        return await interleave(sides, self.profile.runs, settle)

    async def recoveries_to(self, data: RecoverySet,
                            target: RecoveryTarget) -> tuple[list[Timing], list[Timing]]:
        """Bare recovery vs drill to one target, measured once per target and run."""
        key = (data.name, target.lsn)
        if key not in self.recoveries:
            bare, drills = await self.interleave(
                [threaded(self.bare.recover, data, target),
                 lambda: self.pitrdrill.drill(data, target)],
                data.warm_paths(target))
            self.recoveries[key] = (bare, drills)
        return self.recoveries[key]


def _breakdown(bare: list[Timing], drills: list[Timing], each: str = "") -> dict:
    """Where the time went on each side (bare recovery phases, pitrdrill stages): median
    lines for the table, every run's parts for the JSON."""
    return {"details": [medians_line(f"bare phases ({each}median s)", bare, skip="per_run"),
                        medians_line(f"pitrdrill stages ({each}median s)", drills,
                                     skip="per_run")],
            "runs": {"baseline": [t.parts for t in bare], "pitrdrill": [t.parts for t in drills]}}


async def whole_drill(bench: Bench) -> list[Row]:
    """Bare recovery, a drill finding the WAL index built (as every drill after an archive's
    first does), and a drill on a cold archive (the index emptied, and the record of verified
    backups with it, before each: it indexes every segment and verifies the backup), in
    rotation."""
    data, target = bench.large, bench.large.last_target
    # Untimed: builds the index the first rotation's warm drill finds.
    first = await bench.pitrdrill.drill(data, target)
    bare, drills, cold = await bench.interleave(
        [threaded(bench.bare.recover, data, target),
         lambda: bench.pitrdrill.drill(data, target),
         lambda: bench.pitrdrill.cold_drill(data, target)],
        data.warm_paths(target))
    bench.recoveries[(data.name, target.lsn)] = (bare, drills)
    what = f"{size(data.backup_bytes)} + {size(target.wal_bytes)} WAL"
    row = Row("1a", f"whole drill ({what}), WAL index built", BARE, Sample.of(bare),
              Sample.of(drills), WHOLE_DRILL, **_breakdown(bare, drills))
    row.details.append(medians_line(
        f"untimed first drill of the run: {first.seconds:.2f} s", [first]))
    cold_row = Row("1b", "  same, cold archive (empty index, unverified)", BARE,
                   Sample.of(bare), Sample.of(cold), COLD_DRILL)
    cold_row.details = [medians_line("pitrdrill stages (median s)", cold)]
    cold_row.runs = {"baseline": [t.parts for t in bare], "pitrdrill": [t.parts for t in cold]}
    return [row, cold_row]


async def base_restore(bench: Bench) -> list[Row]:
    """cp -a, pitrdrill's plain restore, tar -x, pitrdrill's tar restore, cp -a, ...: one
    rotation over the same data, the tar copy made with pg_basebackup -Ft."""
    data = bench.large
    assert data.tar_backup is not None
    copied, restored, extracted, untarred = await bench.interleave(
        [threaded(bench.bare.unpack_only, data), threaded(bench.pitrdrill.restore, data),
         threaded(bench.bare.unpack_only, data, tar=True),
         threaded(bench.pitrdrill.restore, data, tar=True)],
        [data.backup, data.tar_backup])
    return [
        Row("2a", f"base restore, plain ({size(data.backup_bytes)})", "cp -a",
            Sample.of(copied), Sample.of(restored), RESTORE),
        Row("2b", "base restore, tar (same data, -Ft)", "tar -x (base.tar, pg_wal.tar)",
            Sample.of(extracted), Sample.of(untarred),
            details=["pitrdrill extracts tar backups itself (Python tarfile); its plain "
                     f"restore of the same data: {Sample.of(restored).median:.2f} s"]),
    ]


async def replay_restore_command(bench: Bench) -> list[Row]:
    """Replay alone (the copy is written back before the server starts), once with a plain
    cp restore_command and once with the one pitrdrill's source adapter gives a sandbox."""
    data, target = bench.large, bench.large.last_target
    ours = partial(bench.pitrdrill.restore_command, data)
    plain_runs, our_runs = await bench.interleave(
        [threaded(bench.bare.recover, data, target, fetch_wal, sync_before_replay=True)
         for fetch_wal in (None, ours)],
        data.warm_paths(target))
    home = Path("<sandbox>")
    shown = {name: command.replace(str(data.wal_archive), "<archive>") for name, command in
             (("pitrdrill", ours(home, 0)), ("plain", plain_restore_command(data.wal_archive)))}
    same = "the same command today" if len(set(shown.values())) == 1 else "different commands"
    return [Row(
        "3", f"replay {size(target.wal_bytes)} WAL, restore_command", "restore_command = cp",
        Sample.of(plain_runs, "replay"), Sample.of(our_runs, "replay"),
        details=[f"pitrdrill: {shown['pitrdrill']}; plain: {shown['plain']} ({same}; "
                 "meaningful once compressed archives arrive)"])]


async def wal_index(bench: Bench) -> list[Row]:
    """pg_waldump filtered as the indexer filters, pg_waldump printing everything, and the
    WalIndex with an empty store, in rotation, over the same segments."""
    segments = link_segments(bench.large, bench.scratch / "segments", bench.runtime)
    mib = sum(s.stat().st_size for s in segments) / (1 << 20)
    unavailable = index_unavailable()
    runs = [threaded(waldump_once, bench.runtime, segments),
            threaded(waldump_once, bench.runtime, segments, rmgrs=())]
    if not unavailable:
        runs.append(threaded(index_once, bench.runtime, segments, bench.scratch))
    filtered, every, *indexed = await bench.interleave(runs, segments)
    indexer = Sample.of(indexed[0]) if indexed else None
    speeds = {"pg_waldump (indexer's rmgrs)": Sample.of(filtered),
              "pg_waldump (every record)": Sample.of(every), "WalIndex": indexer}
    found = f", {indexed[0][0].parts['events']:.0f} events indexed" if indexed else ""
    detail = (f"{len(segments)} segments, {mib:.0f} MiB{found}; MiB/s: "
              + ", ".join(f"{name} {mib / sample.median:.0f}"
                          for name, sample in speeds.items() if sample))
    return [Row("4a", "WAL index, same segments", "one pg_waldump, indexer's rmgrs",
                Sample.of(filtered), indexer, INDEX, details=[detail], unavailable=unavailable),
            Row("4b", "WAL index, same segments", "one pg_waldump, every record",
                Sample.of(every), indexer, unavailable=unavailable)]


async def fixed_overhead(bench: Bench) -> list[Row]:
    data, target = bench.tiny, bench.tiny.last_target
    await bench.pitrdrill.drill(data, target)  # untimed: indexes the tiny archive
    bare, drills = await bench.recoveries_to(data, target)
    in_stages = Sample(tuple(t.seconds - t.parts[OUTSIDE_STAGES] for t in drills))
    outside = Sample.of(drills, OUTSIDE_STAGES)
    return [
        Row("5", f"tiny drill ({size(data.backup_bytes)} + {size(target.wal_bytes)} WAL)",
            BARE, Sample.of(bare), Sample.of(drills), FIXED_OVERHEAD,
            **_breakdown(bare, drills)),
        Row("5a", "  tiny drill: time in stages", "", None, in_stages),
        Row("5b", "  tiny drill: time outside stages", "", None, outside),
    ]


async def scale(bench: Bench) -> list[Row]:
    """N drills at once on the one worker vs N bare recoveries at once, to the smallest
    growth target (the whole backup is still restored N times)."""
    data, target = bench.large, bench.large.targets[0]
    rows = []
    for count in bench.profile.concurrency:
        bare, drills = await bench.interleave(
            [lambda n=count: concurrently(threaded(bench.bare.recover, data, target), n),
             lambda n=count: concurrently(lambda: bench.pitrdrill.drill(data, target), n)],
            data.warm_paths(target))
        what = f"{count} at once, {size(target.wal_bytes)} WAL"
        rows += [Row("6", f"{what}: total",
                     "1 bare recovery" if count == 1 else f"{count} bare recoveries at once",
                     Sample.of(bare), Sample.of(drills),
                     CONCURRENT if count == max(bench.profile.concurrency) else None),
                 Row("6", f"{what}: per drill", "per bare recovery",
                     Sample.of(bare, "per_run"), Sample.of(drills, "per_run"),
                     **_breakdown(bare, drills, "mean per run, "))]
    return rows


async def growth(bench: Bench) -> list[Row]:
    data = bench.large
    rows, medians = [], []
    for target in data.targets:
        reused = (data.name, target.lsn) in bench.recoveries
        bare, drills = await bench.recoveries_to(data, target)
        medians.append((target.wal_bytes, Sample.of(bare).median, Sample.of(drills).median))
        row = Row("7", f"drill to {size(target.wal_bytes)} of WAL", BARE,
                  Sample.of(bare), Sample.of(drills), **_breakdown(bare, drills))
        if reused:
            row.details = ["(the runs of section 1)"]
        rows.append(row)
    (low, bare_low, ours_low), (high, bare_high, ours_high) = medians[0], medians[-1]
    per_gib = (1 << 30) / (high - low)
    rows[-1].details.append(
        f"per extra GiB of WAL: bare {(bare_high - bare_low) * per_gib:.2f} s, "
        f"pitrdrill {(ours_high - ours_low) * per_gib:.2f} s; pitrdrill minus bare at "
        f"{size(low)}: {ours_low - bare_low:+.2f} s, "
        f"at {size(high)}: {ours_high - bare_high:+.2f} s")
    return rows


async def pgbackrest(bench: Bench) -> list[Row]:
    """pgBackRest's own restore and replay of the same cluster to the same target, beside
    bare recovery and pitrdrill from either source, in rotation."""
    data, target = bench.large, bench.large.last_target
    if data.pgbackrest is None:
        return [Row("8", "pgBackRest", "", None, None,
                    unavailable="no pgBackRest copy of the data (pgbackrest not installed)")]
    # Untimed: indexes the repository's archive and verifies its backup once.
    await bench.pitrdrill.drill(data, target, pgbackrest=True)
    bare, theirs, ours, ours_fs = await bench.interleave(
        [threaded(bench.bare.recover, data, target),
         threaded(bench.pgbackrest.recover, data, target),
         lambda: bench.pitrdrill.drill(data, target, pgbackrest=True),
         lambda: bench.pitrdrill.drill(data, target)],
        data.warm_paths(target) + data.pgbackrest_warm_paths())
    what = f"{size(data.backup_bytes)} + {size(target.wal_bytes)} WAL"
    return [
        Row("8a", f"pgBackRest restore + replay ({what})", BARE, Sample.of(bare),
            Sample.of(theirs), details=[
                "the row's ratio is pgBackRest / bare recovery; pgBackRest defaults: "
                "--process-max=1, gz, archive-get per segment",
                medians_line("pgBackRest phases (median s)", theirs)]),
        Row("8b", "  pitrdrill, pgBackRest source", PGBACKREST_OWN, Sample.of(theirs),
            Sample.of(ours), PGBACKREST,
            details=[medians_line("pitrdrill stages (median s)", ours)],
            runs={"baseline": [t.parts for t in theirs], "pitrdrill": [t.parts for t in ours]}),
        Row("8c", "  pitrdrill, filesystem source (same data)", PGBACKREST_OWN,
            Sample.of(theirs), Sample.of(ours_fs), PGBACKREST,
            details=[medians_line("pitrdrill stages (median s)", ours_fs)]),
    ]


SECTIONS = [
    ("1", "whole drill vs bare recovery", whole_drill),
    ("2", "base restore", base_restore),
    ("3", "replay restore_command", replay_restore_command),
    ("4", "WAL index", wal_index),
    ("5", "fixed overhead", fixed_overhead),
    ("6", "concurrent drills", scale),
    ("7", "growth with WAL volume", growth),
    ("8", "against pgBackRest", pgbackrest),
]


async def run_sections(bench: Bench, deadline: float, say,
                       chosen: set[str] | None = None) -> list[Row]:
    """The chosen sections (all by default), in order; one that fails or would start past
    the budget becomes a row saying so, and the rest still run."""
    loop = asyncio.get_running_loop()
    rows: list[Row] = []
    for number, title, section in SECTIONS:
        if chosen is not None and number not in chosen:
            continue
        if loop.time() > deadline:
            rows.append(Row(number, title, "", None, None,
                            unavailable="skipped: the run passed its time budget"))
            continue
        say(f"section {number}: {title}")
        try:
            rows += await section(bench)
        except Exception as exc:  # noqa: BLE001 - reported in the table, the run goes on
            traceback.print_exc()
            rows.append(Row(number, title, "", None, None,
                            unavailable=f"failed: {type(exc).__name__}: {exc}"[:400]))
    return rows
