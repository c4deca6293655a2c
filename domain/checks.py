"""Smoke check verdicts: does what the recovered database says equal what the spec expects?"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from domain.report import CheckResult


def _as_number(value: Any) -> Decimal | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float, Decimal)):
        return Decimal(str(value))
    if isinstance(value, str):
        try:
            return Decimal(value.strip())
        except InvalidOperation:
            return None
    return None


def values_match(observed: Any, expected: Any) -> bool:
    """Numbers compare by value (count(*) is 3000 whether int or '3000'); the rest exactly."""
    left, right = _as_number(observed), _as_number(expected)
    if left is not None and right is not None:
        return left == right
    if isinstance(expected, str) and not isinstance(observed, str) and observed is not None:
        return str(observed) == expected
    return observed == expected


def json_safe(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def verdict(name: str, observed: Any, expected: Any) -> CheckResult:
    observed = json_safe(observed)
    return CheckResult(
        name=name, passed=values_match(observed, expected), observed=observed, expected=expected
    )
