"""The report as a page (self-contained: nothing fetched) and as Markdown."""

from __future__ import annotations

import re
from html.parser import HTMLParser

from domain.report import ErrorEntry
from tests.unit.reports import fallback_to_xid_731, hours, report
from workers.report_page import render_html, render_markdown, timeline


class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.text: list[str] = []
        self.references: list[str] = []
        self.tags: set[str] = set()

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        self.references += [value or "" for name, value in attrs
                            if name in ("src", "href", "xlink:href", "data")]

    def handle_data(self, data):
        self.text.append(data)


def parsed(html: str) -> _Text:
    parser = _Text()
    parser.feed(html)
    return parser


def test_the_page_shows_every_stage_on_its_timeline_and_fetches_nothing():
    drill = report("drill-shop-1", finished=hours(30), window=(hours(0), hours(30)))
    html = render_html(drill)
    page = parsed(html)
    text = " ".join(page.text)
    for span in drill.stages:
        assert str(span.stage) in text
        # one bar per stage, titled with its stage
        assert f"<title>{span.stage}: done in" in html
    assert "svg" in page.tags and "script" not in page.tags and "link" not in page.tags
    assert page.references == []
    assert not re.search(r"https?://", html)
    assert "VERIFIED" in text and "drill-shop-1" in text and "run-drill-shop-1" in text
    assert "20500/s" in text  # replay transactions per second


def test_bars_sit_at_their_start_and_are_as_long_as_the_stage():
    drill = report("x")
    drawn = timeline(drill)
    restore, replay = drawn.bars[3], drawn.bars[4]
    assert (restore.stage, replay.stage) == ("restore", "replay")
    assert abs(drawn.total_seconds - sum(span.seconds for span in drill.stages)) < 1e-6
    assert abs(replay.x - (restore.x + restore.width)) < 0.02
    assert abs(replay.width / restore.width - 2.2 / 3.1) < 1e-3


def test_a_failed_stage_is_drawn_as_failed_and_the_errors_are_listed():
    drill = report("bad", status="failed")
    drill.stages[-1] = drill.stages[-1].model_copy(update={"outcome": "failed"})
    drill.errors.append(ErrorEntry(code="CHECK_FAILED", message="check 'orders': 3 <> 4",
                                   hint="look"))
    html = render_html(drill)
    assert "teardown: failed in" in html and "#b3261e" in html
    assert "CHECK_FAILED" in html and "check &#39;orders&#39;: 3 &lt;&gt; 4" in html


def test_markdown_names_requested_and_used_targets_and_every_stage():
    fallback = fallback_to_xid_731()
    drill = report("fb", fallback=fallback)
    drill.checks[0].name = "a | b"
    text = render_markdown(drill)
    assert text.startswith("# pitrdrill drill `fb`: VERIFIED")
    assert "| requested target | xid 800, exclusive" in text
    assert "| used target | xid 731, inclusive" in text
    assert "| transactions given up | 69 |" in text
    for span in drill.stages:
        assert f"| {span.stage} | " in text
    assert "| a \\| b | passed |" in text


def test_a_recovery_page_says_recovery_and_its_destination():
    recovery = report("rec", status="promoted", recovery=True)
    text = " ".join(parsed(render_html(recovery)).text)
    assert "pitrdrill recovery" in text and "/srv/recovered" in text and "PROMOTED" in text
