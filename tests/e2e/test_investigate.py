"""`pitrdrill investigate` on the seed's incident, staged on a real lab: a legitimate commit,
115 ms later a runaway batch job of 47 transactions. The investigation must find the job, name
the commit before it, and recommend a target that a real drill then proves exact."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import yaml

from adapters.pg_runtime import PostgresRuntime
from domain.lsn import parse_lsn
from domain.spec import DrillSpec
from domain.timeparse import parse_target_time
from lab.lab import Lab, Marker
from lab.workload import OrdersWorkload
from tests.e2e.test_cli import pitrdrill
from tests.e2e.test_drill import COUNT, VOID, new_york
from workers.cli.drill import run_drill
from workers.cli.investigate import display_zone

NEW_YORK = ZoneInfo("America/New_York")
DATABASE = "shop"
AUDIT_SCHEMA = "CREATE TABLE audit_log (id bigserial PRIMARY KEY, note text NOT NULL)"
JOB_TRANSACTIONS = 47
# The job's first commit lands this long after the legitimate one: the sleep plus one
# connection and UPDATE, which take about 7 ms on the lab: 115 ms, as in the seed.
_TRIGGER_SLEEP_S = 0.108
_JOB_SLEEP_S = 0.035


@dataclass
class Incident:
    lab: Lab
    legitimate: Marker
    job: list[Marker]
    orders: list[Marker]  # every commit that wrote to orders, in commit order
    audits: list[Marker]  # commits that wrote only to audit_log

    def investigate(self, index: Path, *args: str) -> subprocess.CompletedProcess:
        return pitrdrill("investigate", "--wal-archive", str(self.lab.wal_archive), *args,
                         env={"PITRDRILL_INDEX": str(index)})


def audit(lab: Lab, note: str) -> Marker:
    return lab.commit(DATABASE, [f"INSERT INTO audit_log (note) VALUES ('{note}')"], note, 0)


@pytest.fixture(scope="module")
def incident(work_root: Path, runtime: PostgresRuntime) -> Incident:
    with Lab(work_root / "investigate-lab", runtime) as lab:
        workload = OrdersWorkload(lab, DATABASE)
        workload.create()
        lab.sql(AUDIT_SCHEMA, DATABASE)
        # Enough orders that every one of the job's 47 x 20 updates hits a row.
        orders = workload.insert_batches(3, 300)
        lab.base_backup("nightly")
        time.sleep(1.1)  # backup labels carry whole seconds: keep clear of the last one
        audits = [audit(lab, "login")]
        time.sleep(0.5)
        legitimate = workload.insert_batch(100, "month-end close")
        time.sleep(_TRIGGER_SLEEP_S)
        job = []
        for _ in range(JOB_TRANSACTIONS):
            job += workload.damage(1, 20)
            time.sleep(_JOB_SLEEP_S)
        time.sleep(1.5)
        orders += [legitimate, *job, workload.insert_batch(100)]
        audits.append(audit(lab, "logout"))
        lab.archive_all()
        yield Incident(lab, legitimate, job, orders, audits)


@pytest.fixture(scope="module")
def index(work_root: Path) -> Path:
    return work_root / "investigate-index.sqlite"


def around_first_bad_commit(incident: Incident) -> list[str]:
    return ["--around", new_york(incident.job[0].commit_time), "--window", "5m"]


def investigated(done: subprocess.CompletedProcess) -> dict:
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


async def test_it_finds_the_job_and_its_target_keeps_the_legitimate_commit_and_none_of_the_job(
        incident: Incident, index: Path, temporal_env, worker):
    legitimate, first_bad = incident.legitimate, incident.job[0]
    body = investigated(incident.investigate(index, *around_first_bad_commit(incident), "--json"))
    found = body["investigation"]
    # The lab's archive starts with initdb's own hundreds of commits, a burst of its own.
    *initdb, burst = found["bursts"]
    assert all(b["last"]["xid"] < incident.orders[0].xid for b in initdb)
    assert burst["commits"] == JOB_TRANSACTIONS
    assert burst["xids"] == [m.xid for m in incident.job]
    assert burst["previous"]["xid"] == legitimate.xid
    assert burst["gap_before_seconds"] == (
        first_bad.commit_time - legitimate.commit_time).total_seconds()
    recommended = found["recommendations"]["recommended"]
    assert recommended == found["recommendations"]["before_burst"]
    assert (recommended["last_kept"]["xid"], recommended["first_dropped"]["xid"]) == (
        legitimate.xid, first_bad.xid)
    assert (recommended["transactions_given_up"], recommended["seconds_given_up"]) == (0, 0.0)
    target = recommended["target"]
    assert target["inclusive"] is False and target["time"] is None
    assert parse_lsn(legitimate.lsn_after) <= parse_lsn(target["lsn"]) < parse_lsn(
        first_bad.lsn_after)

    spec = DrillSpec.model_validate({
        "database": DATABASE,
        "source": {"base_backups": str(incident.lab.base_backups),
                   "wal_archive": str(incident.lab.wal_archive)},
        "target": {k: v for k, v in target.items() if v is not None},
        "checks": [{"name": "orders at target", "sql": COUNT, "expect": legitimate.rows},
                   {"name": "no voided orders", "sql": VOID, "expect": 0}],
    })
    report = await run_drill(temporal_env.client, spec, f"e2e-investigate-{uuid.uuid4().hex[:8]}",
                             worker.task_queue, show_progress=False)
    assert report.status == "verified", report.errors
    assert [c.observed for c in report.checks] == [1000, 0] and legitimate.rows == 1000
    assert report.recovered.last_commit_time == legitimate.commit_time
    assert report.recovered.stop_reason == (
        f'recovery stopping before WAL location (LSN) "{target["lsn"]}"')


def test_excluding_the_first_bad_xid_from_a_spec_gives_the_same_lsn_and_an_exact_time(
        incident: Incident, index: Path, work_root: Path):
    first_bad = incident.job[0]
    spec = work_root / "investigate-spec.yaml"
    spec.write_text(yaml.safe_dump({
        "database": DATABASE, "target": {"latest": True},
        "source": {"base_backups": str(incident.lab.base_backups),
                   "wal_archive": str(incident.lab.wal_archive)}}))
    body = investigated(pitrdrill("investigate", str(spec), "--exclude-xid", str(first_bad.xid),
                                  "--json", env={"PITRDRILL_INDEX": str(index)}))
    exclusion = body["investigation"]["exclusion"]
    recommended = body["investigation"]["recommendations"]["recommended"]
    assert exclusion["lsn_target"] == recommended["target"]
    assert exclusion["time_target"]["time"] == first_bad.commit_time.astimezone(
        timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f+00")
    assert exclusion["time_target_exact"] is True
    assert exclusion["last_kept"]["xid"] == incident.legitimate.xid
    assert body["investigation"]["around"] == first_bad.commit_time.astimezone(
        timezone.utc).isoformat().replace("+00:00", "Z")


def test_the_table_shows_new_york_and_utc_and_the_plots_are_drawn(
        incident: Incident, index: Path, work_root: Path):
    png, svg = work_root / "investigate.png", work_root / "investigate.svg"
    done = incident.investigate(index, *around_first_bad_commit(incident), "--plot", str(png))
    assert done.returncode == 0, done.stderr
    first_bad = incident.job[0]
    local = first_bad.commit_time.astimezone(NEW_YORK).strftime("%Y-%m-%d %H:%M:%S.%f %Z")
    [row] = [line for line in done.stdout.splitlines() if f" {first_bad.xid} " in line
             and line.startswith(f"  {local}")]
    assert row.endswith(", first dropped") and "burst" in row
    assert f": {JOB_TRANSACTIONS} commits in" in done.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
    body = investigated(incident.investigate(index, *around_first_bad_commit(incident),
                                             "--plot", str(svg), "--json"))
    assert body["plot"] == str(svg)
    assert b"<svg" in svg.read_bytes()[:1000] and svg.stat().st_size > 20_000


def test_a_relation_filter_keeps_only_the_transactions_that_wrote_orders(
        incident: Incident, index: Path):
    dsn = incident.lab.primary.conninfo(DATABASE)
    by_name = investigated(incident.investigate(
        index, *around_first_bad_commit(incident), "--relation", "public.orders", "--dsn", dsn,
        "--json"))
    xids = [row["xid"] for row in by_name["investigation"]["commits"]]
    assert xids == [m.xid for m in incident.orders]
    assert not {m.xid for m in incident.audits} & set(xids)
    [burst] = by_name["investigation"]["bursts"]
    assert burst["xids"] == [m.xid for m in incident.job]

    [(path,)] = incident.lab.sql("SELECT pg_relation_filepath('orders')", DATABASE)
    [(tablespace, database, filenode)] = incident.lab.sql(
        "SELECT d.dattablespace, d.oid, pg_relation_filenode('orders') FROM pg_database d "
        "WHERE d.datname = current_database()", DATABASE)
    locator = f"{tablespace}/{database}/{filenode}"
    assert path == f"base/{database}/{filenode}"
    assert by_name["relation"]["locator"] == locator
    by_locator = investigated(incident.investigate(
        index, *around_first_bad_commit(incident), "--relation", locator, "--json"))
    assert [row["xid"] for row in by_locator["investigation"]["commits"]] == xids


def test_a_relation_name_without_a_dsn_is_refused(incident: Incident, index: Path):
    done = incident.investigate(index, *around_first_bad_commit(incident),
                                "--relation", "public.orders", "--json")
    assert done.returncode == 2
    [error] = json.loads(done.stdout)["errors"]
    assert error["code"] == "SPEC_INVALID" and "--dsn" in error["hint"]


def test_an_archive_must_come_from_a_spec_or_the_option():
    done = pitrdrill("investigate", "--around", "2024-01-15 14:30:00Z", "--json")
    assert done.returncode == 2
    assert json.loads(done.stdout)["errors"][0]["code"] == "SPEC_INVALID"


@pytest.mark.parametrize(("around", "code"), [
    ("2024-01-15 14:30:00", "TARGET_NAIVE_TIME"),
    ("2024-11-03 01:30:00 America/New_York", "TARGET_AMBIGUOUS_LOCAL_TIME"),
    ("2024-03-10 02:30:00 America/New_York", "TARGET_NONEXISTENT_LOCAL_TIME"),
])
def test_around_is_refused_exactly_as_target_times_are(work_root: Path, around: str, code: str):
    done = pitrdrill("investigate", "--wal-archive", str(work_root), "--around", around, "--json")
    assert done.returncode == 2
    assert json.loads(done.stdout)["errors"][0]["code"] == code


def test_the_table_reads_times_in_the_zone_or_offset_they_were_typed_in():
    assert display_zone(parse_target_time("2024-01-15 14:30:00 america/new_york")).key == (
        "America/New_York")
    assert display_zone(parse_target_time("2024-01-15 14:30:00-05:30")) == timezone(
        -timedelta(hours=5, minutes=30))
    assert display_zone(parse_target_time("2024-01-15 19:30:00Z")) == timezone.utc
    assert display_zone(None) == timezone.utc
