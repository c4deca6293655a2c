"""`pitrdrill bisect` on real PostgreSQL and a real Temporal: one damaging transaction hidden
among 2,000 small commits is named exactly, in at most ceil(log2(candidates)) + 2 probes; the
seed's incident (a legitimate commit, then 115 ms later a 47-transaction job) is cut right
before the job, keeping the legitimate commit; bounds the predicate contradicts are refused
with both observations; a predicate that fails fails the probe with the SQL error."""

from __future__ import annotations

import asyncio
import math
import os
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import psycopg
import pytest
from temporalio.client import WorkflowExecutionStatus
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from activities.probe import align_with_backup, keep_layered, mirror, return_layered
from adapters.investigation import (
    InvestigateRequest,
    Investigator,
    RelationCatalog,
    WalRangeReader,
)
from adapters.pg_runtime import PostgresRuntime
from adapters.wal_index import WalIndex
from adapters.wal_index_store import WalIndexStore
from adapters.waldump import PgWaldump
from domain.bisect import BisectReport
from domain.errors import DrillError
from domain.spec import DrillSpec
from lab.lab import Lab, Marker
from lab.workload import OrdersWorkload
from tests.conftest import postgres_processes_under
from workers.cli.bisect import (
    bisect_request,
    bisect_result,
    bisect_suggestion,
    bisect_text,
    run_bisect,
    start_bisect,
)
from workers.demo import stage_incident
from workflows.bisect import BisectWorkflow

VOIDED = "select count(*) > 0 from orders where status = 'void'"
NEW_YORK = ZoneInfo("America/New_York")
HAYSTACK_COMMITS = 2000
ABORTS = 5


@dataclass
class Haystack:
    lab: Lab
    damage: Marker
    before_damage: Marker  # the commit right before it
    commits_after_backup: int
    aborts: int
    early: Marker  # a commit well before the damage (a --good-at)
    late: Marker  # one well after it (a --bad-at)
    audits: int  # commits that touched audit_log only

    def spec(self, database: str = "demo") -> DrillSpec:
        return DrillSpec.model_validate({
            "database": database, "target": {"latest": True},
            "source": {"kind": "filesystem", "base_backups": str(self.lab.base_backups),
                       "wal_archive": str(self.lab.wal_archive)}})


ORDER = "INSERT INTO orders (customer, amount) VALUES (7, 1.5)"
AUDIT = "INSERT INTO audit_log (note) VALUES ('seen')"


@pytest.fixture(scope="module")
def haystack(work_root: Path, runtime: PostgresRuntime) -> Haystack:
    """2,000 small commits after the backup (every tenth to audit_log, the rest one order
    each), one of which voids 20 orders, and a few aborted transactions (never candidates)."""
    with Lab(work_root / "bisect-lab", runtime) as lab:
        orders = OrdersWorkload(lab, "demo")
        orders.create()
        lab.sql("CREATE TABLE audit_log (id bigserial PRIMARY KEY, note text)", "demo")
        orders.insert_batches(2, 100)
        lab.base_backup("base")
        time.sleep(1.1)  # backup labels carry whole seconds
        markers, audits = {}, 0
        with psycopg.connect(lab.primary.conninfo("demo"), autocommit=True) as conn:
            for n in range(HAYSTACK_COMMITS):
                if n in (300, 1233, 1600):
                    markers[n] = lab.commit("demo", [ORDER], f"commit {n}", 0)
                elif n == 1234:
                    markers[n] = lab.commit("demo", [
                        "UPDATE orders SET status = 'void' WHERE id BETWEEN 11 AND 30"],
                        "the damage", 0)
                elif n % 10 == 5:
                    conn.execute(AUDIT)
                    audits += 1
                else:
                    conn.execute(ORDER)
                if n % 400 == 17:
                    with conn.transaction(force_rollback=True):
                        conn.execute(ORDER)
        lab.archive_all()
        yield Haystack(lab=lab, damage=markers[1234], before_damage=markers[1233],
                       commits_after_backup=HAYSTACK_COMMITS, aborts=ABORTS,
                       early=markers[300], late=markers[1600], audits=audits)


async def bisect(temporal_env, worker, spec: DrillSpec, bad_when: str = VOIDED,
                 **bounds) -> BisectReport:
    request = bisect_request(spec, bad_when, **bounds)
    return await run_bisect(temporal_env.client, request, f"e2e-bisect-{uuid.uuid4().hex[:8]}",
                            worker.task_queue, show_progress=False)


def _searched(report: BisectReport) -> list:
    return [p for p in report.probes if p.role != "confirm"]


