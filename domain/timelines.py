"""Timeline history as recovery follows it: .history files, the timeline
recovery_target_timeline chooses, and the events replayed along its path. Pure: no I/O.
"""

from __future__ import annotations

from pydantic import BaseModel

from domain.lsn import parse_lsn
from domain.wal_records import WalEvent


class TimelineSwitch(BaseModel):
    """One line of a .history file: `parent` was left for its child at `switch_lsn`."""

    parent: int
    switch_lsn: str
    reason: str


class TimelineHistory(BaseModel):
    timeline: int
    switches: list[TimelineSwitch] = []  # ancestors, oldest first

    def span_end(self, timeline: int) -> int | None:
        """Where the path leaves `timeline` (None: it is the path's own, open-ended)."""
        for switch in self.switches:
            if switch.parent == timeline:
                return parse_lsn(switch.switch_lsn)
        return None

    def timeline_at(self, lsn: int) -> int:
        """The timeline the path is on at `lsn`."""
        for switch in self.switches:
            if lsn < parse_lsn(switch.switch_lsn):
                return switch.parent
        return self.timeline

    @property
    def timelines(self) -> set[int]:
        return {s.parent for s in self.switches} | {self.timeline}


def parse_history(text: str, timeline: int) -> TimelineHistory:
    """A TTTTTTTT.history file: `parentTLI<tab>switchpoint<tab>reason` lines, # comments."""
    switches = []
    for line in text.splitlines():
        fields = line.strip().split(None, 2)
        if not fields or fields[0].startswith("#"):
            continue
        if len(fields) < 2 or not fields[0].isdigit():
            raise ValueError(f"unreadable line in {timeline:08X}.history: {line!r}")
        reason = fields[2] if len(fields) > 2 else ""
        switches.append(TimelineSwitch(parent=int(fields[0]), switch_lsn=fields[1], reason=reason))
    return TimelineHistory(timeline=timeline, switches=switches)


def choose_timeline(setting: str, backup_timeline: int,
                    histories: dict[int, TimelineHistory]) -> TimelineHistory:
    """recovery_target_timeline: current is the backup's; latest is found like
    findNewestTimeLine, probing history files upwards until one is missing."""
    if setting == "current":
        chosen = backup_timeline
    elif setting == "latest":
        chosen = backup_timeline
        while chosen + 1 in histories:
            chosen += 1
    else:
        chosen = int(setting)
    return histories.get(chosen, TimelineHistory(timeline=chosen))


def on_timeline(events: list[WalEvent], history: TimelineHistory) -> list[WalEvent]:
    """The events recovery replays following `history`, in WAL order: each timeline's events
    until the path leaves it. A child's first segment repeats its parent's WAL up to the
    switch point, so copies at the same position are kept once."""
    kept: dict[int, WalEvent] = {}
    for event in events:
        if event.timeline not in history.timelines:
            continue
        leaves_at = history.span_end(event.timeline)
        if leaves_at is None or event.start < leaves_at:
            kept.setdefault(event.start, event)
    return [kept[start] for start in sorted(kept)]
