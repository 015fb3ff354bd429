"""The Atom document: a feed reader (feedparser) reads it without complaint, in order,
whatever a job poster wrote; each entry links to the job and keeps its id; and a saved
search opts in to a public feed with ``feed: true``."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from pathlib import Path

import feedparser
import pytest

from alertd.atom import feed_id_for, render_atom
from alertd.config import parse_config
from alertd.feeds import FeedEntry, entries_of, public_feed_slug, public_feeds
from alertd.render import Item, Message
from tests.hostile_jobs import HOSTILE_JOBS

NOW = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)
FEED_ID = feed_id_for("member:1")
MANAGE = "https://alerts.example.org/manage/tok"
SELF = "https://alerts.example.org/feed/tok.atom"


def entry(job_id: str, minutes: int, **fields: str) -> FeedEntry:
    values = {
        "title": f"Job {job_id}",
        "url": f"https://app.opentrain.ai/jobs/{job_id}",
        "summary": "Label things.",
        "search_title": "German audio",
        "pay": "$20/hour",
        **fields,
    }
    moment = NOW + timedelta(minutes=minutes)
    return FeedEntry(job_id=job_id, published=moment, updated=moment, **values)


def read(entries: list[FeedEntry]) -> feedparser.FeedParserDict:
    body = render_atom("Annotators Guild", FEED_ID, SELF, entries, NOW, alternate_url=MANAGE)
    parsed = feedparser.parse(body)
    assert not parsed.bozo, parsed.get("bozo_exception")
    assert parsed.version == "atom10"
    return parsed


def test_a_reader_gets_the_entries_newest_first_with_links_and_times() -> None:
    parsed = read([entry("b", 2), entry("a", 1)])
    assert parsed.feed.title == "Annotators Guild"
    assert parsed.feed.id == FEED_ID
    links = {link.rel: link.href for link in parsed.feed.links}
    assert links == {"self": SELF, "alternate": MANAGE}
    assert [e.title for e in parsed.entries] == ["Job b", "Job a"]
    first = parsed.entries[0]
    assert first.link == "https://app.opentrain.ai/jobs/b"
    assert first.updated == "2026-12-02T09:02:00Z" and first.published == "2026-12-02T09:02:00Z"
    assert "Pay: $20/hour" in first.summary and "Matched: German audio" in first.summary


def test_an_entry_keeps_its_id_when_the_job_changes_and_differs_per_feed() -> None:
    before = read([entry("a", 1)]).entries[0].id
    raised = read([entry("a", 5, pay="$20/hour → $30/hour", headline="Pay raised")]).entries[0]
    assert raised.id == before and before.startswith("urn:uuid:")
    assert raised.title == "Pay raised: Job a"
    other = render_atom("x", feed_id_for("member:2"), SELF, [entry("a", 1)], NOW)
    assert feedparser.parse(other).entries[0].id != before


@pytest.mark.parametrize("name", sorted(HOSTILE_JOBS))
def test_hostile_jobs_make_a_valid_feed_that_says_what_the_alert_says(name: str) -> None:
    job = HOSTILE_JOBS[name]
    entries = entries_of(Message(items=(Item(job, ("a <search>",)),)), NOW)
    body = render_atom("Guild", FEED_ID, SELF, entries, NOW)
    assert b"<script" not in body and b"<b>" not in body and b"<search>" not in body
    [got] = read(entries).entries
    # Plain text: a reader shows "<b>" as the characters, never as markup.
    assert got.summary_detail.type == "text/plain" and got.title_detail.type == "text/plain"
    assert got.link.startswith("https://")
    assert len(got.summary) < 3500 and "Matched: a <search>" in got.summary


RAW = (
    "Break ]]> out <![CDATA[ x ]]> <script>alert(1)</script> &amp; &bogus; "
    "\x00\x01\x08\x0b\x0c\x1b\x7f\ufffe\uffff \ud800 lone \udfff end"
)


def test_text_no_xml_can_hold_is_stripped_and_markup_escaped() -> None:
    hostile = entry(
        "x\x00y",
        1,
        title=RAW,
        summary=RAW + "d" * 10_000,
        search_title=RAW,
        company=RAW,
        url="javascript:alert(1)",
        headline=RAW,
    )
    body = render_atom(RAW, FEED_ID, SELF, [hostile], NOW, alternate_url=MANAGE, author=RAW)
    ET.fromstring(body)  # well-formed XML, or this raises
    assert b"<script" not in body and b"]]>" not in body
    parsed = read([hostile])
    [got] = parsed.entries
    assert "<script>alert(1)</script>" in got.title  # shown as text, not run
    assert got.title_detail.type == "text/plain"
    assert got.link == "https://app.opentrain.ai/jobs/x%00y"  # not the javascript: link
    assert len(got.summary) < 3000  # a 10,000-character description is cut


def test_an_empty_feed_is_still_a_valid_feed() -> None:
    parsed = feedparser.parse(render_atom("Guild", FEED_ID, SELF, [], None))
    assert not parsed.bozo and parsed.entries == []


def test_a_public_feed_slug_is_readable_stable_and_distinct() -> None:
    assert public_feed_slug("go-jobs") == "go-jobs"
    slugs = {public_feed_slug(n) for n in ("go-jobs", "Go jobs", "go jobs", "GO-JOBS")}
    assert len(slugs) == 4 and all(s.startswith("go-jobs") for s in slugs)
    assert public_feed_slug("Go jobs") == public_feed_slug("Go jobs")
    assert public_feed_slug("日本語").startswith("search-")
    assert public_feed_slug("Übersetzung DE").startswith("ubersetzung-de-")
    for slug in slugs | {public_feed_slug("a/../b?<x>")}:
        assert slug.replace("-", "").isalnum() and slug.isascii()
    resolve = public_feeds(["Go jobs"])
    assert resolve(public_feed_slug("Go jobs")) == "search:Go jobs"
    assert resolve("go-jobs") is None


def test_a_saved_search_opts_in_to_a_public_feed(tmp_path: Path) -> None:
    config = parse_config(
        "searches:\n  - name: open\n    feed: true\n  - name: quiet\n",
        str(tmp_path / "alerts.yaml"),
    )
    assert [s.feed for s in config.searches] == [True, False]


A = "{http://www.w3.org/2005/Atom}"
RFC3339 = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"


def test_the_document_has_what_rfc_4287_requires() -> None:
    """feedparser reads nearly anything; this checks the RFC's MUSTs one by one."""
    body = render_atom("Guild", FEED_ID, SELF, [entry("b", 2), entry("a", 1)], NOW)
    assert body.startswith(b"<?xml version='1.0' encoding='utf-8'?>")
    feed = ET.fromstring(body)
    assert feed.tag == f"{A}feed"
    for tag in ("id", "title", "updated"):
        assert len(feed.findall(f"{A}{tag}")) == 1, tag
    assert re.fullmatch(RFC3339, feed.findtext(f"{A}updated") or "")
    assert feed.findtext(f"{A}author/{A}name")  # or every entry has one
    [self_link] = [ln for ln in feed.findall(f"{A}link") if ln.get("rel") == "self"]
    assert self_link.get("href") == SELF
    for item in feed.findall(f"{A}entry"):
        for tag in ("id", "title", "updated", "published", "summary"):
            assert len(item.findall(f"{A}{tag}")) == 1, tag
        assert re.fullmatch(RFC3339, item.findtext(f"{A}updated") or "")
        alternates = [ln for ln in item.findall(f"{A}link") if ln.get("rel") == "alternate"]
        assert len(alternates) == 1  # no content element: an alternate link is a MUST
    ids = [item.findtext(f"{A}id") for item in feed.findall(f"{A}entry")]
    assert len(set(ids)) == len(ids)