async def test_one_damaging_transaction_among_2000_commits_is_named_exactly(
        temporal_env, worker, haystack, sandbox_root):
    report = await bisect(temporal_env, worker, haystack.spec())
    assert report.status == "verified", bisect_text(report)
    finding = report.finding
    assert finding.first_bad.xid == haystack.damage.xid
    assert finding.first_bad.commit_time == haystack.damage.commit_time
    assert finding.last_good.xid == haystack.before_damage.xid
    assert (finding.target.mode, finding.target.xid, finding.target.inclusive) == \
        ("xid", haystack.damage.xid, False)
    assert report.candidates >= haystack.commits_after_backup
    assert report.aborted_skipped == haystack.aborts  # aborted transactions are skipped
    searched = _searched(report)
    assert report.max_probes == math.ceil(math.log2(report.candidates)) + 2
    assert len(searched) <= report.max_probes
    assert [p.role for p in searched[:2]] == ["good_bound", "bad_bound"]
    # Every probe after the bounds judged the state right before its candidate commit.
    for probe in searched[2:]:
        assert probe.damaged == (probe.stopped_before.xid > haystack.damage.xid)
        assert f"before commit of transaction {probe.stopped_before.xid}," in probe.stop_reason
    assert {p.start for p in searched[2:]} <= {"forward", "good_state"}
    assert any(p.start == "good_state" for p in searched)  # backward probes started from a copy
    confirmation = report.confirmation
    assert confirmation.status == "verified"
    assert confirmation.checks[0].observed is False
    assert f"transaction {haystack.damage.xid}," in confirmation.recovered.stop_reason
    assert report.probes[-1].role == "confirm" and not report.probes[-1].damaged
    assert postgres_processes_under(sandbox_root) == [] and not any(sandbox_root.iterdir())
    text = bisect_text(report)
    assert f"FIRST BAD     xid {haystack.damage.xid}" in text


async def test_predicate_true_at_the_good_bound_is_refused_with_both_observations(
        temporal_env, worker, haystack, sandbox_root):
    report = await bisect(temporal_env, worker, haystack.spec(),
                          "select count(*) > 0 from orders")
    assert report.status == "rejected"
    assert [e.code for e in report.errors] == ["BISECT_BAD_AT_GOOD_BOUND"]
    assert "good bound" in report.errors[0].message and "bad bound" in report.errors[0].message
    assert [(p.role, p.damaged) for p in report.probes] == [("good_bound", True),
                                                           ("bad_bound", True)]
    assert report.finding is None and report.confirmation is None
    assert postgres_processes_under(sandbox_root) == [] and not any(sandbox_root.iterdir())


async def test_a_failing_predicate_fails_the_probe_with_the_sql_error(
        temporal_env, worker, haystack, sandbox_root):
    report = await bisect(temporal_env, worker, haystack.spec(),
                          "select count(*) > 0 from no_such_table")
    assert report.status == "failed"
    assert [e.code for e in report.errors] == ["BISECT_PREDICATE_FAILED"]
    assert "no_such_table" in report.errors[0].message
    assert postgres_processes_under(sandbox_root) == [] and not any(sandbox_root.iterdir())


async def test_relation_lsn_and_xid_bounds_narrow_the_candidates(temporal_env, worker, haystack):
    """Only the transactions that changed rows of orders, between an xid and an LSN bound."""
    report = await bisect(temporal_env, worker, haystack.spec(),
                          good_at=f"xid:{haystack.early.xid}", bad_at=haystack.late.lsn_after,
                          relation="public.orders")
    assert report.status == "verified", bisect_text(report)
    assert report.finding.first_bad.xid == haystack.damage.xid
    assert report.finding.last_good.xid == haystack.before_damage.xid
    relation = report.relation
    # Commits 300 .. 1600 of the haystack; every tenth one wrote only to audit_log.
    assert relation.commits_between == 1600 - 300 + 1
    assert relation.candidates == relation.commits_between - 130
    assert report.candidates == relation.candidates
    assert len(_searched(report)) <= math.ceil(math.log2(relation.candidates)) + 2
    # Commit 1235 (the next after the damage) wrote audit_log only: applied with it, untested.
    assert report.untested_commits_after_first_bad == 1
    assert report.good.given == f"xid:{haystack.early.xid}"
    assert report.bad.target.lsn == haystack.late.lsn_after


