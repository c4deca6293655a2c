from decimal import Decimal

import pytest

from domain.checks import verdict
from domain.errors import DrillError, ErrorCode
from domain.lsn import format_lsn, parse_lsn, parse_segment_name, segment_name, segment_number


@pytest.mark.parametrize("observed, expected, passed", [
    (3000, 3000, True), (3000, "3000", True), (Decimal("12.50"), 12.5, True),
    (2999, 3000, False), ("ok", "ok", True), (True, True, True), (None, None, True),
    (None, 0, False), ("void", "ok", False),
])
def test_check_verdicts(observed, expected, passed):
    assert verdict("c", observed, expected).passed is passed


def test_decimal_observations_become_json_numbers():
    assert verdict("c", Decimal("3000"), 3000).observed == 3000
    assert verdict("c", Decimal("12.5"), 12.5).observed == 12.5


def test_lsn_round_trip_and_segment_math():
    lsn = parse_lsn("5/2A3B7C00")
    assert lsn == (5 << 32) + 0x2A3B7C00 and format_lsn(lsn) == "5/2A3B7C00"
    segno = segment_number(lsn)
    assert segment_name(1, segno) == "00000001000000050000002A"
    assert parse_segment_name("00000001000000050000002A") == (1, segno)


@pytest.mark.parametrize("bad", ["", "5", "5/", "G/1", "1/2/3", "123456789/0"])
def test_bad_lsns_are_refused_with_a_code(bad):
    with pytest.raises(DrillError) as raised:
        parse_lsn(bad)
    assert raised.value.code == ErrorCode.LSN_INVALID
