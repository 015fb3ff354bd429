"""A feed is a delivery target: an operator search with ``feed: true`` writes its public
feed beside its channels, and a feed gets every job of a burst, never "+N more"."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from alertd.deliver import with_feeds
from alertd.feeds import Feeds, public_feed_key
from alertd.models import Target
from alertd.outcome import Outcome
from alertd.render import Message
from tests.world import Recorder, World

AUDIO = "Audio Annotation"


@pytest.fixture
def w(tmp_path: Path) -> Iterator[World]:
    world = World(tmp_path, seed=3)
    yield world
    world.stop()


def feed_titles(w: World, key: str) -> list[str]:
    assert w.config is not None
    entries, _ = Feeds.open(w.config.state_dir).entries(key)
    return sorted(e.title for e in entries)


def test_a_search_with_feed_true_writes_its_public_feed_beside_its_channel(w: World) -> None:
    recorder = Recorder()
    body = (
        "searches:\n  - name: audio\n    category: Audio Annotation\n    feed: true\n"
        "    notify: [json://127.0.0.1:9/audio]\n"
    )
    config = w.body(body)
    w.send = with_feeds(recorder, Feeds.open(config.state_dir))  # type: ignore[assignment]
    w.cycle()
    w.market.add_job(title="fresh audio job", category=AUDIO)
    report = w.cycle(timedelta(seconds=10))
    assert report.ok and report.owed == 0, report.summary()
    assert [title for _, title in recorder.sent] == ["fresh"]  # the channel, as before
    assert feed_titles(w, public_feed_key("audio")) == ["fresh audio job"]


def test_a_search_without_feed_writes_no_feed(w: World) -> None:
    body = "searches:\n  - name: audio\n    category: Audio Annotation\n"
    config = w.body(body)
    w.send = with_feeds(Recorder(), Feeds.open(config.state_dir))  # type: ignore[assignment]
    w.cycle()
    w.market.add_job(title="fresh audio job", category=AUDIO)
    w.cycle(timedelta(seconds=10))
    assert feed_titles(w, public_feed_key("audio")) == []


def test_a_burst_reaches_the_feed_whole_where_a_channel_gets_a_summary(w: World) -> None:
    recorder = Recorder()
    for i in range(30):
        w.market.add_job(title=f"audio job {i:02d}", category=AUDIO)
    body = (
        "searches:\n  - name: audio\n    category: Audio Annotation\n    feed: true\n"
        "    notify_existing: true\n    notify: [json://127.0.0.1:9/audio]\n"
    )
    config = w.body(body)
    w.send = with_feeds(recorder, Feeds.open(config.state_dir))  # type: ignore[assignment]
    report = w.cycle()
    assert report.owed == 0, report.summary()
    assert len(recorder.messages) == 1  # the channel: one summary listing some, "+N more"
    assert feed_titles(w, public_feed_key("audio")) == [f"audio job {i:02d}" for i in range(30)]


def test_a_services_message_goes_before_any_feed_is_written(w: World) -> None:
    order: list[str] = []
    recorder = Recorder()
    body = (
        "searches:\n  - name: audio\n    category: Audio Annotation\n    feed: true\n"
        "    notify: [json://127.0.0.1:9/audio]\n"
        "  - name: more\n    category: Audio Annotation\n    feed: true\n"
        "    notify: [json://127.0.0.1:9/more]\n"
    )
    config = w.body(body)
    routed = with_feeds(recorder, Feeds.open(config.state_dir))

    def watch(target: Target, message: Message) -> Outcome:
        order.append("feed" if target.feed_key else "service")
        return routed(target, message)

    w.send = watch  # type: ignore[assignment]
    w.cycle()
    w.market.add_job(title="fresh audio job", category=AUDIO)
    w.cycle(timedelta(seconds=10))
    assert order == ["service", "service", "feed", "feed"]