async def test_a_good_bound_before_the_newest_backup_bisects_from_an_older_one(
        temporal_env, worker, scenario):
    """The session scenario: backup `first`, five batches, three damaging transactions, backup
    `second`. The newest backup before the end is `second`, after the good bound: `first` is
    restored instead."""
    spec = DrillSpec.model_validate({"database": scenario.database, "target": {"latest": True},
                                     "source": scenario.source()})
    report = await bisect(temporal_env, worker, spec, good_at=f"xid:{scenario.batches[1].xid}")
    assert report.status == "verified", bisect_text(report)
    assert report.base_backup.id == "first" and report.plan.backup.id == "first"
    assert report.finding.first_bad.xid == scenario.damage[0].xid
    assert report.finding.last_good.xid == scenario.batches[-1].xid
    assert len(_searched(report)) <= math.ceil(math.log2(report.candidates)) + 2


async def test_a_cancelled_bisection_tears_its_sandbox_down(temporal_env, worker, haystack,
                                                            sandbox_root):
    request = bisect_request(haystack.spec(), VOIDED)
    bisect_id = await start_bisect(temporal_env.client, request, None, worker.task_queue)
    handle = temporal_env.client.get_workflow_handle(bisect_id)
    for _ in range(600):
        if len(await handle.query(BisectWorkflow.probes)) >= 2:
            break
        await asyncio.sleep(0.05)
    await handle.cancel()
    with pytest.raises(DrillError) as cancelled:
        await bisect_result(temporal_env.client, bisect_id)
    assert cancelled.value.code == "DRILL_CANCELLED"
    assert postgres_processes_under(sandbox_root) == [] and not any(sandbox_root.iterdir())


def test_mirror_copies_only_what_changed_and_removes_what_is_gone(tmp_path):
    source, target = tmp_path / "good", tmp_path / "data"
    for root in (source, target):
        (root / "base" / "1").mkdir(parents=True)
        (root / "pg_wal").mkdir()
        (root / "base" / "1" / "1259").write_bytes(b"same")
        (root / "pg_wal" / "000000010000000000000003").write_bytes(b"x" * 16)
    (source / "global").mkdir()
    (source / "global" / "pg_control").write_bytes(b"clean")
    (target / "base" / "1" / "16384").write_bytes(b"written later")
    (target / "pg_wal" / "000000010000000000000004").write_bytes(b"y" * 16)
    (target / "stray").mkdir()
    same_time = (source / "base" / "1" / "1259").stat().st_mtime_ns
    os.utime(target / "base" / "1" / "1259", ns=(same_time, same_time))
    done = mirror(source, target)
    assert (done.files_copied, done.files_removed) == (1, 2)
    assert (target / "global" / "pg_control").read_bytes() == b"clean"
    assert not (target / "base" / "1" / "16384").exists() and not (target / "stray").exists()
    # WAL segments are the archive's: neither copied nor removed.
    assert (target / "pg_wal" / "000000010000000000000004").exists()
    (target / "pg_wal" / "000000010000000000000004").unlink()
    assert sorted(str(p.relative_to(target)) for p in target.rglob("*")) == \
        sorted(str(p.relative_to(source)) for p in source.rglob("*"))
    (target / "base" / "1" / "1259").write_bytes(b"diff")
    assert mirror(source, target).files_copied == 1
    assert (target / "base" / "1" / "1259").read_bytes() == b"same"


def test_the_kept_state_reads_what_replay_never_changed_from_the_backup(tmp_path):
    """Only the files replay changed are copied when a clean state is kept; going back takes
    the rest from the base backup, which is never written (nor linked to)."""
    backup, data, good = tmp_path / "backup", tmp_path / "sandbox" / "data", \
        tmp_path / "sandbox" / "good"
    files = {"backup_label": b"START WAL LOCATION: 0/2000028", "base/1/16384": b"A" * 8192,
             "base/1/1259": b"cat", "global/pg_control": b"ctl0",
             "pg_wal/000000010000000000000002": b"w" * 16}
    long_ago = time.time_ns() - 3600 * 10**9
    for name, content in files.items():
        (backup / name).parent.mkdir(parents=True, exist_ok=True)
        (backup / name).write_bytes(content)
        os.utime(backup / name, ns=(long_ago, long_ago))
    for name, content in files.items():  # the restore: the same bytes, new mtimes
        (data / name).parent.mkdir(parents=True, exist_ok=True)
        (data / name).write_bytes(content)
    (data / "recovery.signal").write_bytes(b"")
    assert align_with_backup(data, backup, data.parent) == 4  # the segment is the archive's
    assert align_with_backup(data, backup, data.parent) == 0  # once, before the first start
    # The server's first run: a page written in place, the label renamed, pg_control new.
    with open(data / "base/1/16384", "r+b") as page:
        page.write(b"B" * 8192)
    (data / "backup_label").rename(data / "backup_label.old")
    (data / "global/pg_control").write_bytes(b"ctl1")
    kept = keep_layered(data, good, backup)
    assert not (good / "base/1/1259").exists()  # read from the backup when going back
    assert (good / "base/1/16384").read_bytes() == b"B" * 8192
    assert kept.files_copied == 4  # 16384, backup_label.old, pg_control, recovery.signal
    # Replay moves on: more pages, a new relation, a file gone.
    (data / "base/1/16384").write_bytes(b"C" * 8192)
    (data / "base/1/1259").write_bytes(b"dog")
    (data / "base/1/99999").write_bytes(b"new")
    (data / "recovery.signal").unlink()
    returned = return_layered(good, data, backup)
    assert (data / "base/1/16384").read_bytes() == b"B" * 8192
    assert (data / "base/1/1259").read_bytes() == b"cat"
    assert (data / "recovery.signal").exists() and not (data / "base/1/99999").exists()
    assert not (data / "backup_label").exists() and (data / "backup_label.old").exists()
    assert (returned.files_copied, returned.files_removed) == (3, 1)
    assert (data / "base/1/1259").stat().st_ino != (backup / "base/1/1259").stat().st_ino
    assert all((backup / name).read_bytes() == content for name, content in files.items())
    # Back again with nothing changed: nothing copied.
    assert return_layered(good, data, backup).files_copied == 0


