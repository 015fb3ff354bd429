"""Nothing summarised away: an operator's summary that says "+N more" links to where all
of them can be read, the search's public feed on the community page (``feed: true``),
in every service's form; without such a feed it only counts."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

import feedparser
import httpx
import pytest
from flask import Flask
from werkzeug.serving import make_server

from alertd.community.feeds import blueprint
from alertd.deliver import with_feeds
from alertd.feeds import Feeds, public_feeds
from alertd.models import Target
from alertd.outcome import Outcome
from alertd.render import Message, render_discord, render_plain, render_slack, render_telegram
from tests.world import World

AUDIO = "Audio Annotation"
PAGE = "https://alerts.example.org"
COMMUNITY = (
    "community:\n  name: Annotators Guild\n  public_url: https://alerts.example.org\n"
    "  signup: 'off'\n"
)
SEARCH = (
    "searches:\n  - name: audio\n    category: Audio Annotation\n{feed}"
    "    notify_existing: true\n    notify: [json://127.0.0.1:9/audio]\n"
)


@pytest.fixture
def w(tmp_path: Path) -> Iterator[World]:
    world = World(tmp_path, seed=3)
    for i in range(40):
        world.market.add_job(title=f"audio job {i:02d}", category=AUDIO)
    yield world
    world.stop()


def summary(w: World, body: str, batch: timedelta | None = None) -> Message:
    """The one message the channel gets for the jobs of ``notify_existing`` (after its
    ``batch`` ends, for a channel that batches)."""
    messages: list[Message] = []

    def channel(target: Target, message: Message) -> Outcome:
        messages.append(message)
        return Outcome(True)

    config = w.body(body)
    w.send = with_feeds(channel, Feeds.open(config.state_dir))  # type: ignore[assignment]
    report = w.cycle()
    if batch is not None:
        w.advance(batch)
        report = w.cycle()
    assert report.ok and report.owed == 0, report.summary()
    assert len(messages) == 1
    return messages[0]


def state_dir(w: World) -> Path:
    assert w.config is not None
    return w.config.state_dir


def read_feed(state_dir: Path, link: str) -> list[str]:
    """GET the link's path from the page's feed routes (on a loopback port)."""
    app = Flask("more-link-test")
    app.config["ALERTD_FEEDS"] = Feeds.open(state_dir)
    app.config["ALERTD_FEED_RESOLVER"] = lambda token: None
    app.config["ALERTD_PUBLIC_FEEDS"] = public_feeds(["audio"])
    app.config["ALERTD_PUBLIC_URL"] = PAGE
    app.register_blueprint(blueprint)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        answer = httpx.get(f"http://127.0.0.1:{server.server_port}{urlsplit(link).path}")
    finally:
        server.shutdown()
        thread.join(10)
    assert answer.status_code == 200
    parsed = feedparser.parse(answer.content)
    assert not parsed.bozo
    return sorted(e.title for e in parsed.entries)


def test_the_more_of_a_summary_links_to_the_search_public_feed_holding_them_all(
    w: World,
) -> None:
    message = summary(w, COMMUNITY + SEARCH.format(feed="    feed: true\n"))
    link = f"{PAGE}/feeds/audio.atom"
    assert message.everything == link
    assert read_feed(state_dir(w), link) == [f"audio job {i:02d}" for i in range(40)]
    # Every service's form links its "+N more" there.
    _, plain = render_plain(message, None)
    assert f"+15 more: all of them at {link}" in plain
    slack = render_slack(message, None)["blocks"][-1]["elements"][0]
    assert slack == {"type": "mrkdwn", "text": f"<{link}|+25 more>"}
    assert f"[+30 more](<{link}>)" in render_discord(message, None)["content"]
    assert f'<a href="{link}">+' in render_telegram(message, None)


@pytest.mark.parametrize(
    "body",
    [SEARCH.format(feed="    feed: true\n"), COMMUNITY + SEARCH.format(feed="")],
    ids=["no community page", "no public feed"],
)
def test_without_a_public_feed_the_summary_only_counts(w: World, body: str) -> None:
    message = summary(w, body)
    assert message.everything is None
    _, plain = render_plain(message, None)
    assert plain.splitlines()[-1] == "+15 more"
