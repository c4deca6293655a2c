"""`pitrdrill investigate --plot`: the commits around the incident as a timeline, PNG or SVG.

matplotlib is an optional extra (`pitrdrill[plot]`) and takes about a second to import: it is
imported only when a plot is drawn.
"""

from __future__ import annotations

import importlib.util
from collections import Counter
from datetime import datetime, timedelta, tzinfo
from pathlib import Path

from adapters.investigation import InvestigationReport
from domain.errors import DrillError, ErrorCode
from domain.investigation import Investigation
from domain.lsn import parse_lsn
from domain.prediction import CommitRef
from workers.investigation_text import duration, local_time, zone_name

PLOT_FORMATS = (".png", ".svg")
_OVERVIEW_BINS = 60
_BIN_SECONDS = (0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1800, 3600)
_ZOOM_PAD_S = 0.25


def require_matplotlib() -> None:
    """Refuse --plot before any work when the plot extra is not installed."""
    if importlib.util.find_spec("matplotlib") is None:
        raise DrillError(ErrorCode.SPEC_INVALID, "--plot needs matplotlib, which is not installed",
                         "pip install 'pitrdrill[plot]'")


def _bin_seconds(span_seconds: float) -> float:
    """A round bar width giving about _OVERVIEW_BINS bars across the window."""
    wanted = span_seconds / _OVERVIEW_BINS
    return next((width for width in _BIN_SECONDS if width >= wanted), _BIN_SECONDS[-1])


def _boundary(found: Investigation) -> tuple[CommitRef | None, CommitRef | None]:
    """The recommended target's last kept and first dropped commits."""
    recommended = found.recommendations.recommended
    if recommended is None:
        return None, None
    return recommended.last_kept, recommended.first_dropped


def _target_instant(found: Investigation) -> datetime | None:
    """Where the recommended LSN target falls on a time axis: between the commit it keeps
    last and the one it drops first."""
    kept, dropped = _boundary(found)
    if dropped is None:
        return None
    if kept is None:
        return dropped.commit_time
    return kept.commit_time + (dropped.commit_time - kept.commit_time) / 2


def _zoom_range(found: Investigation) -> tuple[datetime, datetime]:
    """The incident, the recommended stop's two sides and the burst it cuts off, padded."""
    kept, dropped = _boundary(found)
    instants = [found.around] + [ref.commit_time for ref in (kept, dropped) if ref is not None]
    instants += [b.last.commit_time for b in found.bursts if dropped and b.first.xid == dropped.xid]
    low, high = min(instants), max(instants)
    pad = max((high - low) * 0.15, timedelta(seconds=_ZOOM_PAD_S))
    return low - pad, high + pad


_LABEL_BOX = {"boxstyle": "round,pad=0.2", "facecolor": "white", "edgecolor": "none",
              "alpha": 0.85}


def _mark(axes, found: Investigation, low: datetime, high: datetime) -> None:
    """The incident, the bursts in [low, high] and the recommended target, the same on both
    panels (a burst outside the panel would only crowd its legend)."""
    axes.axvline(found.around, color="black", linestyle="--", linewidth=1.2,
                 label="incident (--around)")
    for n, burst in enumerate(found.bursts, 1):
        if burst.last.commit_time >= low and burst.first.commit_time <= high:
            axes.axvspan(burst.first.commit_time, burst.last.commit_time, color="tab:red",
                         alpha=0.15, label=f"burst {n}: {burst.commits} commits in "
                                           f"{burst.seconds:.3f}s, xid {burst.first.xid}.."
                                           f"{burst.last.xid}")
    target = _target_instant(found)
    if target is not None:
        axes.axvline(target, color="tab:green", linewidth=2.2, label="recommended: "
                     + found.recommendations.recommended.target.describe())


