"""Bisect: find the first bad transaction automatically, in a logarithmic number of replays.

resolve → plan (as a drill to the bad bound) → plan the bisection (bounds, candidates) →
provision → restore → probes → teardown → one normal drill (a child DrillWorkflow) to the
target that keeps everything before the first bad commit, the predicate as a check expecting
false → report.

The probes share one sandbox: the good bound first (from the restored backup), then the bad
bound (forward), then a binary search (domain.bisect.Search). A forward probe restarts the
paused server at its new target; a backward one starts from the last clean state, which the
probe after a clean one keeps first (activities/probe.py), in the same activity. Without
--relation the candidates are listed while the backup is restored. Refusals (the predicate
true at the good bound, false at the bad one) come after both bounds are seen, with both
observations. A cancel tears the sandbox down (and cancels the confirming drill, which tears
its own down) and ends the bisection cancelled, as a drill does.
"""

from __future__ import annotations

import asyncio

from temporalio import workflow
from temporalio.exceptions import ActivityError, ChildWorkflowError
from temporalio.workflow import ChildWorkflowHandle, ParentClosePolicy

with workflow.unsafe.imports_passed_through():
    from activities.models import (
        BisectPlan,
        BisectPlanRequest,
        CandidatesRequest,
        CandidatesResult,
        PlanRequest,
        ResolveTargetRequest,
        Sandbox,
        SandboxRequest,
        StepRequest,
        StepResult,
    )
    from activities.probe import ProbeActivities
    from activities.targets import TargetActivities
    from domain.bisect import (
        BisectReport,
        BisectRequest,
        Probe,
        Search,
        StartFrom,
        bounds_refusal,
        conclude,
        confirmation_probe,
        confirming_spec,
        max_probes,
        reading_zone,
    )
    from domain.errors import DrillError, ErrorCode
    from domain.report import DrillReport, ErrorEntry
    from domain.stages import DrillProgress, Stage
    from domain.targets import TargetSpec
    from workflows import options
    from workflows.drill import DrillWorkflow
    from workflows.recovery_path import (
        GO_ON,
        STAGE_CODE,
        RecoveryPath,
        error_entry,
        reraise_cancellation,
        since,
    )
    from workflows.search_attributes import PITR_TARGET_MODE