@pytest.fixture(scope="module")
def incident(work_root: Path, runtime: PostgresRuntime):
    """The seed's incident as `make demo` stages it: a legitimate commit, 115 ms later a
    runaway job of 47 transactions voiding orders, then business as usual."""
    with Lab(work_root / "bisect-incident", runtime) as lab:
        staged = stage_incident(lab)
        yield lab, staged["legit"], staged["damage"]


async def test_the_seed_incident_is_cut_right_before_the_batch_job(
        temporal_env, worker, incident, runtime):
    """investigate finds the burst and suggests the bisect command; run as suggested (and
    bounded by a New York time after the job), bisect names the job's first transaction and
    keeps the legitimate commit."""
    lab, legit, job = incident
    waldump = PgWaldump(runtime)
    investigator = Investigator(WalIndex(waldump, WalIndexStore(worker.index_path)),
                                WalRangeReader(waldump), RelationCatalog())
    found = investigator.investigate(InvestigateRequest(
        archive=str(lab.wal_archive), around=job[0].commit_time, window_seconds=60))
    suggestion = bisect_suggestion(found, "incident.yaml")
    assert suggestion.startswith("pitrdrill bisect incident.yaml --good-at xid:")
    good_at = suggestion.split()[4]  # just before the burst (its edge, or earlier)
    assert int(good_at.removeprefix("xid:")) <= legit.xid
    spec = DrillSpec.model_validate({
        "database": "shop", "target": {"latest": True},
        "source": {"kind": "filesystem", "base_backups": str(lab.base_backups),
                   "wal_archive": str(lab.wal_archive)}})
    after_job = (job[-1].commit_time + timedelta(microseconds=1)).astimezone(NEW_YORK)
    report = await bisect(temporal_env, worker, spec, good_at=good_at,
                          bad_at=after_job.strftime("%Y-%m-%d %H:%M:%S.%f America/New_York"))
    assert report.status == "verified", bisect_text(report)
    finding = report.finding
    assert finding.first_bad.xid == job[0].xid
    assert finding.last_good.xid == legit.xid  # the legitimate commit is kept
    assert report.candidates >= 1 + len(job)  # at least the legitimate commit and the job
    assert report.zone == "America/New_York"
    local = job[0].commit_time.astimezone(NEW_YORK).strftime("%Y-%m-%d %H:%M:%S.%f")
    assert finding.first_bad.local_time.startswith(f"{local} America/New_York")
    assert len(_searched(report)) <= math.ceil(math.log2(report.candidates)) + 2
    confirmation = report.confirmation
    assert confirmation.status == "verified"
    assert confirmation.recovered.last_commit_time == legit.commit_time


async def test_every_bisect_history_replays(temporal_env, worker):
    """Non-determinism check: the bisections above replay against today's workflow code."""
    histories = [await temporal_env.client.get_workflow_handle(e.id, run_id=e.run_id)
                 .fetch_history()
                 async for e in temporal_env.client.list_workflows(
                     "WorkflowType = 'BisectWorkflow'")
                 if e.status != WorkflowExecutionStatus.RUNNING]
    if not histories:
        pytest.skip("no bisection ran in this session")
    replayer = Replayer(workflows=[BisectWorkflow], data_converter=pydantic_data_converter)
    for history in histories:
        await replayer.replay_workflow(history)
