"""LSN and WAL segment arithmetic, exactly as PostgreSQL does it.

An LSN is a 64-bit byte position in the WAL stream, printed as two 32-bit hex halves `X/X`.
A segment file name is TTTTTTTTXXXXXXXXYYYYYYYY: timeline, then the segment number split into
"log" (high) and "seg" (low) parts, with segments_per_xlogid = 2**32 / segment size.
"""

from __future__ import annotations

import re

from domain.errors import DrillError, ErrorCode

DEFAULT_WAL_SEGMENT_SIZE = 16 * 1024 * 1024

_LSN_RE = re.compile(r"^([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})$")
_SEGMENT_RE = re.compile(r"^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})$")


def parse_lsn(text: str) -> int:
    match = _LSN_RE.match(text.strip())
    if not match:
        raise DrillError(ErrorCode.LSN_INVALID, f"{text!r} is not an LSN of the form X/X")
    return (int(match.group(1), 16) << 32) | int(match.group(2), 16)


def format_lsn(lsn: int) -> str:
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def segment_number(lsn: int, segment_size: int = DEFAULT_WAL_SEGMENT_SIZE) -> int:
    return lsn // segment_size


def segment_name(
    timeline: int, segno: int, segment_size: int = DEFAULT_WAL_SEGMENT_SIZE
) -> str:
    per_xlogid = 0x100000000 // segment_size
    return f"{timeline:08X}{segno // per_xlogid:08X}{segno % per_xlogid:08X}"


def parse_segment_name(
    name: str, segment_size: int = DEFAULT_WAL_SEGMENT_SIZE
) -> tuple[int, int]:
    """(timeline, segment number) of a WAL segment file name."""
    match = _SEGMENT_RE.match(name)
    if not match:
        raise ValueError(f"{name!r} is not a WAL segment file name")
    per_xlogid = 0x100000000 // segment_size
    return int(match.group(1), 16), int(match.group(2), 16) * per_xlogid + int(match.group(3), 16)


def is_segment_name(name: str) -> bool:
    return bool(_SEGMENT_RE.match(name))
