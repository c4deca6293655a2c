"""`pitrdrill report show --html | --markdown`: a report as one self-contained page (inline CSS
and an inline SVG stage timeline; no script, no font, nothing fetched: readable offline and
printable) or as Markdown for a ticket. Templates live here as strings, so an installed
pitrdrill needs no package data."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from jinja2 import Environment, StrictUndefined

from domain.recovery import RecoveryReport
from domain.report import DrillReport
from domain.targets import format_utc
from workers.output import commit_text

# Room left of the bars for stage names, right of them for the last bar's seconds.
_LABEL_W, _CHART_W, _RIGHT_W, _ROW_H, _AXIS_H = 150, 640, 90, 24, 28
_COLOURS = {"done": "#2f7d4f", "failed": "#b3261e"}


@dataclass(frozen=True)
class Bar:
    stage: str
    outcome: str
    seconds: float
    x: float
    y: float
    width: float
    colour: str


@dataclass(frozen=True)
class Timeline:
    bars: list[Bar]
    ticks: list[tuple[float, str]]  # x, label
    width: int
    height: int
    total_seconds: float


def timeline(report: DrillReport) -> Timeline:
    """Each stage a bar at its start, as long as it took, on one seconds axis from the first
    stage's start. A stage that took no measurable time still shows as a sliver."""
    spans = report.stages
    height = _AXIS_H + _ROW_H * max(len(spans), 1)
    if not spans:
        return Timeline([], [], _LABEL_W + _CHART_W + _RIGHT_W, height, 0.0)
    start = min(span.started_at for span in spans)
    offsets = [(span.started_at - start).total_seconds() for span in spans]
    total = max(offset + span.seconds for offset, span in zip(offsets, spans)) or 1.0
    scale = _CHART_W / total
    bars = [Bar(stage=str(span.stage), outcome=span.outcome, seconds=span.seconds,
                x=round(_LABEL_W + offset * scale, 2), y=_AXIS_H + i * _ROW_H,
                width=round(max(span.seconds * scale, 1.5), 2),
                colour=_COLOURS[span.outcome])
            for i, (offset, span) in enumerate(zip(offsets, spans))]
    ticks = [(round(_LABEL_W + _CHART_W * k / 4, 2), f"{total * k / 4:.1f}s") for k in range(5)]
    return Timeline(bars, ticks, _LABEL_W + _CHART_W + _RIGHT_W, height, total)


def _when(moment: datetime | None) -> str:
    return format_utc(moment) if moment else "-"


def _number(value, unit: str = "") -> str:
    return "-" if value is None else f"{value:g}{unit}"


def facts(report: DrillReport) -> list[tuple[str, str]]:
    """The report's headline facts, in the order both renderings show them."""
    m, plan, recovered = report.metrics, report.plan, report.recovered
    requested, used = report.requested_target, report.target
    rows = [("status", report.status.upper()), ("database", report.database),
            ("requested target", requested.describe() if requested else "-"),
            ("used target", used.describe() if used else "-")]
    if plan and plan.fallback:
        rows.append(("fallback", f"{plan.fallback.step} because {plan.fallback.cause_code}"))
    if report.base_backup:
        b = report.base_backup
        rows.append(("base backup", f"{b.id} (WAL {b.start_lsn} .. {b.stop_lsn}, "
                                    f"{b.size_bytes / 1e6:.1f} MB)"))
    if plan:
        rows += [("predicted stop", plan.predicted.replay_lsn or "end of archive"),
                 ("predicted last kept", commit_text(plan.predicted.last_kept)),
                 ("predicted first dropped", commit_text(plan.predicted.first_dropped))]
    if recovered:
        held = {True: "held", False: "MISSED", None: "-"}[recovered.matches_prediction]
        rows += [("actual stop", recovered.replay_lsn or "-"),
                 ("last commit recovered", _when(recovered.last_commit_time)),
                 ("prediction", held)]
        if recovered.stop_reason:
            rows.append(("server said", recovered.stop_reason))
    rows += [("restore", f"{m.bytes_restored / 1e6:.1f} MB at {_number(m.restore_mb_per_s)} MB/s"),
             ("replay", f"{m.wal_bytes_replayed / 1e6:.1f} MB at {_number(m.replay_mb_per_s)} "
                        f"MB/s, {_number(m.transactions_replayed)} transactions at "
                        f"{_number(m.replay_transactions_per_s)}/s"),
             ("validation pass rate", ("-" if m.validation_pass_rate is None else
                                       f"{m.validation_pass_rate:.0%}")
              + f" ({m.checks_passed} of {m.checks_total} checks)"),
             ("time to verify", _number(m.time_to_verify_seconds, "s")),
             ("data given up vs requested", _number(m.data_lost_seconds, "s"))]
    if plan and plan.fallback and plan.fallback.transactions_given_up_at_least is not None:
        exact = plan.fallback.transactions_given_up is not None
        rows.append(("transactions given up", f"{'' if exact else 'at least '}"
                                              f"{plan.fallback.transactions_given_up_at_least}"))
    if isinstance(report, RecoveryReport):
        rows.append(("destination", report.destination))
        if report.decision:
            d = report.decision
            rows.append(("decision", f"{d.action} by {d.by} at {_when(d.at)}: {d.reason}"))
    rows += [("started", _when(report.started_at)), ("finished", _when(report.finished_at)),
             ("workflow id", report.workflow_id), ("run id", report.workflow_run_id or "-")]
    return rows


