"""Human-readable renderings of reports and errors (the --json forms are the models themselves)."""

from __future__ import annotations

from domain.recovery import RecoveryReport
from domain.report import CheckResult, DrillReport, ErrorEntry
from domain.stages import LiveProgress
from domain.targets import ResolvedTarget, format_utc

_MARK = {"verified": "VERIFIED", "failed": "FAILED", "rejected": "REJECTED",
         "promoted": "PROMOTED", "paused": "PAUSED (aborted, read-only)"}


def error_text(error: ErrorEntry) -> str:
    text = f"error {error.code}: {error.message}"
    return f"{text}\n  what to do: {error.hint}" if error.hint else text


def target_text(target: ResolvedTarget, settings_text: str) -> str:
    lines = [f"target: {target.describe()}"]
    if target.utc is not None:
        lines.append(f"  UTC instant    {format_utc(target.utc)}")
        lines.append(f"  read from      {target.local_reading or 'UTC'}")
    lines.append("recovery settings:")
    lines.extend("  " + line for line in settings_text.splitlines())
    return "\n".join(lines)


def commit_text(ref) -> str:
    """A commit as every report names it: xid, LSN, UTC time."""
    return "none" if ref is None else f"xid {ref.xid} at {ref.lsn}, {format_utc(ref.commit_time)}"


def plan_text(target: ResolvedTarget, planned) -> str:
    plan, predicted = planned.plan, planned.plan.predicted
    lines = [f"target         {target.describe()}",
             f"base backup    {plan.backup.id} (WAL {plan.backup.start_lsn} .. "
             f"{plan.backup.stop_lsn}, {plan.backup.size_bytes / 1e6:.1f} MB)"]
    lines += [f"  skipped      {s.backup_id}: {s.code}" for s in plan.skipped]
    lines += [f"last kept      {commit_text(predicted.last_kept)}",
              f"first dropped  {commit_text(predicted.first_dropped)}",
              f"stops at       {predicted.replay_lsn or 'end of archive'} ({predicted.reason})"]
    if predicted.tie:
        lines.append(f"TIE            {predicted.tie.advice}")
    if plan.fallback:
        lines.append(f"FALLBACK       {plan.fallback.step} because {plan.fallback.cause_code}: "
                     f"recovering to {plan.fallback.used.describe()} instead")
    if plan.window:
        earliest = format_utc(plan.window.earliest_time) if plan.window.earliest_time else "?"
        lines.append(f"restorable     from {plan.window.earliest_lsn} ({earliest}) to "
                     f"{commit_text(plan.window.latest)}")
    replay = "?" if plan.replay_bytes is None else f"{plan.replay_bytes / 1e6:.1f} MB"
    lines.append(f"work           restore {plan.restore_bytes / 1e6:.1f} MB, replay {replay}; "
                 f"estimated {seconds_text(plan.estimate_seconds)}")
    lines.append(f"WAL index      {planned.index.segments} segments, "
                 f"{planned.index.segments_indexed} newly indexed in {planned.index.seconds:.2f}s")
    return "\n".join(lines)


def span(seconds: float) -> str:
    """A length of history in the unit that reads best: 3.9 s, 12.5 min, 26.0 h, 30.0 d."""
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= 2 * size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.1f} s"


def seconds_text(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}s"


_CHECK_MARK = {"passed": "pass", "failed": "FAIL", "error": "ERROR", "skipped": "SKIPPED"}


def _shown(value) -> str:
    """An observed or expected value: mappings as `key value` pairs, the rest as written."""
    if isinstance(value, dict):
        return ", ".join(f"{key} {_shown(item)}" for key, item in value.items())
    if isinstance(value, list) and any(isinstance(item, dict) for item in value):
        return "[" + "; ".join(_shown(item) for item in value) + "]"
    return repr(value)


def check_line(check: CheckResult) -> str:
    """One check: its verdict, kind and seconds, then why it was skipped, or what was
    observed against what was expected (and the error that stopped it)."""
    head = f"  check [{_CHECK_MARK[check.status]}] {check.name} ({check.kind}, " \
           f"{check.seconds:.3f}s)"
    if check.status == "skipped":
        return f"{head}: skipped: {check.skipped}"
    if check.status == "error":
        return f"{head}: {check.error}; expected {_shown(check.expected)}"
    return f"{head}: observed {_shown(check.observed)}, expected {_shown(check.expected)}"


