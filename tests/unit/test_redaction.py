"""Passwords and tokens out of URLs, DSNs, queries, headers and JSON log lines, hosts kept;
and out of every log record and exported span."""

from __future__ import annotations

import json
import logging

import pytest
import structlog
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode

from domain.escalation import EscalationRecord
from domain.redaction import MASK, masked_url, redact, redact_report
from domain.report import CheckResult, DrillReport, ErrorEntry
from workers import telemetry

SECRET = "S3cretPw"


@pytest.mark.parametrize("text, expected", [
    ("postgresql://ledger:S3cretPw@db.internal:5432/pitr",
     "postgresql://ledger:***@db.internal:5432/pitr"),
    ("connect to postgres://u:S3cretPw@h/db failed", "connect to postgres://u:***@h/db failed"),
    # an unencoded @ in the password: the whole password goes, not just its head
    ("postgresql://u:S3c@retPw@host/db", "postgresql://u:***@host/db"),
    ("redis://:S3cretPw@cache:6379/0", "redis://:***@cache:6379/0"),
    ("https://user:S3cretPw@127.0.0.1:9/hook?token=S3cretTok",
     "https://user:***@127.0.0.1:9/hook?token=***"),
    ("https://hooks.example/x?a=1&access_token=S3cretTok&b=2",
     "https://hooks.example/x?a=1&access_token=***&b=2"),
    ("https://s3.example/o?X-Amz-Signature=abc123&X-Amz-Date=1",
     "https://s3.example/o?X-Amz-Signature=***&X-Amz-Date=1"),
    ("host=db user=u password=S3cretPw dbname=pitr", "host=db user=u password=*** dbname=pitr"),
    ("host=db password='S3c ret\\'Pw' dbname=pitr", "host=db password=*** dbname=pitr"),
    ("sslpassword=S3cretPw PGPASSWORD=S3cretPw", "sslpassword=*** PGPASSWORD=***"),
    ("client_secret=S3cretPw;api_key=S3cretPw", "client_secret=***;api_key=***"),
    ("curl -H 'Authorization: Bearer S3cretTok.x-y' https://h",
     "curl -H 'Authorization: Bearer ***' https://h"),
    ('{"password": "S3cretPw", "user": "u"}', '{"password": "***", "user": "u"}'),
])
def test_secrets_are_masked_and_the_rest_is_kept(text, expected):
    assert redact(text) == expected


@pytest.mark.parametrize("text", [
    "postgresql://postgres@localhost/shop",
    "http://localhost:8233/namespaces/default",
    "check 'orders at target': observed 600, expected 600",
    "select count(*) from orders where status = 'void'",
    "tokens_total=5 bypass=1 monkey=2",
    "scheduled at 2026-11-22 04:46:30.016509+00 (EST, UTC-05:00)",
])
def test_text_without_secrets_is_unchanged(text):
    assert redact(text) == text


def test_redacting_twice_changes_nothing_more():
    once = redact("postgresql://u:S3cretPw@h/db?password=S3cretPw")
    assert redact(once) == once and SECRET not in once


def test_a_rendered_json_record_stays_json():
    record = {"event": "not appended to the ledger",
              "error": 'connect postgresql://ledger:S3c"ret\\Pw@127.0.0.1:1/pitr: refused',
              "dsn": "host=h password=S3cretPw", "token": "S3cretTok",
              "webhook": "https://user:S3cretPw@127.0.0.1:9/hook?token=S3cretTok"}
    line = redact(json.dumps(record))
    parsed = json.loads(line)
    assert "S3c" not in line and SECRET not in line
    assert parsed["error"] == f"connect postgresql://ledger:{MASK}@127.0.0.1:1/pitr: refused"
    assert parsed["token"] == MASK
    assert parsed["webhook"] == f"https://user:{MASK}@127.0.0.1:9/hook?token={MASK}"


