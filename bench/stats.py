"""Medians, the table of ratios, and its JSON form.

Every ratio is pitrdrill time / baseline time, so below 1 means pitrdrill is faster. Targets
stated as speed ("at least 1.5x pg_waldump") are turned into that same time ratio.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from bench.trials import Timing


def size(n: int) -> str:
    return f"{n / (1 << 30):.2f} GiB" if n >= 1 << 30 else f"{n / (1 << 20):.0f} MiB"


@dataclass(frozen=True)
class Sample:
    values: tuple[float, ...]

    @classmethod
    def of(cls, timings: Iterable[Timing], part: str | None = None) -> Sample:
        return cls(tuple(t.seconds if part is None else t.parts[part] for t in timings))

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    def cell(self) -> str:
        return f"{self.median:7.2f} [{min(self.values):.2f}-{max(self.values):.2f}]"

    def as_json(self) -> dict:
        return {"median": self.median, "min": min(self.values), "max": max(self.values),
                "values": list(self.values)}


@dataclass(frozen=True)
class Goal:
    text: str
    limit: float
    on: Literal["ratio", "seconds"]  # the time ratio, or pitrdrill's median seconds

    def met(self, ratio: float | None, seconds: float | None) -> bool | None:
        value = ratio if self.on == "ratio" else seconds
        return None if value is None else value <= self.limit


@dataclass
class Row:
    section: str
    figure: str
    baseline_name: str
    baseline: Sample | None
    candidate: Sample | None
    goal: Goal | None = None
    details: list[str] = field(default_factory=list)  # printed under the row
    unavailable: str | None = None  # why there is no figure (never a made-up number)
    # Every run's phases or stages, for the JSON only: a median hides a bimodal stage.
    runs: dict[str, list[dict[str, float]]] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        if self.baseline is None or self.candidate is None or self.baseline.median <= 0:
            return None
        return self.candidate.median / self.baseline.median

    @property
    def verdict(self) -> str:
        if self.goal is None:
            return ""
        met = self.goal.met(self.ratio, self.candidate.median if self.candidate else None)
        return {True: "PASS", False: "MISS", None: "N/A"}[met]

    def as_json(self) -> dict:
        return {
            "section": self.section, "figure": self.figure, "baseline": self.baseline_name,
            "baseline_seconds": self.baseline.as_json() if self.baseline else None,
            "pitrdrill_seconds": self.candidate.as_json() if self.candidate else None,
            "ratio": self.ratio, "target": self.goal.text if self.goal else None,
            "verdict": self.verdict or None, "details": self.details,
            "unavailable": self.unavailable, "runs": self.runs,
        }


_COLUMNS = "{:<3} {:<42} {:<34} {:>22} {:>22} {:>6}  {:<22} {}"


def render(rows: list[Row]) -> str:
    lines = [_COLUMNS.format("#", "figure", "baseline", "baseline s med [min-max]",
                             "pitrdrill s med [min-max]", "ratio", "target", "")]
    lines.append("-" * len(lines[0]))
    for row in rows:
        ratio = f"{row.ratio:.3f}" if row.ratio is not None else "-"
        verdict = f"{row.verdict}  {row.unavailable or ''}".strip()
        lines.append(_COLUMNS.format(
            row.section, row.figure, row.baseline_name,
            row.baseline.cell() if row.baseline else "-",
            row.candidate.cell() if row.candidate else "-",
            ratio, row.goal.text if row.goal else "", verdict,
        ))
        lines += [f"      {detail}" for detail in row.details]
    return "\n".join(lines)


def medians_line(label: str, timings: list[Timing], skip: str = "") -> str:
    """'label: a 1.20 · b 0.30': each part's median over the runs, in the order they ran."""
    names = [n for n in dict.fromkeys(n for t in timings for n in t.parts) if n != skip]
    values = {name: statistics.median(t.parts.get(name, 0.0) for t in timings) for name in names}
    return f"{label}: " + " · ".join(f"{name} {value:.2f}" for name, value in values.items())