def _overview(axes, found: Investigation, zone: tzinfo) -> None:
    """Commits per interval across the whole window, with the margin targets that fall in it."""
    window = timedelta(seconds=found.window_seconds)
    start, end = found.around - window, found.around + window
    width = _bin_seconds(2 * found.window_seconds)
    counts = Counter(int((row.commit_time - start).total_seconds() // width)
                     for row in found.commits)
    bins = sorted(counts)
    axes.bar([start + timedelta(seconds=i * width) for i in bins], [counts[i] for i in bins],
             width=width / 86400, align="edge", color="tab:blue",  # date axes count in days
             label=f"commits per {duration(width)}")
    _mark(axes, found, start, end)
    for margin in sorted({c.margin_seconds for c in found.recommendations.margins}):
        at = found.around - timedelta(seconds=margin)
        if start <= at:
            axes.axvline(at, color="grey", linestyle=":", linewidth=1)
            axes.annotate(f"-{duration(margin)}", (at, 0.98), xycoords=("data", "axes fraction"),
                          rotation=90, va="top", ha="right", fontsize=8, color="dimgrey")
    axes.set_xlim(start, end)
    axes.set_ylabel("commits")
    axes.set_title(f"Commits within {duration(found.window_seconds)} of the incident at "
                   f"{local_time(found.around, zone)} (dotted grey: safety-margin time targets)")
    axes.legend(loc="upper right", fontsize=8)


def _zoom(axes, found: Investigation, zone: tzinfo) -> None:
    """Each commit near the recommended stop as a stem: kept green, dropped red."""
    low, high = _zoom_range(found)
    kept, dropped = _boundary(found)
    rows = [row for row in found.commits if low <= row.commit_time <= high]
    cut = None if dropped is None else parse_lsn(dropped.lsn)
    colours = ["tab:green" if cut is None or parse_lsn(row.lsn) < cut else "tab:red"
               for row in rows]
    axes.vlines([row.commit_time for row in rows], 0, 1, colors=colours, linewidth=1)
    axes.scatter([row.commit_time for row in rows], [1] * len(rows), c=colours, s=12, zorder=3)
    _mark(axes, found, low, high)
    for ref, what, height in ((kept, "last kept", 1.2), (dropped, "first dropped", 1.45)):
        if ref is not None:
            axes.annotate(f"{what}: xid {ref.xid}\n{local_time(ref.commit_time, zone)}",
                          (ref.commit_time, 1), (ref.commit_time, height), fontsize=8,
                          ha="center", bbox=_LABEL_BOX,
                          arrowprops={"arrowstyle": "->", "color": "dimgrey"})
    if kept is not None and dropped is not None:
        gap = dropped.commit_time - kept.commit_time
        axes.annotate("", (kept.commit_time, 0.5), (dropped.commit_time, 0.5),
                      arrowprops={"arrowstyle": "<->"})
        axes.annotate(f"gap {gap.total_seconds() * 1000:.3f} ms",
                      (kept.commit_time + gap / 2, 0.56), fontsize=9, ha="center",
                      bbox=_LABEL_BOX)
    axes.set_xlim(low, high)
    axes.set_ylim(0, 1.75)
    axes.set_yticks([])
    axes.set_xlabel(f"commit time ({zone_name(zone)})")
    axes.set_title("Each commit near the recommended stop (green: kept, red: dropped)")
    axes.legend(loc="upper right", fontsize=8)


def write_plot(report: InvestigationReport, zone: tzinfo, path: Path) -> None:
    # Agg draws to files with no display.
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import dates, pyplot, ticker

    found = report.investigation
    figure, (overview, zoom) = pyplot.subplots(2, 1, figsize=(13, 8.5), layout="constrained")
    try:
        _overview(overview, found, zone)
        overview.xaxis.set_major_formatter(dates.DateFormatter("%H:%M:%S", tz=zone))
        _zoom(zoom, found, zone)
        zoom.xaxis.set_major_formatter(ticker.FuncFormatter(
            lambda x, _: dates.num2date(x, tz=zone).strftime("%H:%M:%S.%f")[:-3]))
        figure.suptitle(f"pitrdrill investigate: {report.archive} (timeline {report.timeline})"
                        + (f", only {report.relation.relation}" if report.relation else ""))
        figure.savefig(path, dpi=110)
    finally:
        pyplot.close(figure)
