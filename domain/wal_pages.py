"""Where WAL records end: page headers and MAXALIGN, as the WAL reader computes EndRecPtr.

pg_waldump prints a record's start and total length, not its end. The reader's EndRecPtr is
start + length + the page headers crossed, MAXALIGNed. A stop before a record leaves replay at
the end of the record before it, which is that record's start except right after a page
header. Pure: no I/O.
"""

from __future__ import annotations

from domain.lsn import DEFAULT_WAL_SEGMENT_SIZE

WAL_PAGE_SIZE = 8192  # XLOG_BLCKSZ
SHORT_PAGE_HEADER = 24  # SizeOfXLogShortPHD
LONG_PAGE_HEADER = 40  # SizeOfXLogLongPHD: the first page of every segment
_MAXALIGN = 8
_XLP_FIRST_IS_CONTRECORD = 0x0001


def _page_header_size(page_start: int, segment_size: int) -> int:
    return LONG_PAGE_HEADER if page_start % segment_size == 0 else SHORT_PAGE_HEADER


def advance(position: int, length: int, segment_size: int = DEFAULT_WAL_SEGMENT_SIZE) -> int:
    """The position after writing `length` record bytes from `position`, skipping the page
    headers in the way (records are split across pages; headers are not record bytes)."""
    while length > 0:
        if position % WAL_PAGE_SIZE == 0:
            position += _page_header_size(position, segment_size)
        room = WAL_PAGE_SIZE - position % WAL_PAGE_SIZE
        step = min(room, length)
        position += step
        length -= step
    return position


def record_end(start: int, total_length: int,
               segment_size: int = DEFAULT_WAL_SEGMENT_SIZE) -> int:
    """The reader's EndRecPtr: where replay stands after applying the record."""
    end = advance(start, total_length, segment_size)
    return (end + _MAXALIGN - 1) & ~(_MAXALIGN - 1)


def end_before(start: int, segment_size: int = DEFAULT_WAL_SEGMENT_SIZE) -> int:
    """EndRecPtr of the record before the one starting at `start`. Records are contiguous, so
    it is `start`, unless `start` directly follows a page header: then the previous record
    ended at the page boundary (an XLOG_SWITCH ends at the next segment's start, the same)."""
    page_start = start - start % WAL_PAGE_SIZE
    header = _page_header_size(page_start, segment_size)
    return page_start if start - page_start == header else start


def continuation_end(segment_start: int, first_page_header: bytes,
                     segment_size: int = DEFAULT_WAL_SEGMENT_SIZE) -> int | None:
    """Where the record continued from the previous segment ends (unaligned), or None when
    this segment starts with a fresh record. Reads XLogLongPageHeaderData's xlp_info and
    xlp_rem_len, both little-endian as PostgreSQL writes them on x86 and ARM."""
    info = int.from_bytes(first_page_header[2:4], "little")
    remaining = int.from_bytes(first_page_header[16:20], "little")
    if not info & _XLP_FIRST_IS_CONTRECORD or remaining == 0:
        return None
    return advance(segment_start, remaining, segment_size)