def summary(report: DrillReport) -> str:
    lines = [f"Drill {report.drill_id}: {_MARK[report.status]}"]
    if report.target:
        lines.append(f"  target        {report.target.describe()}")
    if report.base_backup:
        backup = report.base_backup
        lines.append(f"  base backup   {backup.id} (WAL {backup.start_lsn} .. {backup.stop_lsn}, "
                     f"{backup.size_bytes / 1e6:.1f} MB)")
    if report.escalation:
        escalation = report.escalation
        lines.append(f"  escalated     {escalation.cause_code}; outcome {escalation.outcome} "
                     f"after {escalation.waited_seconds:g}s"
                     + (f" (by {escalation.decision.by})" if escalation.decision
                        and escalation.decision.by else ""))
    if report.plan:
        plan = report.plan
        if plan.fallback:
            fallback = plan.fallback
            lines.append(f"  FALLBACK      {fallback.step} because {fallback.cause_code}: "
                         f"asked for {fallback.requested.describe()}")
            if fallback.transactions_given_up is not None:
                lines.append(f"                gives up {fallback.transactions_given_up} "
                             f"transactions, {seconds_text(fallback.seconds_given_up)}")
        lines.append(f"  predicted     last kept {commit_text(plan.predicted.last_kept)}")
        lines.append(f"                first dropped {commit_text(plan.predicted.first_dropped)}")
    if report.recovered:
        recovered = report.recovered
        last = format_utc(recovered.last_commit_time) if recovered.last_commit_time else "none"
        lines.append(f"  recovered to  LSN {recovered.replay_lsn}, last commit {last}")
        if recovered.matches_prediction is not None:
            lines.append("  prediction    " + ("held: PostgreSQL stopped exactly where predicted"
                                             if recovered.matches_prediction else "MISSED"))
        if recovered.stop_reason:
            lines.append(f"  server said   {recovered.stop_reason}")
    lines.extend(check_line(check) for check in report.checks)
    m = report.metrics
    if m.stage_seconds:
        stages = ", ".join(f"{k} {v:.2f}s" for k, v in m.stage_seconds.items())
        lines.append(f"  stages        {stages}")
    if m.failed_stages:
        stages = ", ".join(f"{k} after {v:.2f}s" for k, v in m.failed_stages.items())
        lines.append(f"  failed in     {stages}")
    if m.bytes_restored:
        lines.append(f"  restore       {m.bytes_restored / 1e6:.1f} MB at {m.restore_mb_per_s} MB/s")
    if m.replay_mb_per_s is not None:
        lines.append(f"  replay        {m.wal_bytes_replayed / 1e6:.1f} MB at {m.replay_mb_per_s} MB/s")
    if report.warm is not None:
        warmed = ", ".join(f"{r.name} ({r.method})" for r in report.warm.relations)
        lines.append(f"  warmed        {report.warm.bytes_warmed / 1e6:.1f} MB in "
                     f"{seconds_text(report.warm.seconds)}: {warmed or 'nothing'}")
    if m.time_to_verify_seconds is not None:
        lines.append(f"  time to verify {seconds_text(m.time_to_verify_seconds)}; data given up "
                     f"before the target {seconds_text(m.data_lost_seconds)}")
    if isinstance(report, RecoveryReport):
        lines.extend(_recovery_lines(report))
    lines.extend("  " + error_text(error).replace("\n", "\n  ") for error in report.errors)
    return "\n".join(lines)


def _recovery_lines(report: RecoveryReport) -> list[str]:
    lines = [f"  destination   {report.destination}"]
    if report.decision:
        d = report.decision
        lines.append(f"  decided       {d.action} by {d.by} at {format_utc(d.at)}: {d.reason}")
    if report.promotion:
        p = report.promotion
        lines.append(f"  promoted      timeline {p.timeline}; listening on "
                     f"{p.listen_addresses}:{p.port} and in {p.socket_dir}")
    return lines


def status_text(live: LiveProgress) -> str:
    progress = live.progress
    state = "finished" if progress.finished else f"in {progress.stage or 'starting'}"
    lines = [f"Drill {progress.drill_id} ({progress.database}): {state}"]
    lines += [f"  done    {t.stage} {t.seconds:.2f}s" for t in progress.done]
    lines += [f"  FAILED  {t.stage} after {t.seconds:.2f}s" for t in progress.failed]
    if live.bytes_restored is not None:
        total = progress.restore_bytes_total
        lines.append(f"  restored {live.bytes_restored / 1e6:.1f} MB"
                     + (f" of {total / 1e6:.1f} MB" if total else ""))
    if live.replay_lsn is not None:
        lines.append(f"  replayed to {live.replay_lsn}; predicted stop {progress.predicted_stop_lsn}"
                     f" ({(live.bytes_to_stop or 0) / 1e6:.1f} MB to go)")
    if live.mb_per_s is not None:
        eta = "-" if live.eta_seconds is None else f"{live.eta_seconds:.0f}s"
        lines.append(f"  rate {live.mb_per_s} MB/s, ETA {eta}")
    return "\n".join(lines)


def drill_list_text(drills) -> str:
    if not drills:
        return "no drills"
    rows = [f"{'DRILL':<44} {'KIND':<8} {'DATABASE':<12} {'MODE':<9} {'STATUS':<10} "
            f"{'TEMPORAL':<11} STARTED"]
    for d in drills:
        started = format_utc(d.started_at) if d.started_at else "-"
        rows.append(f"{d.drill_id:<44} {d.kind:<8} {d.database or '-':<12} "
                    f"{d.target_mode or '-':<9} "
                    f"{d.status or '-':<10} {d.workflow_status:<11} {started}")
    return "\n".join(rows)
