"""pg_waldump parsing on captured PostgreSQL 15 output, and the stop rules (domain.wal_records,
wal_pages, timelines, prediction).

The fixtures are real `pg_waldump` output (TZ=UTC) from a lab primary whose workload had every
transaction kind, a commit crossing from segment 4 into 5, and restore point names with a
newline and with spaces. Expected replay LSNs and times below marked "observed" are what a real
PostgreSQL 15 recovery from that lab's backup reported for the same target.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest

from domain.catalog import BaseBackup
from domain.errors import DrillError, ErrorCode
from domain.lsn import format_lsn, parse_lsn
from domain.prediction import predict_stop
from domain.targets import ResolvedTarget
from domain.timelines import TimelineHistory, choose_timeline, on_timeline, parse_history
from domain.wal_pages import continuation_end, end_before, record_end
from domain.wal_records import WalEvent, WalRecord, parse_pg_time, parse_records, parse_waldump

FIXTURES = Path(__file__).parent / "fixtures"
SEG3, SEG4, SEG6, SEG7 = (f"00000001000000000000000{n}" for n in (3, 4, 6, 7))
# Segment 5's first page header: contrecord flag set, 26 bytes of commit 740 still to come.
SEG5_HEADER = bytes.fromhex(
    "10d107000100000000000005000000001a0000000000000061b898c64374026b0000000100200000"
)
SEG6_HEADER = bytes.fromhex(
    "10d10600010000000000000600000000000000000000000061b898c64374026b0000000100200000"
)


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)


def lab_events() -> list[WalEvent]:
    """Segments 4 and 6 of the lab, as the indexer reads them."""
    return (parse_waldump(fixture(f"waldump_events_{SEG4}.txt"), 1, SEG4)
            + parse_waldump(fixture(f"waldump_all_records_{SEG6}.txt"), 1, SEG6))


LAB_BACKUP = BaseBackup(
    id="first", path="/backups/first", timeline=1, start_lsn="0/3000028", stop_lsn="0/3000100",
    start_time=utc("2026-11-22 04:49:09"), stop_time=utc("2026-11-22 04:49:09"),
    size_bytes=1, has_manifest=True,
)


def target(mode: str, inclusive: bool = False, **fields) -> ResolvedTarget:
    return ResolvedTarget(mode=mode, inclusive=inclusive, **fields)


# --- parsing ---------------------------------------------------------------------------------

def test_parses_every_transaction_end_and_restore_point_of_a_real_segment():
    events = parse_waldump(fixture(f"waldump_events_{SEG4}.txt"), 1, SEG4)
    assert [(e.kind, e.xid, e.start_lsn, e.end_lsn, e.timestamp, e.name) for e in events] == [
        ("commit", 729, "0/4006F38", "0/4006F60", utc("2026-11-22 04:49:10.320861"), None),
        ("commit", 730, "0/400AC38", "0/400AC60", utc("2026-11-22 04:49:10.329395"), None),
        ("commit", 731, "0/400E608", "0/400E630", utc("2026-11-22 04:49:10.338792"), None),
        ("abort", 732, "0/400E6C0", "0/400E6E8", utc("2026-11-22 04:49:10.345189"), None),
        # "; inval msgs: ..." and "; rels: ...; dropped stats: ..." suffixes
        ("commit", 733, "0/4023218", "0/40233B0", utc("2026-11-22 04:49:10.350401"), None),
        ("commit", 734, "0/40236B8", "0/4023890", utc("2026-11-22 04:49:10.355743"), None),
        ("commit", 735, "0/4023A40", "0/4023A78", utc("2026-11-22 04:49:10.362707"), None),
        # tx: 0 on the record; the prepared transaction's xid comes from the description
        ("commit_prepared", 738, "0/4023DC8", "0/4023DF8",
         utc("2026-11-22 04:49:10.368774"), None),
        ("abort_prepared", 739, "0/4023DF8", "0/4023E28",
         utc("2026-11-22 04:49:10.368900"), None),
        ("restore_point", 0, "0/4023E28", "0/4023E90", None, "before damage"),
        # starts in segment 4, ends in segment 5 (the end pg_current_wal_insert_lsn() showed)
        ("commit", 740, "0/4FFFFF8", "0/5000048", utc("2026-11-22 04:49:10.494829"), None),
    ]
    assert {(e.timeline, e.segment) for e in events} == {(1, SEG4)}


def test_prepare_checkpoint_backup_end_and_switch_records_are_not_events():
    assert parse_waldump(fixture(f"waldump_events_{SEG3}.txt"), 1, SEG3) == []


def test_restore_point_names_are_kept_exactly_even_across_lines():
    events = parse_waldump(fixture(f"waldump_events_{SEG7}.txt"), 1, SEG7)
    assert [(e.name, e.start_lsn, e.end_lsn) for e in events] == [
        ("two\nlines", "0/7000148", "0/70001B0"),
        (" padded ", "0/70001B0", "0/7000218"),
    ]


def test_lines_that_do_not_start_a_record_continue_the_previous_one():
    # As pg_waldump prints pg_create_restore_point(E'a\n\nb\n') after a --start mid-record.
    text = ("first record is after 0/7000100, at 0/7000148, skipping over 72 bytes\n"
            "rmgr: XLOG        len (rec/tot):     98/    98, tx:          0, lsn: 0/07000148, "
            "prev 0/07000110, desc: RESTORE_POINT a\n\nb\n\n")
    assert [e.name for e in parse_waldump(text, 1, SEG7)] == ["a\n\nb\n"]


def test_times_printed_in_another_zone_are_refused():
    with pytest.raises(ValueError, match="TZ=UTC"):
        parse_pg_time("2026-11-22 17:49:10.320861", "NZDT")


# --- record boundaries ------------------------------------------------------------------------

@pytest.mark.parametrize("name", [f"waldump_all_records_{SEG6}.txt",
                                  "waldump_all_records_000000010000000000000002_head.txt"])
def test_computed_record_ends_meet_the_next_records_start(name):
    records = parse_records(fixture(name))
    crossings = sum(1 for r in records if r.start // 8192 != (r.end - 1) // 8192)
    assert crossings > 0  # the fixture does exercise page headers
    for record, following in zip(records, records[1:]):
        assert record.end == end_before(following.start), format_lsn(record.start)


def test_a_segment_switch_ends_at_the_next_segment():
    records = parse_records(fixture(f"waldump_all_records_{SEG6}.txt"))
    assert (records[-1].rmgr, records[-1].desc.strip(), records[-1].end) == (
        "XLOG", "SWITCH", parse_lsn("0/7000000"))


@pytest.mark.parametrize(("start", "total", "end"), [
    ("0/4023A40", 50, "0/4023A78"),  # within a page, MAXALIGNed
    ("0/4FFFFF8", 34, "0/5000048"),  # 8 bytes, the 40-byte long header, 26 bytes, align
    ("0/4001FF0", 34, "0/4002030"),  # 16 bytes, a 24-byte short header, 18 bytes, align
])
def test_record_end(start, total, end):
    assert format_lsn(record_end(parse_lsn(start), total)) == end


@pytest.mark.parametrize(("start", "end"), [
    ("0/6000028", "0/6000000"),  # first record after a long header
    ("0/4002018", "0/4002000"),  # first record after a short header
    ("0/4002020", "0/4002020"),
])
def test_end_before(start, end):
    assert format_lsn(end_before(parse_lsn(start))) == end


def test_continuation_end_reads_the_first_page_header():
    assert continuation_end(parse_lsn("0/5000000"), SEG5_HEADER) == parse_lsn("0/5000042")
    assert continuation_end(parse_lsn("0/6000000"), SEG6_HEADER) is None


# --- timelines -----------------------------------------------------------------------------

HISTORY_3 = ("1\t0/4023E90\tbefore damage\n\n# a comment\n"
             "2\t0/6000000\tno recovery target specified\n")


def test_parse_history():
    history = parse_history(HISTORY_3, 3)
    assert [(s.parent, s.switch_lsn, s.reason) for s in history.switches] == [
        (1, "0/4023E90", "before damage"), (2, "0/6000000", "no recovery target specified")]
    assert [history.timeline_at(parse_lsn(x)) for x in ("0/4023E88", "0/4023E90", "0/7000000")] \
        == [1, 2, 3]


def test_parse_history_refuses_garbage():
    with pytest.raises(ValueError, match="00000002.history"):
        parse_history("one\t0/1\n", 2)


def test_choose_timeline():
    histories = {2: parse_history("1\t0/4000000\tx\n", 2), 3: parse_history(HISTORY_3, 3),
                 5: TimelineHistory(timeline=5)}
    assert choose_timeline("latest", 1, histories).timeline == 3  # 4 is missing: probing stops
    assert choose_timeline("current", 1, histories) == TimelineHistory(timeline=1)
    assert choose_timeline("2", 1, histories) == histories[2]


def event(kind: str, xid: int, start: str, timeline: int = 1, at: str | None = None,
          name: str | None = None, total: int = 34) -> WalEvent:
    return WalEvent(
        kind=kind, timeline=timeline, start_lsn=start,
        end_lsn=format_lsn(record_end(parse_lsn(start), total)), xid=xid,
        timestamp=utc(at) if at else None, name=name, segment="x",
    )


def test_on_timeline_follows_the_history_and_keeps_copies_once():
    events = [
        event("commit", 10, "0/4000100", 1),
        event("commit", 11, "0/6000100", 1),  # timeline 1 after the switch: abandoned
        event("commit", 10, "0/4000100", 3),  # timeline 3's copy of older WAL
        event("commit", 12, "0/5000100", 2),
        event("commit", 13, "0/6000100", 3),
        event("commit", 14, "0/6000200", 4),  # not on the path
    ]
    history = parse_history("1\t0/5000000\tx\n2\t0/6000000\ty\n", 3)
    assert [(e.xid, e.timeline) for e in on_timeline(events, history)] == [
        (10, 1), (12, 2), (13, 3)]


# --- predictions against what PostgreSQL 15 did -----------------------------------------------

@pytest.mark.parametrize(("spec", "replay_lsn", "last_xact", "last_kept", "first_dropped"), [
    (target("time", utc=utc("2026-11-22 04:49:10.329395")),
     "0/400AC38", "2026-11-22 04:49:10.320861", 729, 730),
    (target("time", True, utc=utc("2026-11-22 04:49:10.329395")),
     "0/400E608", "2026-11-22 04:49:10.329395", 730, 731),
    # stops before the abort of 732: aborts count for time targets
    (target("time", utc=utc("2026-11-22 04:49:10.345189")),
     "0/400E6C0", "2026-11-22 04:49:10.338792", 731, 733),
    (target("time", True, utc=utc("2026-11-22 04:49:10.368774")),
     "0/4023DF8", "2026-11-22 04:49:10.368774", 738, 740),
    (target("time", utc=utc("2026-11-22 04:49:10.6")),
     "0/6000000", "2026-11-22 04:49:10.494829", 740, 741),
    (target("xid", xid=735), "0/4023A40", "2026-11-22 04:49:10.355743", 734, 735),
    (target("xid", True, xid=735), "0/4023A78", "2026-11-22 04:49:10.362707", 735, 738),
    (target("xid", True, xid=740), "0/5000048", "2026-11-22 04:49:10.494829", 740, 741),
    (target("xid", xid=741), "0/6000000", "2026-11-22 04:49:10.494829", 740, 741),
    (target("xid", True, xid=738), "0/4023DF8", "2026-11-22 04:49:10.368774", 738, 740),
    (target("name", name="before damage"),
     "0/4023E90", "2026-11-22 04:49:10.368900", 738, 740),
    (target("immediate"), "0/3000100", None, None, 729),
])
def test_prediction_matches_observed_recovery(spec, replay_lsn, last_xact, last_kept,
                                              first_dropped):
    prediction = predict_stop(lab_events(), spec, LAB_BACKUP)
    assert prediction.replay_lsn == replay_lsn
    assert prediction.last_xact_replay_time == (utc(last_xact) if last_xact else None)
    assert (prediction.last_kept.xid if prediction.last_kept else None) == last_kept
    assert prediction.first_dropped.xid == first_dropped
    assert prediction.tie is None


HEAP_AT_4023A78 = WalRecord("Heap", 0x4023A78, 0x4023AC8, 736, "INSERT")
COMMIT_741 = WalRecord("Transaction", 0x6000028, 0x6000050, 741, "COMMIT")


@pytest.mark.parametrize(("lsn", "inclusive", "record", "replay_lsn", "last_kept"), [
    # observed: the first record at or after 0/4023A41 is a Heap record at 0/4023A78
    ("0/4023A41", False, HEAP_AT_4023A78, "0/4023A78", 735),
    ("0/4023A41", True, HEAP_AT_4023A78, "0/4023AC8", 735),
    ("0/6000000", False, COMMIT_741, "0/6000000", 740),
    # observed: the first record at or after 0/5000000 follows the tail of commit 740
    ("0/5000000", True, WalRecord("Heap", 0x5000048, 0x5000098, 741, "INSERT"), "0/5000098", 740),
])
def test_lsn_prediction_matches_observed_recovery(lsn, inclusive, record, replay_lsn, last_kept):
    prediction = predict_stop(lab_events(), target("lsn", inclusive, lsn=lsn), LAB_BACKUP, record)
    assert prediction.replay_lsn == replay_lsn
    assert prediction.stop.after is inclusive
    assert prediction.stop.record_lsn == format_lsn(record.start)
    assert prediction.last_kept.xid == last_kept


def test_latest_keeps_everything():
    prediction = predict_stop(lab_events(), target("latest"), LAB_BACKUP)
    assert (prediction.stop, prediction.replay_lsn, prediction.first_dropped) == (None, None, None)
    assert prediction.last_kept.xid == 743
    assert prediction.last_xact_replay_time == utc("2026-11-22 04:49:10.673496")


def test_stop_point_names_the_record_and_side():
    prediction = predict_stop(lab_events(), target("xid", True, xid=735), LAB_BACKUP)
    assert prediction.stop.model_dump() == {
        "after": True, "record_lsn": "0/4023A40", "record": "commit of xid 735"}
    assert prediction.reason == "stops after the commit of xid 735"
    assert prediction.last_kept.model_dump() == {
        "xid": 735, "lsn": "0/4023A40", "commit_time": utc("2026-11-22 04:49:10.362707")}


# --- rules on hand-built events --------------------------------------------------------------

BACKUP = LAB_BACKUP  # redo point 0/3000028, consistent at 0/3000100
EVENTS = [
    event("commit", 700, "0/2000100", at="2026-01-01 09:00:00"),  # before the redo point
    event("commit", 728, "0/3000060", at="2026-01-01 09:59:59"),  # before consistency
    event("commit", 729, "0/3000200", at="2026-01-01 10:00:01"),
    event("abort", 730, "0/3000300", at="2026-01-01 10:00:02"),
    event("commit", 731, "0/3000400", at="2026-01-01 10:00:03"),
    event("commit", 732, "0/3000500", at="2026-01-01 10:00:03"),  # same microsecond as 731
    event("restore_point", 0, "0/3000600", name="before_damage", total=98),
    event("commit", 733, "0/3000700", at="2026-01-01 10:00:04"),
    event("abort_prepared", 734, "0/3000800", at="2026-01-01 10:00:05", total=42),
    event("restore_point", 0, "0/3000900", name="before_damage", total=98),
]


def test_a_tie_at_the_target_microsecond_is_flagged_with_advice():
    at = utc("2026-01-01 10:00:03")
    exclusive = predict_stop(EVENTS, target("time", utc=at), BACKUP)
    inclusive = predict_stop(EVENTS, target("time", True, utc=at), BACKUP)
    assert (exclusive.last_kept.xid, exclusive.first_dropped.xid) == (729, 731)
    assert (inclusive.last_kept.xid, inclusive.first_dropped.xid) == (732, 733)
    assert exclusive.tie.model_dump() == {
        "commit_time": at, "xids": [731, 732], "commit_lsns": ["0/3000400", "0/3000500"],
        "advice": "2 commits share the target's exact microsecond; this target drops all of "
                  "them. To keep only some, target recovery_target_lsn = the commit LSN of the "
                  "first one to drop, exclusive.",
    }
    assert inclusive.tie.advice.startswith("2 commits share the target's exact microsecond; "
                                           "this target keeps all of them.")


def test_time_target_inside_the_backup_window_is_refused():
    with pytest.raises(DrillError) as raised:
        predict_stop(EVENTS, target("time", utc=utc("2026-01-01 09:59:59")), BACKUP)
    assert raised.value.code == ErrorCode.TARGET_BEFORE_EARLIEST_BACKUP
    assert "stop at 0/3000060" in raised.value.message
    assert "consistent at 0/3000100" in raised.value.message


def test_time_after_the_last_transaction_end_is_never_reached():
    with pytest.raises(DrillError) as raised:
        predict_stop(EVENTS, target("time", utc=utc("2026-01-01 10:00:05.000001")), BACKUP)
    assert raised.value.code == ErrorCode.TARGET_BEYOND_ARCHIVE
    inclusive = target("time", True, utc=utc("2026-01-01 10:00:04.999999"))
    assert predict_stop(EVENTS, inclusive, BACKUP).stop.record == "abort of xid 734"


def test_an_epoch_qualified_xid_is_compared_by_its_low_32_bits_like_postgresql():
    prediction = predict_stop(EVENTS, target("xid", True, xid=733 + (1 << 32)), BACKUP)
    assert prediction.last_kept.xid == 733
    assert prediction.replay_lsn == "0/3000728"


@pytest.mark.parametrize(("xid", "code", "message"), [
    (999, ErrorCode.UNKNOWN_XID, "xid 999 is not in the archived WAL after the backup: it "
                                 "never commits or aborts"),
    (700, ErrorCode.UNKNOWN_XID, "xid 700 is not in the archived WAL after the backup: it ended "
                                 "at 0/2000100, before the backup's redo point, so the backup "
                                 "already holds it"),
    (730, ErrorCode.XID_ABORTED, "xid 730 aborted at 0/3000300 (2026-01-01 10:00:02.000000+00); "
                                 "it never committed"),
    (734, ErrorCode.XID_ABORTED, "xid 734 aborted at 0/3000800 (2026-01-01 10:00:05.000000+00); "
                                 "it never committed"),
])
def test_xid_errors(xid, code, message):
    with pytest.raises(DrillError) as raised:
        predict_stop(EVENTS, target("xid", xid=xid), BACKUP)
    assert (raised.value.code, raised.value.message) == (code, message)


def test_restore_point_stops_after_the_first_one_with_that_name():
    prediction = predict_stop(EVENTS, target("name", name="before_damage"), BACKUP)
    assert (prediction.stop.record_lsn, prediction.replay_lsn) == ("0/3000600", "0/3000668")
    assert (prediction.last_kept.xid, prediction.first_dropped.xid) == (732, 733)


def test_unknown_restore_point():
    with pytest.raises(DrillError) as raised:
        predict_stop(EVENTS, target("name", name="Before_Damage"), BACKUP)
    assert raised.value.code == ErrorCode.UNKNOWN_RESTORE_POINT
    assert raised.value.message == "no restore point named 'Before_Damage' after the backup"


def test_restore_point_before_the_redo_point_is_named_in_the_error():
    older = [event("restore_point", 0, "0/2000200", name="old", total=98), *EVENTS]
    with pytest.raises(DrillError) as raised:
        predict_stop(older, target("name", name="old"), BACKUP)
    assert raised.value.code == ErrorCode.UNKNOWN_RESTORE_POINT
    assert "(one at 0/2000200 is before the backup's redo point)" in raised.value.message


def test_lsn_beyond_the_archive_is_never_reached():
    with pytest.raises(DrillError) as raised:
        predict_stop(EVENTS, target("lsn", lsn="0/9000000"), BACKUP, None)
    assert raised.value.code == ErrorCode.TARGET_BEYOND_ARCHIVE


def test_immediate_reports_the_transaction_replayed_before_consistency():
    prediction = predict_stop(EVENTS, target("immediate"), BACKUP)
    assert (prediction.replay_lsn, prediction.last_kept.xid, prediction.first_dropped.xid) == (
        "0/3000100", 728, 729)
    assert prediction.last_xact_replay_time == utc("2026-01-01 09:59:59")
