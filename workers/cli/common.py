"""What every command shares: exit codes, refusals, reading a spec, the Temporal connection,
and the target arguments."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml
from pydantic import ValidationError
from temporalio.client import Client

from adapters.schema_snapshot import inline_snapshots
from domain.errors import DrillError, ErrorCode
from domain.report import ErrorEntry
from domain.spec import DrillSpec, refuse_unsafe_checks
from workers.client import connect

EXIT_OK, EXIT_FAILED, EXIT_REJECTED, EXIT_UNAVAILABLE, EXIT_CANCELLED = 0, 1, 2, 3, 4
EXIT_FOR_STATUS = {"verified": EXIT_OK, "failed": EXIT_FAILED, "rejected": EXIT_REJECTED}


class Refusal(Exception):
    """Ends a command with an error entry and an exit code (no traceback at 3 a.m.)."""

    def __init__(self, status: str, error: ErrorEntry, exit_code: int) -> None:
        super().__init__(error.message)
        self.status, self.error, self.exit_code = status, error, exit_code


_STATUS_EXIT = {ErrorCode.TEMPORAL_UNAVAILABLE: ("failed", EXIT_UNAVAILABLE),
                ErrorCode.DRILL_CANCELLED: ("cancelled", EXIT_CANCELLED)}


def refusal(error: DrillError) -> Refusal:
    """The exit a DrillError means: input refused (2), Temporal gone (3), cancelled (4),
    anything else failed while running (1)."""
    if error.code in _STATUS_EXIT:
        status, code = _STATUS_EXIT[error.code]
    elif error.kind == "input":
        status, code = "rejected", EXIT_REJECTED
    else:
        status, code = "failed", EXIT_FAILED
    return Refusal(status, ErrorEntry.from_error(error), code)


def load_spec(path: str, model: type[DrillSpec] = DrillSpec, **overrides) -> DrillSpec:
    """A spec file (YAML or JSON, '-' for stdin) as `model`, command-line values winning;
    a `schema` check's snapshot path read in (relative to the spec)."""
    try:
        raw = sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
        fields = inline_snapshots(yaml.safe_load(raw.decode("utf-8")), path)
        if overrides and isinstance(fields, dict):
            fields.update({k: v for k, v in overrides.items() if v is not None})
        spec = model.model_validate(fields)
        refuse_unsafe_checks(spec)
        return spec
    except UnicodeDecodeError as exc:
        raise refusal(DrillError(ErrorCode.SPEC_INVALID,
                                 f"{path} is not UTF-8 text (byte {exc.start}: {exc.reason})",
                                 "Save the spec as UTF-8 YAML or JSON.")) from None
    except (OSError, yaml.YAMLError) as exc:
        raise refusal(DrillError(ErrorCode.SPEC_INVALID, f"cannot read {path}: {exc}")) from None
    except DrillError as error:
        raise refusal(error) from None
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'spec'}: {e['msg']}" for e in exc.errors()
        )
        raise refusal(DrillError(ErrorCode.SPEC_INVALID, f"{path}: {problems}")) from None


async def connected() -> Client:
    try:
        return await connect()
    except RuntimeError as exc:
        raise refusal(DrillError(ErrorCode.TEMPORAL_UNAVAILABLE, str(exc))) from exc


def given_target(args: argparse.Namespace) -> dict:
    given = {
        "time": args.time, "lsn": args.lsn, "xid": args.xid, "name": args.name,
        "immediate": args.immediate, "latest": args.latest, "inclusive": args.inclusive,
        "action": args.action, "timeline": args.timeline,
        "assume_timezone": args.assume_timezone, "fold": args.fold,
    }
    return {k: v for k, v in given.items() if v is not None}


def add_target_arguments(parser: argparse.ArgumentParser, required: bool) -> None:
    modes = parser.add_mutually_exclusive_group(required=required)
    modes.add_argument("--time", help="e.g. '2024-01-15 14:30:00.123 America/New_York'")
    modes.add_argument("--lsn", help="e.g. 0/3000148")
    modes.add_argument("--xid", help="transaction id (32-bit or epoch-qualified 64-bit)")
    modes.add_argument("--name", help="restore point name")
    modes.add_argument("--immediate", action="store_true", default=None,
                       help="stop at the end of the base backup")
    modes.add_argument("--latest", action="store_true", default=None,
                       help="replay the whole archive")
    parser.add_argument("--inclusive", action="store_true", default=None,
                        help="replay the target transaction too (default: exclusive)")
    parser.add_argument("--action", choices=["pause", "promote", "shutdown"])
    parser.add_argument("--timeline", help="current | latest | N")
    parser.add_argument("--assume-timezone", help="zone for a time written without one")
    parser.add_argument("--fold", choices=["earlier", "later"],
                        help="which reading of a time that happened twice (DST fall-back)")


def add_json(parser: argparse.ArgumentParser, what: str = "print JSON") -> None:
    parser.add_argument("--json", action="store_true", help=what)
