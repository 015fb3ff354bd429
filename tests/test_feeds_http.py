"""The feed URLs on a real server on 127.0.0.1: a reader gets the Atom document, then a
304 when it already has it; a token that is not live is a 404 that says nothing more;
a personal feed is kept out of shared caches, search engines and Referer headers."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import feedparser
import httpx
import pytest
from flask import Flask
from werkzeug.serving import make_server

from alertd.community.feeds import blueprint
from alertd.feeds import FeedEntry, FeedRef, Feeds, public_feed_slug, public_feeds

NOW = datetime(2026, 12, 2, 9, 0, 30, 500_000, tzinfo=UTC)  # not on a whole second
TOKEN = "tok-" + "a" * 40
MANAGE = "https://alerts.example.org/manage/tok"


def entry(job_id: str, now: datetime = NOW) -> FeedEntry:
    return FeedEntry(
        job_id=job_id,
        title=f"Job {job_id}",
        url=f"https://app.opentrain.ai/jobs/{job_id}",
        summary="Label things.",
        published=now,
        updated=now,
        search_title="German audio",
    )


def personal(token: str) -> FeedRef | None:
    return FeedRef("member:1", "Annotators Guild", MANAGE) if token == TOKEN else None


@pytest.fixture
def feeds(tmp_path: Path) -> Feeds:
    store = Feeds.open(tmp_path)
    store.add("member:1", [entry("a"), entry("b", NOW + timedelta(seconds=1))], NOW)
    store.add("search:Go jobs", [entry("c")], NOW)
    return store


@pytest.fixture
def site(feeds: Feeds) -> Iterator[Callable[..., httpx.Response]]:
    """The blueprint in a Flask app, served by werkzeug on a loopback port."""
    app = Flask("feeds-test")
    app.config["ALERTD_FEEDS"] = feeds
    app.config["ALERTD_FEED_RESOLVER"] = personal
    app.config["ALERTD_PUBLIC_FEEDS"] = public_feeds(["Go jobs"])
    app.config["ALERTD_PUBLIC_URL"] = "https://alerts.example.org"
    app.register_blueprint(blueprint)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_port}"
    with httpx.Client(base_url=base, timeout=10) as client:
        yield lambda path, **headers: client.get(path, headers=headers)
    server.shutdown()
    thread.join(10)


def test_a_member_reads_their_feed_then_gets_304_on_repeat(
    site: Callable[..., httpx.Response],
) -> None:
    first = site(f"/feed/{TOKEN}.atom")
    assert first.status_code == 200
    assert first.headers["content-type"] == "application/atom+xml; charset=utf-8"
    parsed = feedparser.parse(first.content)
    assert not parsed.bozo
    assert [e.title for e in parsed.entries] == ["Job b", "Job a"]
    assert parsed.feed.link == MANAGE
    self_link = next(link.href for link in parsed.feed.links if link.rel == "self")
    assert self_link == f"https://alerts.example.org/feed/{TOKEN}.atom"
    assert first.headers["last-modified"] == "Wed, 02 Dec 2026 09:00:30 GMT"

    etag = first.headers["etag"]
    again = site(f"/feed/{TOKEN}.atom", **{"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    assert again.headers["etag"] == etag
    since = site(f"/feed/{TOKEN}.atom", **{"If-Modified-Since": first.headers["last-modified"]})
    assert since.status_code == 304
    other = site(f"/feed/{TOKEN}.atom", **{"If-None-Match": '"something-else"'})
    assert other.status_code == 200


def test_a_repeat_is_answered_without_reading_the_feed(
    site: Callable[..., httpx.Response], feeds: Feeds
) -> None:
    """Readers poll every few minutes: a repeat costs a stat, not a read and a render.
    Shown by spoiling the file in place, same size and time: only a read would see it."""
    first = site(f"/feed/{TOKEN}.atom")
    path = feeds.path_for("member:1")
    before = path.stat()
    with path.open("r+b") as handle:
        handle.write(b"#" * before.st_size)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    again = site(f"/feed/{TOKEN}.atom", **{"If-None-Match": first.headers["etag"]})
    assert again.status_code == 304


def test_a_new_entry_is_a_new_etag_and_a_200(
    site: Callable[..., httpx.Response], feeds: Feeds
) -> None:
    first = site(f"/feed/{TOKEN}.atom")
    later = NOW + timedelta(minutes=5)
    feeds.add("member:1", [entry("new", later)], later)
    again = site(
        f"/feed/{TOKEN}.atom",
        **{
            "If-None-Match": first.headers["etag"],
            "If-Modified-Since": first.headers["last-modified"],
        },
    )
    assert again.status_code == 200 and again.headers["etag"] != first.headers["etag"]
    assert feedparser.parse(again.content).entries[0].title == "Job new"
    stale = format_datetime(NOW - timedelta(hours=1), usegmt=True)
    assert site(f"/feed/{TOKEN}.atom", **{"If-Modified-Since": stale}).status_code == 200


def test_a_personal_feed_stays_out_of_caches_search_engines_and_referers(
    site: Callable[..., httpx.Response],
) -> None:
    for answer in (site(f"/feed/{TOKEN}.atom"), site("/feed/unknown-token.atom")):
        assert answer.headers["x-robots-tag"] == "noindex"
        assert answer.headers["referrer-policy"] == "no-referrer"
        assert answer.headers["cache-control"].startswith("private")


@pytest.mark.parametrize(
    "path",
    [
        "/feed/unknown-token.atom",
        f"/feed/{TOKEN[:-1]}.atom",
        f"/feed/{TOKEN}x.atom",
        "/feed/" + "a" * 5000 + ".atom",
        "/feed/%C3%A9t%C3%A9.atom",
        "/feeds/go-jobs.atom",
        "/feeds/unknown.atom",
    ],
)
def test_an_unknown_token_or_feed_is_one_plain_404(
    site: Callable[..., httpx.Response], path: str
) -> None:
    answer = site(path)
    assert answer.status_code == 404
    assert answer.text == "Not found\n"
    assert "etag" not in answer.headers


def test_an_operator_search_that_opted_in_has_a_public_feed(
    site: Callable[..., httpx.Response],
) -> None:
    answer = site(f"/feeds/{public_feed_slug('Go jobs')}.atom")
    assert answer.status_code == 200
    assert answer.headers["cache-control"].startswith("public")
    assert "x-robots-tag" not in answer.headers
    parsed = feedparser.parse(answer.content)
    assert not parsed.bozo and [e.title for e in parsed.entries] == ["Job c"]
    again = site(
        f"/feeds/{public_feed_slug('Go jobs')}.atom", **{"If-None-Match": answer.headers["etag"]}
    )
    assert again.status_code == 304