@workflow.defn(name="BisectWorkflow")
class BisectWorkflow:
    def __init__(self) -> None:
        self._path: RecoveryPath | None = None
        self._search: Search | None = None

    @workflow.query
    def status(self) -> DrillProgress | None:
        return self._path.progress if self._path else None

    @workflow.query
    def probes(self) -> list[Probe]:
        """Every observation so far, in order: position, commit, verdict, seconds."""
        return list(self._search.probes) if self._search else []

    @workflow.run
    async def run(self, request: BisectRequest) -> BisectReport:
        automatic = [step for step in request.spec.fallback if step != "escalate"]
        spec = request.spec.model_copy(update={"checks": [], "fallback": automatic})
        path = self._path = RecoveryPath(spec, BisectReport, predicate=request.bad_when)
        workflow.upsert_search_attributes([PITR_TARGET_MODE.value_set("bisect")])
        with path.ends_cancelled():
            try:
                request.refuse_unsafe_predicate()
                good_at, bad_at = request.good_target(), request.bad_target()
            except DrillError as error:
                return path.finish(ErrorEntry.from_error(error))
            path.spec = spec.model_copy(update={"target": bad_at})
            refusal = await path.validate_or_escalate(lambda: None)
            if refusal is not GO_ON:
                return path.finish(refusal)
            planned = await self._plan(path, request, good_at)
            if isinstance(planned, ErrorEntry):
                return path.finish(planned)
            failure, confirming = await self._in_sandbox(path, request, planned)
            if confirming is not None:
                failure = await self._confirmed(path, confirming)
            return path.finish(failure)

    # --- before the sandbox ------------------------------------------------------------------

    async def _plan(self, path: RecoveryPath, request: BisectRequest,
                    good_at: TargetSpec | None) -> BisectPlan | ErrorEntry:
        report: BisectReport = path.report  # type: ignore[assignment]
        assert report.target is not None and report.plan is not None
        path.set_status("planning bisection")
        began = workflow.now()
        try:
            good = None
            if good_at is not None:
                resolved = await workflow.execute_activity_method(
                    TargetActivities.resolve_target, ResolveTargetRequest(target=good_at),
                    **options.RESOLVE_TARGET)
                good = resolved.target
            zone = reading_zone(report.target.local_reading) or (
                reading_zone(good.local_reading) if good else None)
            planned = await workflow.execute_activity_method(
                ProbeActivities.plan_bisection,
                BisectPlanRequest(source=path.spec.source, plan=report.plan, bad=report.target,
                                  good=good, good_given=request.good_at,
                                  bad_given=request.bad_at, zone=zone,
                                  options=PlanRequest.for_spec(path.spec, report.target).options),
                **options.PLAN_BISECTION)
        except ActivityError as exc:
            reraise_cancellation(exc)
            return error_entry(exc, ErrorCode.PREFLIGHT_FAILED)
        if planned.plan is not None:  # the good bound needs an older backup
            report.plan, report.base_backup = planned.plan, planned.plan.backup
            path.progress.restore_bytes_total = planned.plan.backup.size_bytes
            path.progress.replay_start_lsn = planned.plan.backup.start_lsn
        report.good, report.bad, report.zone = planned.good, planned.bad, zone
        report.candidates, report.aborted_skipped = planned.commits, planned.aborted
        report.max_probes = max_probes(planned.commits)
        report.metrics.plan_seconds = round((report.metrics.plan_seconds or 0) + since(began), 6)
        return planned

    # --- in the sandbox ----------------------------------------------------------------------

    async def _in_sandbox(self, path: RecoveryPath, request: BisectRequest, planned: BisectPlan
                          ) -> tuple[ErrorEntry | None, ChildWorkflowHandle | None]:
        """The probes; once the first bad commit is found the confirming drill is started,
        and it runs while this sandbox is torn down."""
        sandbox: Sandbox | None = None
        stage = Stage.PROVISION
        try:
            sandbox = await path.provision(SandboxRequest(drill_id=path.report.drill_id))
            stage = Stage.RESTORE
            listing = None
            if request.relation is None:
                # The candidates need no server: listed while the backup is restored.
                listing = asyncio.ensure_future(self._list(path, request, planned, sandbox))
            try:
                await path.restore(sandbox)
            finally:
                if listing is not None and not listing.done():
                    await asyncio.wait([listing])
            stage = Stage.REPLAY
            async with path.stage(Stage.REPLAY):
                failure = await self._bisect(path, request, planned, sandbox,
                                             listing.result() if listing else None)
            if failure is not None or path.report.errors:
                return failure, None
            return None, await self._start_confirming(path, request)
        except ActivityError as exc:
            reraise_cancellation(exc)
            return error_entry(exc, STAGE_CODE[stage]), None
        finally:
            if sandbox is not None:
                await path.teardown(sandbox)

    async def _list(self, path: RecoveryPath, request: BisectRequest, planned: BisectPlan,
                    sandbox: Sandbox) -> CandidatesResult:
        spec, report = path.spec, path.report
        return await workflow.execute_activity_method(
            ProbeActivities.list_candidates,
            CandidatesRequest(sandbox=sandbox, source=spec.source, backup=report.base_backup,
                              timeline=planned.bad.target.timeline,
                              good_stop_lsn=planned.good.replay_lsn,
                              bad_stop_lsn=planned.bad.replay_lsn, relation=request.relation,
                              database=spec.database, db_user=spec.db_user, zone=report.zone),
            **path.on_host(sandbox, options.LIST_BISECT_CANDIDATES))

    async def _bisect(self, path: RecoveryPath, request: BisectRequest, planned: BisectPlan,
                      sandbox: Sandbox, listed: CandidatesResult | None) -> ErrorEntry | None:
        """The bounds, then the search. A clean probe's state is kept by the next probe (always
        forward) before it moves on; a probe behind the server starts from that kept state."""
        report: BisectReport = path.report  # type: ignore[assignment]
        began = workflow.now()
        probe = _Prober(path, request, sandbox, report.zone)
        good = await probe(1, "good_bound", 0, "restore", planned.good.target,
                           planned.good.replay_lsn)
        if listed is None:  # with --relation: looked up in the sandbox, paused at the good bound
            listed = await self._list(path, request, planned, sandbox)
        search = self._search = Search.over(listed.candidates)
        report.candidates, report.relation = listed.candidates, listed.relation
        report.max_probes = max_probes(listed.candidates)
        good.stopped_before, good.last_kept = listed.first, planned.last_good_bound_commit
        good.commits_kept = 0
        search.record(good)
        bad = await probe(2, "bad_bound", listed.candidates, "forward", planned.bad.target,
                          planned.bad.replay_lsn, after=good)
        bad.last_kept, bad.commits_kept = listed.last, listed.commits
        search.record(bad)
        report.probes = search.probes
        if (refused := bounds_refusal(good, bad)) is not None:
            return ErrorEntry.from_error(refused)
        here, last = listed.candidates, bad
        while (position := search.next_position()) is not None:
            # Behind the server: from the last clean state kept.
            start: StartFrom = "good_state" if position < here else "forward"
            observed = await probe(search.next_number(), "search", position, start, after=last)
            here, last = position, observed
            if (problem := search.record(observed)) is not None:
                return ErrorEntry.from_error(problem)
        finding = report.finding = conclude(search, planned.bad.target.timeline)
        damaged = search.at(search.hi)
        clean = search.at(search.lo)
        if damaged and clean and damaged.commits_kept is not None \
                and clean.commits_kept is not None:
            report.untested_commits_after_first_bad = max(
                damaged.commits_kept - clean.commits_kept - 1, 0)
        report.bisect_seconds = since(began)
        workflow.logger.info("first bad commit found", extra={
            "xid": finding.first_bad.xid, "probes": len(search.probes)})
        return None

    # --- the confirming drill ----------------------------------------------------------------

    async def _start_confirming(self, path: RecoveryPath,
                                request: BisectRequest) -> ChildWorkflowHandle:
        """One normal drill to the found target: a child DrillWorkflow, cancelled with this
        bisection (it tears its own sandbox down then)."""
        report: BisectReport = path.report  # type: ignore[assignment]
        finding = report.finding
        assert finding is not None
        return await workflow.start_child_workflow(
            DrillWorkflow.run, confirming_spec(request, finding),
            id=f"{report.drill_id}-confirm", task_queue=workflow.info().task_queue,
            parent_close_policy=ParentClosePolicy.REQUEST_CANCEL,
            static_summary=f"bisect {report.drill_id}: the target before xid "
                           f"{finding.first_bad.xid}, predicate expected false")

    async def _confirmed(self, path: RecoveryPath,
                         confirming: ChildWorkflowHandle) -> ErrorEntry | None:
        report: BisectReport = path.report  # type: ignore[assignment]
        search, finding = self._search, report.finding
        assert search is not None and finding is not None
        try:
            async with path.stage(Stage.CHECKS):
                drill: DrillReport = await confirming
        except ChildWorkflowError as exc:
            reraise_cancellation(exc.cause or exc)
            return ErrorEntry.from_error(DrillError(
                ErrorCode.RECOVERY_FAILED, f"the confirming drill {confirming.id} failed: "
                                           f"{exc.cause or exc}"))
        report.confirmation = drill
        report.recovered = drill.recovered
        observed = confirmation_probe(drill, finding, search.lo, search.next_number())
        if observed is not None:
            problem = search.record(observed)
            report.probes = search.probes
            if problem is not None:
                return ErrorEntry.from_error(problem)
        if drill.status != "verified":
            for error in drill.errors:
                report.errors.append(error.model_copy(update={
                    "message": f"confirming drill {confirming.id}: {error.message}"}))
            if not drill.errors:
                return ErrorEntry.from_error(DrillError(
                    ErrorCode.RECOVERY_FAILED,
                    f"the confirming drill {confirming.id} ended {drill.status}"))
        return None


