"""The one catalogue of pitrdrill error codes.

Every refusal or failure carries a stable code from here, a message saying what was wrong, and a
hint saying what to do. Codes are API: tooling matches on them, so never rename one.
`kind` separates bad input (refused before anything exists, CLI exit 2) from failures while
running (CLI exit 1).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

ErrorKind = Literal["input", "runtime"]


class ErrorCode(StrEnum):
    SPEC_INVALID = "SPEC_INVALID"
    TARGET_MISSING = "TARGET_MISSING"
    TARGET_CONFLICT = "TARGET_CONFLICT"
    TARGET_UNPARSEABLE = "TARGET_UNPARSEABLE"
    TARGET_UNKNOWN_TIMEZONE = "TARGET_UNKNOWN_TIMEZONE"
    TARGET_NAIVE_TIME = "TARGET_NAIVE_TIME"
    TARGET_NONEXISTENT_LOCAL_TIME = "TARGET_NONEXISTENT_LOCAL_TIME"
    TARGET_AMBIGUOUS_LOCAL_TIME = "TARGET_AMBIGUOUS_LOCAL_TIME"
    TARGET_LEAP_SECOND = "TARGET_LEAP_SECOND"
    TARGET_PRECISION = "TARGET_PRECISION"
    TARGET_IN_FUTURE = "TARGET_IN_FUTURE"
    LSN_INVALID = "LSN_INVALID"
    XID_INVALID = "XID_INVALID"
    RESTORE_POINT_NAME_INVALID = "RESTORE_POINT_NAME_INVALID"
    TIMELINE_INVALID = "TIMELINE_INVALID"
    NO_BASE_BACKUP = "NO_BASE_BACKUP"
    BACKUP_METADATA_UNREADABLE = "BACKUP_METADATA_UNREADABLE"
    TARGET_BEFORE_EARLIEST_BACKUP = "TARGET_BEFORE_EARLIEST_BACKUP"
    TARGET_BEYOND_ARCHIVE = "TARGET_BEYOND_ARCHIVE"
    UNKNOWN_RESTORE_POINT = "UNKNOWN_RESTORE_POINT"
    UNKNOWN_XID = "UNKNOWN_XID"
    XID_ABORTED = "XID_ABORTED"
    WAL_CORRUPT = "WAL_CORRUPT"
    WAL_GAP = "WAL_GAP"
    BACKUP_CORRUPT = "BACKUP_CORRUPT"
    TIMELINE_NOT_FOUND = "TIMELINE_NOT_FOUND"
    TIMELINE_DIVERGED = "TIMELINE_DIVERGED"
    OVER_BUDGET = "OVER_BUDGET"
    ESCALATION_ABORTED = "ESCALATION_ABORTED"
    ESCALATION_TIMEOUT = "ESCALATION_TIMEOUT"
    PREFLIGHT_FAILED = "PREFLIGHT_FAILED"
    SANDBOX_FAILED = "SANDBOX_FAILED"
    RESTORE_FAILED = "RESTORE_FAILED"
    RECOVERY_FAILED = "RECOVERY_FAILED"
    RECOVERY_TARGET_NOT_REACHED = "RECOVERY_TARGET_NOT_REACHED"
    PREDICTION_MISMATCH = "PREDICTION_MISMATCH"
    CHECK_FAILED = "CHECK_FAILED"
    CHECK_ERROR = "CHECK_ERROR"
    CHECK_UNSAFE = "CHECK_UNSAFE"
    WARM_FAILED = "WARM_FAILED"
    TEMPORAL_UNAVAILABLE = "TEMPORAL_UNAVAILABLE"
    DRILL_CANCELLED = "DRILL_CANCELLED"
    SANDBOX_HOST_LOST = "SANDBOX_HOST_LOST"
    DATABASE_NOT_FOUND = "DATABASE_NOT_FOUND"
    ROLE_NOT_FOUND = "ROLE_NOT_FOUND"
    PATH_UNREACHABLE = "PATH_UNREACHABLE"
    DESTINATION_NOT_EMPTY = "DESTINATION_NOT_EMPTY"
    PROMOTION_FAILED = "PROMOTION_FAILED"
    BISECT_BAD_AT_GOOD_BOUND = "BISECT_BAD_AT_GOOD_BOUND"
    BISECT_GOOD_AT_BAD_BOUND = "BISECT_GOOD_AT_BAD_BOUND"
    BISECT_NO_CANDIDATES = "BISECT_NO_CANDIDATES"
    BISECT_PREDICATE_FAILED = "BISECT_PREDICATE_FAILED"
    BISECT_NOT_MONOTONIC = "BISECT_NOT_MONOTONIC"
    SYNTHETIC_TARGET_OUTSIDE_WINDOW = "SYNTHETIC_TARGET_OUTSIDE_WINDOW"
    SYNTHETIC_WINDOW_EMPTY = "SYNTHETIC_WINDOW_EMPTY"
    SCHEDULE_NOT_FOUND = "SCHEDULE_NOT_FOUND"
    SCHEDULE_EXISTS = "SCHEDULE_EXISTS"
    ARCHIVE_UNREADABLE_BY_SERVER = "ARCHIVE_UNREADABLE_BY_SERVER"
    SANDBOX_NO_SPACE = "SANDBOX_NO_SPACE"
    SANDBOX_PROVIDER_UNAVAILABLE = "SANDBOX_PROVIDER_UNAVAILABLE"
    REPORT_NOT_FOUND = "REPORT_NOT_FOUND"
    LEDGER_UNAVAILABLE = "LEDGER_UNAVAILABLE"
    LEDGER_QUERY_INVALID = "LEDGER_QUERY_INVALID"


@dataclass(frozen=True)
class ErrorInfo:
    kind: ErrorKind
    meaning: str
    hint: str


CATALOGUE: dict[ErrorCode, ErrorInfo] = {
    ErrorCode.SPEC_INVALID: ErrorInfo(
        "input",
        "The drill spec does not match the schema (missing field, wrong type, unknown key).",
        "Fix the field named in the message; `docs/spec.md` shows a complete example.",
    ),
    ErrorCode.TARGET_MISSING: ErrorInfo(
        "input",
        "No recovery target was given.",
        "Give exactly one of time, lsn, xid, name, immediate or latest.",
    ),
    ErrorCode.TARGET_CONFLICT: ErrorInfo(
        "input",
        "More than one recovery target mode was given.",
        "Keep exactly one of time, lsn, xid, name, immediate or latest.",
    ),
    ErrorCode.TARGET_UNPARSEABLE: ErrorInfo(
        "input",
        "The target time is not a date and time pitrdrill can read.",
        "Write it as ISO 8601 with a zone, e.g. '2024-01-15 14:30:00.123 America/New_York' "
        "or '2024-01-15T19:30:00Z'.",
    ),
    ErrorCode.TARGET_UNKNOWN_TIMEZONE: ErrorInfo(
        "input",
        "The time zone name is not in the IANA time zone database.",
        "Use an IANA name such as America/New_York, an offset such as -05:00, or UTC.",
    ),
    ErrorCode.TARGET_NAIVE_TIME: ErrorInfo(
        "input",
        "The target time has no zone or offset; PostgreSQL would read it in the recovered "
        "server's TimeZone, which may not be yours.",
        "Append a zone or offset (e.g. 'America/New_York', '-05:00', 'Z'), or set "
        "assume_timezone explicitly.",
    ),
    ErrorCode.TARGET_NONEXISTENT_LOCAL_TIME: ErrorInfo(
        "input",
        "The local time falls in a daylight-saving gap (clocks sprang forward) and never "
        "happened in that zone.",
        "Pick one of the instants named in the message, or give an explicit UTC offset.",
    ),
    ErrorCode.TARGET_AMBIGUOUS_LOCAL_TIME: ErrorInfo(
        "input",
        "The local time happened twice (clocks fell back), so it names two instants.",
        "Give an explicit offset (e.g. -04:00 or -05:00) or fold: earlier | later.",
    ),
    ErrorCode.TARGET_LEAP_SECOND: ErrorInfo(
        "input",
        "The time names a leap second (:60); PostgreSQL commit timestamps never carry one.",
        "Use one of the neighbouring instants named in the message.",
    ),
    ErrorCode.TARGET_PRECISION: ErrorInfo(
        "input",
        "The time has more precision than a microsecond; PostgreSQL timestamps stop there.",
        "Round to microseconds, deciding yourself which way keeps the data you need.",
    ),
    ErrorCode.TARGET_IN_FUTURE: ErrorInfo(
        "input",
        "The target time is later than now (beyond the clock-skew tolerance): recovery would "
        "replay all WAL and never stop at it.",
        "Check the zone of the time you typed; use latest if you mean the end of the archive.",
    ),
    ErrorCode.LSN_INVALID: ErrorInfo(
        "input",
        "The LSN is not in PostgreSQL's X/X hexadecimal form.",
        "Write it as pg_waldump and pg_current_wal_lsn() print it, e.g. 0/3000148.",
    ),
    ErrorCode.XID_INVALID: ErrorInfo(
        "input",
        "The transaction id is not a valid 32-bit xid or epoch-qualified 64-bit xid.",
        "Give a normal xid (3 and up) as pg_waldump prints it after 'tx:'.",
    ),
    ErrorCode.RESTORE_POINT_NAME_INVALID: ErrorInfo(
        "input",
        "The restore point name is empty or longer than PostgreSQL allows (63 bytes).",
        "Use the exact name given to pg_create_restore_point().",
    ),
    ErrorCode.TIMELINE_INVALID: ErrorInfo(
        "input",
        "The timeline is not 'current', 'latest' or a positive number.",
        "Use current, latest, or the timeline id from the .history files (1, 2, ...).",
    ),
    ErrorCode.NO_BASE_BACKUP: ErrorInfo(
        "input",
        "The backup source holds no base backup that finished before the target.",
        "Check the source path, or move the target later than the oldest backup's end.",
    ),
    ErrorCode.BACKUP_METADATA_UNREADABLE: ErrorInfo(
        "input",
        "A base backup's backup_label or backup_manifest is missing or cannot be read.",
        "Check the backup directory named in the message; take a new base backup if it is "
        "damaged.",
    ),
    ErrorCode.TARGET_BEFORE_EARLIEST_BACKUP: ErrorInfo(
        "input",
        "The target lies before the end of the oldest base backup; no backup can reach it.",
        "Choose a target after the oldest backup's consistency point (see the message).",
    ),
    ErrorCode.TARGET_BEYOND_ARCHIVE: ErrorInfo(
        "input",
        "The archived WAL ends before the target: PostgreSQL would replay everything and then "
        "fail with 'recovery ended before configured recovery target was reached'.",
        "Check archiving is current (pg_stat_archiver), or use latest / an earlier target.",
    ),
    ErrorCode.UNKNOWN_RESTORE_POINT: ErrorInfo(
        "input",
        "No restore point with that name is in the archived WAL after the base backup.",
        "List restore points with `pitrdrill investigate`; names are case-sensitive.",
    ),
    ErrorCode.UNKNOWN_XID: ErrorInfo(
        "input",
        "The transaction id never commits or aborts in the archived WAL after the base backup.",
        "Check the xid with `pitrdrill investigate`; it may predate the backup.",
    ),
    ErrorCode.XID_ABORTED: ErrorInfo(
        "input",
        "The transaction id aborted, so recovery would never stop at it.",
        "Target a committed transaction, or use a time or LSN target.",
    ),
    ErrorCode.WAL_CORRUPT: ErrorInfo(
        "input",
        "pg_waldump cannot read an archived WAL segment that recovery needs.",
        "Restore the named segment from another copy of the archive, target a point before "
        "it, or add last_consistent_before_gap to the spec's fallback chain.",
    ),
    ErrorCode.WAL_GAP: ErrorInfo(
        "input",
        "A WAL segment between the backup and the target is missing from the archive; replay "
        "would end there.",
        "Restore the named segment into the archive, target a point before it, or add "
        "last_consistent_before_gap to the spec's fallback chain.",
    ),
    ErrorCode.BACKUP_CORRUPT: ErrorInfo(
        "input",
        "The chosen base backup fails verification (pg_verifybackup or pgbackrest verify).",
        "Take a new base backup, or add earlier_backup to the spec's fallback chain.",
    ),
    ErrorCode.TIMELINE_NOT_FOUND: ErrorInfo(
        "input",
        "The requested timeline has no history file and no segments in the archive.",
        "List the archive's *.history files; use latest or one of the timelines named.",
    ),
    ErrorCode.TIMELINE_DIVERGED: ErrorInfo(
        "input",
        "The target lies on a timeline branch that the requested timeline does not contain.",
        "Request the timeline named in the message (or latest if it is the newest).",
    ),
    ErrorCode.OVER_BUDGET: ErrorInfo(
        "input",
        "The plan's estimated duration exceeds the spec's budget.",
        "Raise budget.max_seconds, pick a later base backup or a nearer target.",
    ),
    ErrorCode.ESCALATION_ABORTED: ErrorInfo(
        "input",
        "Pre-flight failed, the drill was escalated, and a human chose abort.",
        "Nothing was created; read the escalation reason in the report.",
    ),
    ErrorCode.ESCALATION_TIMEOUT: ErrorInfo(
        "input",
        "Pre-flight failed, the drill was escalated, and nobody decided in time.",
        "Nothing was created; re-run the drill, or raise the escalation timeout.",
    ),
    ErrorCode.PREFLIGHT_FAILED: ErrorInfo(
        "runtime",
        "Pre-flight could not finish: reading the catalog or the archive failed unexpectedly.",
        "Read the message (permissions, a dead mount?); nothing was created. Retry once fixed.",
    ),
    ErrorCode.SANDBOX_FAILED: ErrorInfo(
        "runtime",
        "The isolated sandbox could not be created.",
        "Check disk space and permissions under the sandbox root named in the message.",
    ),
    ErrorCode.RESTORE_FAILED: ErrorInfo(
        "runtime",
        "Copying the base backup into the sandbox failed.",
        "Check the backup directory is readable and the sandbox disk has room.",
    ),
    ErrorCode.RECOVERY_FAILED: ErrorInfo(
        "runtime",
        "The sandbox PostgreSQL stopped during recovery.",
        "Read the server log excerpt in the message (the sandbox itself is torn down).",
    ),
    ErrorCode.RECOVERY_TARGET_NOT_REACHED: ErrorInfo(
        "runtime",
        "Recovery consumed all archived WAL without reaching the target.",
        "The archive ends before the target: choose an earlier target or check archiving.",
    ),
    ErrorCode.PREDICTION_MISMATCH: ErrorInfo(
        "runtime",
        "PostgreSQL stopped at a different point than pitrdrill predicted from the WAL.",
        "Do not trust this recovery point; report the drill id with both LSNs.",
    ),
    ErrorCode.CHECK_FAILED: ErrorInfo(
        "runtime",
        "A smoke check returned a value other than expected.",
        "Compare observed and expected in the report; the target may be wrong.",
    ),
    ErrorCode.CHECK_ERROR: ErrorInfo(
        "runtime",
        "A smoke check's SQL raised an error in the recovered database.",
        "Fix the check's SQL; it runs read-only against the recovered data.",
    ),
    ErrorCode.CHECK_UNSAFE: ErrorInfo(
        "input",
        "A check's SQL names something a check may not do: a server-side file or program "
        "function, COPY, a role or setting change, transaction control, SQL run from a string "
        "(DO, query_to_xml, ts_stat), or more than one statement.",
        "Make the check named one read-only query without the construct named; checks run as "
        "pg_read_all_data, with no file or program access.",
    ),
    ErrorCode.WARM_FAILED: ErrorInfo(
        "runtime",
        "Loading the spec's relations into the sandbox's cache failed (after every check "
        "passed).",
        "Check the relation names under `warm.relations` exist in the recovered database.",
    ),
    ErrorCode.TEMPORAL_UNAVAILABLE: ErrorInfo(
        "runtime",
        "The Temporal server could not be reached.",
        "Check TEMPORAL_ADDRESS, or run with --embedded for a one-off local run.",
    ),
    ErrorCode.DRILL_CANCELLED: ErrorInfo(
        "runtime",
        "The drill was cancelled (CLI, API or Temporal UI); its sandbox was torn down.",
        "Nothing to clean up. Start it again with the same spec when wanted.",
    ),
    ErrorCode.SANDBOX_HOST_LOST: ErrorInfo(
        "runtime",
        "The host holding the drill's sandbox did not come back within the wait allowed.",
        "Bring the worker on that host back (its sandbox work resumes), or stop the server "
        "and remove the drill's directory under that host's sandbox root; then run again.",
    ),
    ErrorCode.DATABASE_NOT_FOUND: ErrorInfo(
        "runtime",
        "The spec's database does not exist in the backup (found as soon as the sandbox "
        "accepted connections, before replaying to the target).",
        "Set `database` to one of the databases the message lists.",
    ),
    ErrorCode.ROLE_NOT_FOUND: ErrorInfo(
        "runtime",
        "The spec's db_user is not a role of the backed-up cluster.",
        "Set `db_user` to one of the roles the message lists (default: postgres).",
    ),
    ErrorCode.DESTINATION_NOT_EMPTY: ErrorInfo(
        "input",
        "A recovery's destination exists and is not an empty directory.",
        "Name an absent or empty directory; nothing in the one named was touched.",
    ),
    ErrorCode.PROMOTION_FAILED: ErrorInfo(
        "runtime",
        "The recovered server could not be promoted or reopened as the approval asked.",
        "Read the server log excerpt; the data directory is kept as it was, paused.",
    ),
    ErrorCode.PATH_UNREACHABLE: ErrorInfo(
        "input",
        "A directory the PostgreSQL OS user must use lies under one it cannot enter "
        "(e.g. a clone in /root, mode 0700).",
        "Follow the message: move the directory, point PITRDRILL_WORK_ROOT elsewhere, or "
        "grant the server user search (x) permission on the directory named.",
    ),
    ErrorCode.BISECT_BAD_AT_GOOD_BOUND: ErrorInfo(
        "input",
        "Bisect: the --bad-when predicate is already true at the good bound, so no "
        "transaction between the bounds can be the first bad one (both observations are in "
        "the message).",
        "Give an earlier --good-at (an older backup is chosen when needed), or fix the "
        "predicate: it must be true only when the damage is present.",
    ),
    ErrorCode.BISECT_GOOD_AT_BAD_BOUND: ErrorInfo(
        "input",
        "Bisect: the --bad-when predicate is still false at the bad bound, so no transaction "
        "between the bounds makes it true (both observations are in the message).",
        "Give a later --bad-at (default: the end of the archive), or try the predicate on the "
        "damaged database first.",
    ),
    ErrorCode.BISECT_NO_CANDIDATES: ErrorInfo(
        "input",
        "Bisect: no committed transaction lies between the good and the bad bound (with "
        "--relation: none that touched the relation). Aborted transactions never count.",
        "Move the bounds apart, or drop --relation.",
    ),
    ErrorCode.BISECT_PREDICATE_FAILED: ErrorInfo(
        "runtime",
        "Bisect: the --bad-when query raised an error in the sandbox, or returned something "
        "other than one boolean.",
        "Make it one read-only query returning true when the damage is present, e.g. "
        "select count(*) > 0 from orders where status = 'void'.",
    ),
    ErrorCode.BISECT_NOT_MONOTONIC: ErrorInfo(
        "runtime",
        "Bisect: two observations contradict each other (a state judged damaged lies at or "
        "before one judged clean): the damage comes and goes, or the predicate depends on "
        "more than the data, so there is no single first bad transaction.",
        "Read the probes named in the message; narrow the bounds around one transition, or "
        "make the predicate true once the damage is done, whatever follows.",
    ),
    ErrorCode.SYNTHETIC_TARGET_OUTSIDE_WINDOW: ErrorInfo(
        "input",
        "A synthetic `ago:<duration>` target falls outside the restorable window (before the "
        "oldest backup is consistent, or after the newest commit).",
        "Use a shorter or longer duration inside the window the message gives (`pitrdrill "
        "plan` shows it), or `random-in-window` / `latest`.",
    ),
    ErrorCode.SYNTHETIC_WINDOW_EMPTY: ErrorInfo(
        "input",
        "A synthetic target needs a restorable window with time bounds, and this source has "
        "none (no commit after the oldest backup, or no backup end time).",
        "Check that the archive holds WAL with commits after the oldest backup (`pitrdrill "
        "plan`), or name a fixed target instead of a synthetic one.",
    ),
    ErrorCode.SCHEDULE_NOT_FOUND: ErrorInfo(
        "input",
        "No drill schedule of that name exists on this Temporal server.",
        "List the schedules with `pitrdrill schedule list`.",
    ),
    ErrorCode.SCHEDULE_EXISTS: ErrorInfo(
        "input",
        "A schedule of that name already exists; nothing was changed.",
        "Pick another name, or `pitrdrill schedule delete NAME` first to replace it.",
    ),
    ErrorCode.ARCHIVE_UNREADABLE_BY_SERVER: ErrorInfo(
        "input",
        "The WAL archive is readable by the worker but not by the PostgreSQL OS user that the "
        "sandbox server's restore_command and pg_waldump run as (a directory it cannot enter, "
        "or segments it cannot read): recovery would fail on the first segment it fetches.",
        "Run the chmod the message names (e.g. `chmod -R o+rX ARCHIVE`), or give the archive a "
        "group the server user belongs to; pitrdrill only ever reads the archive.",
    ),
    ErrorCode.SANDBOX_NO_SPACE: ErrorInfo(
        "runtime",
        "The file system holding the sandbox has less free space than the restore needs "
        "(the message names both, in bytes); nothing was copied.",
        "Free space there or point PITRDRILL_SANDBOX_ROOT at a larger file system; "
        "`pitrdrill sandbox reap` removes sandboxes left behind by earlier drills.",
    ),
    ErrorCode.SANDBOX_PROVIDER_UNAVAILABLE: ErrorInfo(
        "runtime",
        "The sandbox provider asked for cannot run a sandbox on this host (Docker unreachable, "
        "its image missing, or a use the provider does not support); nothing was created.",
        "Follow the message: start Docker, run `make images`, or choose `sandbox: {provider: "
        "local}` in the spec (or PITRDRILL_SANDBOX_PROVIDER on the worker).",
    ),
    ErrorCode.REPORT_NOT_FOUND: ErrorInfo(
        "input",
        "The drill ledger holds no drill or recovery with that id.",
        "List what it holds with `pitrdrill report list`; check --ledger (PITRDRILL_LEDGER) "
        "names the ledger the workers append to.",
    ),
    ErrorCode.LEDGER_UNAVAILABLE: ErrorInfo(
        "runtime",
        "The drill ledger could not be opened, created or read: no SQLite file at that path, "
        "or the PostgreSQL ledger database refused or could not be reached.",
        "Point --ledger (PITRDRILL_LEDGER) at the workers' ledger: a SQLite file path or a "
        "postgresql:// DSN whose role may create and write the table pitrdrill_ledger.",
    ),
    ErrorCode.LEDGER_QUERY_INVALID: ErrorInfo(
        "input",
        "A ledger query could not be read (e.g. --since is neither a span, a date, nor a time "
        "with its zone).",
        "Use --since 30d (or 12h, 90m, 2w), a date such as 2026-11-01, or a time with its zone.",
    ),
}


class DrillError(Exception):
    """A domain failure with a stable code. The hint defaults to the catalogue's."""

    def __init__(self, code: ErrorCode, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.hint = hint or CATALOGUE[code].hint

    def __reduce__(self):
        return (DrillError, (self.code, self.message, self.hint))

    @property
    def kind(self) -> ErrorKind:
        return CATALOGUE[self.code].kind

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


def kind_of(code: str) -> ErrorKind:
    """Kind for a code that may come back as a plain string across Temporal."""
    try:
        return CATALOGUE[ErrorCode(code)].kind
    except ValueError:
        return "runtime"


def render_markdown() -> str:
    """The catalogue as the table in docs/errors.md (kept in sync by a unit test)."""
    lines = [
        "# Error codes",
        "",
        "Generated from `domain/errors.py` (`python -m domain.errors > docs/errors.md`).",
        "`input` errors are refused before anything is created (CLI exit 2); `runtime` errors",
        "happen while a drill runs (CLI exit 1).",
        "",
        "| code | kind | meaning | what to do |",
        "| --- | --- | --- | --- |",
    ]
    for code, info in CATALOGUE.items():
        lines.append(f"| `{code}` | {info.kind} | {info.meaning} | {info.hint} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(render_markdown(), end="")
