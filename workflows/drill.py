"""The drill: prove a recovery point in a disposable sandbox, then throw the sandbox away.

resolve → plan (→ escalate) → provision → restore → replay/pause → checks → teardown → report,
each stage from workflows.recovery_path. Anything refused before the sandbox exists yields
`rejected` and creates nothing; once a sandbox exists it is torn down whatever happens. A
cancel always ends the drill cancelled, after teardown, even when the activity it interrupted
finished anyway. Sandbox work runs on the host that provisioned the sandbox.
"""

from __future__ import annotations

from temporalio import workflow
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from activities.models import Sandbox, SandboxRequest
    from domain.escalation import Decision
    from domain.report import DrillReport
    from domain.spec import DrillSpec
    from domain.stages import DrillProgress, Stage
    from workflows.recovery_path import (
        GO_ON,
        STAGE_CODE,
        RecoveryPath,
        error_entry,
        reraise_cancellation,
    )

# The workflow id (= drill id) already travels as structured context in every record.
workflow.logger.workflow_info_on_message = False


@workflow.defn(name="DrillWorkflow")
class DrillWorkflow:
    def __init__(self) -> None:
        self._path: RecoveryPath | None = None
        self._decision: Decision | None = None

    @workflow.query
    def status(self) -> DrillProgress | None:
        return self._path.progress if self._path else None

    @workflow.update
    def decide(self, decision: Decision) -> str:
        """A human's answer to an escalated drill (see `pitrdrill drill decide`)."""
        self._decision = decision
        return f"{decision.action} accepted"

    @decide.validator
    def _waiting_for_decision(self, decision: Decision) -> None:
        if not (self._path and self._path.waiting_for_decision and self._decision is None):
            raise ValueError("this drill is not waiting for a decision")

    @workflow.run
    async def run(self, spec: DrillSpec) -> DrillReport:
        path = self._path = RecoveryPath(spec)
        with path.ends_cancelled():
            report = await self._drill(path)
        await path.leave_evidence("drill")
        return report

    async def _drill(self, path: RecoveryPath) -> DrillReport:
        refusal = await path.validate_or_escalate(lambda: self._decision)
        if refusal is not GO_ON:
            return path.finish(refusal)
        await self._in_sandbox(path)
        if not path.report.errors:
            await path.record_throughput()
        return path.finish()

    async def _in_sandbox(self, path: RecoveryPath) -> None:
        """A failure is reported before teardown, whose own troubles come after it."""
        sandbox: Sandbox | None = None
        stage = Stage.PROVISION
        try:
            sandbox = await path.provision(SandboxRequest(drill_id=path.report.drill_id))
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
            path.report.errors.append(error_entry(exc, STAGE_CODE[stage]))
        finally:
            if sandbox is not None:
                await path.teardown(sandbox)