class _Prober:
    """One probe activity per probe, timed into the report: the keep of the state the server
    stands at (when the probe before was clean) or the return to the kept clean state (when
    this one lies behind the server) happens in it first."""

    def __init__(self, path: RecoveryPath, request: BisectRequest, sandbox: Sandbox,
                 zone: str | None) -> None:
        self._path, self._sandbox = path, sandbox
        spec = path.spec
        self._common = dict(sandbox=sandbox, source=spec.source, database=spec.database,
                            db_user=spec.db_user, predicate=request.bad_when, zone=zone,
                            timeline=path.report.target.timeline if path.report.target
                            else "latest", backup=path.report.base_backup)

    async def __call__(self, number: int, role: str, position: int, start: StartFrom,
                       target=None, expect_replay_lsn: str | None = None,
                       after: Probe | None = None) -> Probe:
        """`after`: the probe the server stands at (None: the restored backup)."""
        self._path.set_status(f"bisect probe {number}")
        keep = after is not None and not after.damaged and start == "forward"
        result: StepResult = await workflow.execute_activity_method(
            ProbeActivities.probe_before,
            StepRequest(role=role, position=position, target=target,
                        expect_replay_lsn=expect_replay_lsn, keep_first=keep,
                        return_first=start == "good_state", **self._common),
            **self._path.on_host(self._sandbox, options.PROBE_BEFORE))
        if keep and after is not None:
            after.keep_seconds = round(result.keep_seconds, 3)
        return Probe(number=number, role=role, position=position, target=result.target,
                     damaged=result.damaged, stopped_before=result.stopped_before,
                     last_kept=result.last_kept, commits_kept=result.commits_kept, start=start,
                     replay_lsn=result.replay_lsn, stop_reason=result.stop_reason,
                     seconds=round(result.seconds, 3),
                     state_seconds=round(result.state_seconds, 3))