_HTML = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>pitrdrill {{ kind }} {{ report.drill_id }}: {{ report.status }}</title>
<style>
 body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 900px; color: #1c1c1c; }
 h1 { font-size: 1.4em; } h2 { font-size: 1.1em; margin-top: 1.6em; }
 .status { padding: .1em .5em; border-radius: 4px; color: #fff; background: {{ badge }}; }
 table { border-collapse: collapse; width: 100%; }
 th, td { text-align: left; padding: .25em .6em; border-bottom: 1px solid #ddd; vertical-align: top; }
 th { width: 14em; font-weight: 600; }
 code, .mono { font-family: ui-monospace, monospace; font-size: .95em; }
 svg text { font: 12px system-ui, sans-serif; fill: #1c1c1c; }
</style>
</head>
<body>
<h1>pitrdrill {{ kind }} <span class="mono">{{ report.drill_id }}</span>
 <span class="status">{{ report.status.upper() }}</span></h1>
<table>
{% for name, value in facts %}<tr><th>{{ name }}</th><td>{{ value }}</td></tr>
{% endfor %}</table>

<h2>Stage timeline</h2>
<svg role="img" aria-label="stage timeline" width="{{ tl.width }}" height="{{ tl.height }}"
     viewBox="0 0 {{ tl.width }} {{ tl.height }}">
{% for x, label in tl.ticks %} <line x1="{{ x }}" y1="18" x2="{{ x }}" y2="{{ tl.height }}" stroke="#ccc"/>
 <text x="{{ x }}" y="12" text-anchor="middle">{{ label }}</text>
{% endfor %}{% for bar in tl.bars %} <text x="4" y="{{ bar.y + 16 }}">{{ bar.stage }}</text>
 <rect x="{{ bar.x }}" y="{{ bar.y + 4 }}" width="{{ bar.width }}" height="16" fill="{{ bar.colour }}">
  <title>{{ bar.stage }}: {{ bar.outcome }} in {{ "%.3f"|format(bar.seconds) }}s</title></rect>
 <text x="{{ bar.x + bar.width + 4 }}" y="{{ bar.y + 16 }}">{{ "%.2f"|format(bar.seconds) }}s{% if bar.outcome == "failed" %} failed{% endif %}</text>
{% endfor %}</svg>

<h2>Stages</h2>
<table>
<tr><th>stage</th><th>started</th><th>seconds</th><th>outcome</th></tr>
{% for span in report.stages %}<tr><td>{{ span.stage }}</td><td>{{ when(span.started_at) }}</td>
<td>{{ "%.3f"|format(span.seconds) }}</td><td>{{ span.outcome }}</td></tr>
{% endfor %}</table>
{% if report.checks %}
<h2>Checks</h2>
<table>
<tr><th>check</th><th>verdict</th><th>observed</th><th>expected</th></tr>
{% for check in report.checks %}<tr><td>{{ check.name }}</td><td>{{ check.status }}</td>
<td class="mono">{{ check.observed }}</td><td class="mono">{{ check.expected }}{% if check.error %} ({{ check.error }}){% endif %}</td></tr>
{% endfor %}</table>
{% endif %}{% if report.errors %}
<h2>Errors</h2>
<table>
{% for error in report.errors %}<tr><th class="mono">{{ error.code }}</th><td>{{ error.message }}{% if error.hint %}<br><em>what to do:</em> {{ error.hint }}{% endif %}</td></tr>
{% endfor %}</table>
{% endif %}
</body>
</html>
"""

_MARKDOWN = """# pitrdrill {{ kind }} `{{ report.drill_id }}`: {{ report.status.upper() }}

| | |
| --- | --- |
{% for name, value in facts %}| {{ name }} | {{ cell(value) }} |
{% endfor %}
## Stages

| stage | started | seconds | outcome |
| --- | --- | ---: | --- |
{% for span in report.stages %}| {{ span.stage }} | {{ when(span.started_at) }} | {{ "%.3f"|format(span.seconds) }} | {{ span.outcome }} |
{% endfor %}{% if report.checks %}
## Checks

| check | verdict | observed | expected |
| --- | --- | --- | --- |
{% for check in report.checks %}| {{ cell(check.name) }} | {{ check.status }} | {{ cell(check.observed) }} | {{ cell(check.expected) }}{% if check.error %} ({{ cell(check.error) }}){% endif %} |
{% endfor %}{% endif %}{% if report.errors %}
## Errors

{% for error in report.errors %}- `{{ error.code }}`: {{ error.message }}{% if error.hint %} What to do: {{ error.hint }}{% endif %}
{% endfor %}{% endif %}"""


def _cell(value) -> str:
    """A Markdown table cell: one line, no column break."""
    return str(value).replace("|", "\\|").replace("\n", " ")


_PAGE = Environment(autoescape=True, undefined=StrictUndefined,
                    keep_trailing_newline=True).from_string(_HTML)
_TICKET = Environment(autoescape=False, undefined=StrictUndefined,
                      keep_trailing_newline=True).from_string(_MARKDOWN)


def _context(report: DrillReport) -> dict:
    return {"report": report, "facts": facts(report), "when": _when, "cell": _cell,
            "kind": "recovery" if isinstance(report, RecoveryReport) else "drill",
            "badge": "#2f7d4f" if report.status in ("verified", "promoted") else "#b3261e"}


def render_html(report: DrillReport) -> str:
    return _PAGE.render(tl=timeline(report), **_context(report))


def render_markdown(report: DrillReport) -> str:
    return _TICKET.render(**_context(report))
