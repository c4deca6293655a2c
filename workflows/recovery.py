"""A real recovery: the drill's proven path into a destination data directory on a named host,
with durable settings, that waits paused for a human. `approve` (a Temporal update, accepted
only while waiting and only after every check passed) promotes it and opens the listener the
approval names; `abort` leaves it paused and read-only for inspection. It never promotes
without approval, and the report records who decided, why and when.
"""

from __future__ import annotations

from temporalio import workflow
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from activities.models import PromotionRequest, Sandbox, SandboxRequest
    from activities.promotion import PromotionActivities
    from domain.recovery import Abort, Approval, DecisionRecord, RecoveryReport, RecoverySpec
    from domain.stages import DrillProgress, Stage
    from workflows import options
    from workflows.recovery_path import (
        GO_ON,
        STAGE_CODE,
        RecoveryPath,
        error_entry,
        is_cancellation,
        reraise_cancellation,
    )


@workflow.defn(name="RecoveryWorkflow")
class RecoveryWorkflow:
    def __init__(self) -> None:
        self._path: RecoveryPath | None = None
        self._sandbox: Sandbox | None = None
        self._awaiting = False
        self._answer: Approval | Abort | None = None

    @workflow.query
    def status(self) -> DrillProgress | None:
        return self._path.progress if self._path else None

    @workflow.update
    def approve(self, approval: Approval) -> str:
        self._answer = approval
        return f"promotion approved by {approval.by}"

    @approve.validator
    def _may_approve(self, approval: Approval) -> None:
        self._must_be_waiting()

    @workflow.update
    def abort(self, abort: Abort) -> str:
        self._answer = abort
        return f"aborted by {abort.by}: the recovery stays paused, read-only"

    @abort.validator
    def _may_abort(self, abort: Abort) -> None:
        self._must_be_waiting()

    def _must_be_waiting(self) -> None:
        if not self._awaiting or self._answer is not None:
            stage = self._path.progress.stage if self._path else None
            raise ValueError(f"this recovery is not waiting for approval (stage: {stage}); "
                             "approval is possible only after every check passed")

    @workflow.run
    async def run(self, spec: RecoverySpec) -> RecoveryReport:
        path = self._path = RecoveryPath(spec, RecoveryReport, destination=spec.destination)
        with path.ends_cancelled():
            refusal = await path.validate_or_escalate(lambda: None)
            report = path.finish(refusal) if refusal is not GO_ON \
                else await self._recover(path, spec)
        await path.leave_evidence("recovery")
        return report

    async def _recover(self, path: RecoveryPath, spec: RecoverySpec) -> RecoveryReport:
        """A cancel before a human decided leaves the destination empty, as it was."""
        try:
            return await self._prove_and_decide(path, spec)
        except BaseException as exc:
            if is_cancellation(exc) and self._sandbox is not None and self._answer is None:
                await path.teardown(self._sandbox)
            raise

    async def _prove_and_decide(self, path: RecoveryPath, spec: RecoverySpec) -> RecoveryReport:
        report: RecoveryReport = path.report  # type: ignore[assignment]
        sandbox: Sandbox | None = None
        stage = Stage.PROVISION
        host_queue = f"{workflow.info().task_queue}@{spec.host}" if spec.host else None
        try:
            sandbox = self._sandbox = await path.provision(
                SandboxRequest(drill_id=report.drill_id, destination=spec.destination),
                host_queue)
            stage = Stage.RESTORE
            await path.restore(sandbox)
            stage = Stage.REPLAY
            await path.replay(sandbox)
            stage = Stage.CHECKS
            await path.check(sandbox)
            stage = Stage.WARM
            await path.warm(sandbox)
        except ActivityError as exc:
            reraise_cancellation(exc)
            report.errors.append(error_entry(exc, STAGE_CODE[stage]))
        if report.errors or sandbox is None:
            if sandbox is not None:
                await path.teardown(sandbox)  # the destination is left empty, as it was
            return path.finish()
        await self._await_decision(path)
        answer = self._answer
        report.decision = DecisionRecord(action="approve" if isinstance(answer, Approval)
                                         else "abort", by=answer.by, reason=answer.reason,
                                         at=workflow.now())
        if isinstance(answer, Abort):
            return path.finish(status="paused")
        try:
            async with path.stage(Stage.PROMOTE):
                report.promotion = await workflow.execute_activity_method(
                    PromotionActivities.promote,
                    PromotionRequest(sandbox=sandbox, target=report.target, source=spec.source,
                                     approval=answer),
                    **path.on_host(sandbox, options.PROMOTE_RECOVERY))
        except ActivityError as exc:
            reraise_cancellation(exc)
            return path.finish(error_entry(exc, STAGE_CODE[Stage.PROMOTE]))
        return path.finish(status="promoted")

    async def _await_decision(self, path: RecoveryPath) -> None:
        path.progress.stage, path.progress.stage_started_at = Stage.AWAITING_APPROVAL, workflow.now()
        path.set_status(Stage.AWAITING_APPROVAL)
        self._awaiting = True
        await workflow.wait_condition(lambda: self._answer is not None)
        self._awaiting = False
