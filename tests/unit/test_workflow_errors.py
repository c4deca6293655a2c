"""How the drill workflow names failures that are not domain errors."""

from domain.errors import ErrorCode
from workflows.recovery_path import error_entry as _error_entry


def test_an_unexpected_failure_is_named_by_the_stage_never_as_bad_input():
    entry = _error_entry(PermissionError("archive not readable by postgres"),
                         ErrorCode.PREFLIGHT_FAILED)
    assert entry.code == "PREFLIGHT_FAILED" and "not readable" in entry.message