def test_a_known_webhook_is_masked_whole_its_path_included():
    hook = "https://hooks.slack.example/services/T000/B000/S3cretPathToken"
    failure = f"webhook: POST {hook} failed: <urlopen error [Errno 111] Connection refused>"
    assert redact(failure, [hook, None]) == (
        "webhook: POST https://hooks.slack.example/*** failed: "
        "<urlopen error [Errno 111] Connection refused>")


def test_a_known_urls_password_is_masked_wherever_it_is_quoted():
    hook = "https://user:S3cretPw@127.0.0.1:9/hook"
    assert redact("nonnumeric port: 'S3cretPw@127.0.0.1:9'", [hook]) == \
        "nonnumeric port: '***@127.0.0.1:9'"


@pytest.mark.parametrize("url, expected", [
    ("https://user:S3cretPw@127.0.0.1:9/hook?token=S3cretTok", "https://***@127.0.0.1:9/***"),
    ("https://hooks.example", "https://hooks.example"),
    ("http://[::1]:8080/x", "http://[::1]:8080/***"),
    ("not a url S3cretPw", MASK),
    ("http://h:notaport/x", MASK),
])
def test_masked_url_keeps_only_scheme_host_and_port(url, expected):
    assert masked_url(url) == expected


def test_a_reports_free_text_is_redacted_in_place():
    report = DrillReport(
        drill_id="d", status="failed", database="shop",
        errors=[ErrorEntry(code="LEDGER", message="postgresql://l:S3cretPw@h/p refused",
                           hint="set password=S3cretPw")],
        checks=[CheckResult(name="c", passed=False, error="token=S3cretTok")],
        escalation=EscalationRecord(cause_code="X", cause="https://u:S3cretPw@h/x",
                                    notified=[], notify_failures=["webhook: key=S3cretTok"]))
    redact_report(report)
    dumped = report.model_dump_json()
    assert "S3cret" not in dumped
    assert report.errors[0].message == "postgresql://l:***@h/p refused"
    assert report.escalation.notify_failures == ["webhook: key=***"]


LEDGER = "postgresql://ledger:S3cretPw@127.0.0.1:1/pitr"
WEBHOOK = "https://user:S3cretPw@127.0.0.1:9/hook?token=S3cretTok"


def test_every_rendered_log_record_is_redacted_and_stays_json(capsys):
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        telemetry.configure()
        logging.getLogger("pitrdrill.test").warning(
            "cannot reach %s", LEDGER, extra={"dsn": "host=h password=S3cretPw"})
        structlog.get_logger("pitrdrill.test").warning("hook failed", url=WEBHOOK,
                                                       token="S3cretTok")
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        logging.captureWarnings(False)
        structlog.reset_defaults()
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2 and "S3cret" not in "".join(lines)
    stdlib, native = (json.loads(line) for line in lines)
    assert stdlib["event"] == "cannot reach postgresql://ledger:***@127.0.0.1:1/pitr"
    assert stdlib["dsn"] == "host=h password=***"
    assert native["url"] == "https://user:***@127.0.0.1:9/hook?token=***"


def test_exported_spans_are_redacted_attributes_events_and_status():
    provider, exporter = TracerProvider(), InMemorySpanExporter()
    telemetry.add_span_exporter(exporter, provider, batch=False)
    with provider.get_tracer("test").start_as_current_span(
            "notify", attributes={"hook": WEBHOOK, "ledgers": [LEDGER]}) as span:
        span.record_exception(ConnectionError(f"cannot reach {LEDGER}"))
        span.set_status(Status(StatusCode.ERROR, f"failed: {WEBHOOK}"))
    [exported] = exporter.get_finished_spans()
    assert "S3cret" not in exported.to_json()
    assert exported.attributes["hook"] == "https://user:***@127.0.0.1:9/hook?token=***"
    assert exported.status.description == "failed: https://user:***@127.0.0.1:9/hook?token=***"
    assert exported.events[0].attributes["exception.message"] == \
        "cannot reach postgresql://ledger:***@127.0.0.1:1/pitr"
