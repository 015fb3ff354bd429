"""The feed store: a job is in a feed once, a feed keeps its recent entries, an add is on
disk when it returns (a SIGKILL right after it loses nothing and a retry duplicates
nothing), and the cycle's adds and the page's reads and deletions do not collide."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from alertd.errors import StoreError
from alertd.feeds import KEEP_ENTRIES, FeedEntry, Feeds, deliver_to_feed, entries_of
from alertd.models import Job, Pay
from alertd.render import Item, Message

NOW = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)


def entry(job_id: str, now: datetime = NOW, pay: str = "$20/hour") -> FeedEntry:
    return FeedEntry(
        job_id=job_id,
        title=f"Job {job_id}",
        url=f"https://app.opentrain.ai/jobs/{job_id}",
        summary="Label things.",
        published=now - timedelta(hours=1),
        updated=now,
        search_title="German audio",
        pay=pay,
    )


def ids(feeds: Feeds, key: str) -> list[str]:
    return [e.job_id for e in feeds.entries(key)[0]]


def test_a_job_is_in_a_feed_once_and_a_raise_replaces_its_entry(tmp_path: Path) -> None:
    feeds = Feeds.open(tmp_path)
    assert feeds.add("member:1", [entry("a"), entry("b")], NOW) == 2
    later = NOW + timedelta(hours=1)
    assert feeds.add("member:1", [entry("a", later)], later) == 0  # a retry: nothing new
    assert ids(feeds, "member:1") == ["a", "b"]
    assert feeds.entries("member:1")[1] == NOW

    raised = feeds.add("member:1", [entry("b", later, pay="$20/hour → $30/hour")], later)
    assert raised == 1
    listed, changed = feeds.entries("member:1")
    assert [e.job_id for e in listed] == ["b", "a"]  # the raise is the newest news
    assert listed[0].pay == "$20/hour → $30/hour"
    assert listed[0].published == NOW - timedelta(hours=1)  # still posted when it was
    assert changed == later


def test_feeds_are_apart_and_a_dropped_feed_is_gone(tmp_path: Path) -> None:
    feeds = Feeds.open(tmp_path)
    feeds.add("member:1", [entry("a")], NOW)
    feeds.add("member:2", [entry("b")], NOW)
    feeds.drop("member:1")
    feeds.drop("member:unknown")
    assert Feeds.open(tmp_path).entries("member:1") == ([], None)
    assert ids(Feeds.open(tmp_path), "member:2") == ["b"]
    assert not feeds.path_for("member:1").exists()


def test_a_feed_keeps_its_newest_entries_of_the_last_30_days(tmp_path: Path) -> None:
    feeds = Feeds.open(tmp_path)
    old = NOW - timedelta(days=31)
    feeds.add("search:all", [entry("old", old)], old)
    many = [entry(f"j{i:03}", NOW + timedelta(seconds=i)) for i in range(KEEP_ENTRIES + 50)]
    feeds.add("search:all", many, NOW + timedelta(seconds=300))
    kept = ids(Feeds.open(tmp_path), "search:all")
    assert len(kept) == KEEP_ENTRIES
    assert kept[0] == f"j{KEEP_ENTRIES + 49:03}" and kept[-1] == "j050"
    assert "old" not in kept


def test_an_entry_older_than_30_days_leaves_a_quiet_feed(tmp_path: Path) -> None:
    feeds = Feeds.open(tmp_path)
    feeds.add("member:1", [entry("old", NOW - timedelta(days=31))], NOW - timedelta(days=31))
    feeds.add("member:1", [entry("recent", NOW - timedelta(days=29))], NOW - timedelta(days=29))
    feeds.add("member:1", [entry("new")], NOW)
    assert ids(Feeds.open(tmp_path), "member:1") == ["new", "recent"]


def test_entries_of_a_message_say_what_the_message_says(tmp_path: Path) -> None:
    job = Job(
        id="j-1",
        title="German <b>audio</b>",
        url="https://app.opentrain.ai/jobs/j-1",
        summary="Transcribe\x00 speech",
        date_posted=NOW - timedelta(days=1),
        pay=Pay(payment_type="PAY_PER_HOUR", currency="USD", hourly_rate=25.0),
    )
    message = Message(items=(Item(job, ("German audio",)),))
    [made] = entries_of(message, NOW)
    assert made.title == "German <b>audio</b>"  # escaped by the Atom writer, not here
    assert made.summary == "Transcribe speech"  # a control character is gone
    assert made.pay == "$25/hour"
    assert made.search_title == "German audio"
    assert made.published == NOW - timedelta(days=1) and made.updated == NOW
    feeds = Feeds.open(tmp_path)
    assert deliver_to_feed(feeds, "member:1", message, NOW).accepted
    assert deliver_to_feed(feeds, "member:1", message, NOW + timedelta(hours=1)).accepted
    assert feeds.entries("member:1") == ([made], NOW)  # once, as first delivered
    feeds.path_for("member:1").write_text("{damaged")
    failed = deliver_to_feed(feeds, "member:1", message, NOW)
    assert not failed.accepted and "not a feed alertd wrote" in (failed.error or "")


def test_a_damaged_feed_file_is_an_error_never_an_empty_feed(tmp_path: Path) -> None:
    feeds = Feeds.open(tmp_path)
    feeds.add("member:1", [entry("a")], NOW)
    feeds.path_for("member:1").write_text("{not json")
    with pytest.raises(StoreError, match="not a feed alertd wrote"):
        feeds.add("member:1", [entry("b")], NOW)
    assert feeds.path_for("member:1").read_text() == "{not json"  # not written over


def test_a_link_planted_as_a_feed_file_is_not_followed(tmp_path: Path) -> None:
    feeds = Feeds.open(tmp_path)
    feeds.add("member:1", [entry("a")], NOW)
    secret = tmp_path / "secret.txt"
    secret.write_text("elsewhere")
    path = feeds.path_for("member:1")
    path.unlink()
    path.symlink_to(secret)
    with pytest.raises(StoreError, match="symbolic link"):
        feeds.entries("member:1")


def test_the_cycle_adding_while_the_page_reads_and_deletes(tmp_path: Path) -> None:
    feeds = Feeds.open(tmp_path)
    errors: list[BaseException] = []
    done = threading.Event()

    def cycle() -> None:
        for i in range(60):
            for member in range(4):
                feeds.add(f"member:{member}", [entry(f"j{i}", NOW + timedelta(seconds=i))], NOW)
        done.set()

    def page() -> None:
        try:
            while not done.is_set():
                for member in range(4):
                    listed, _ = feeds.entries(f"member:{member}")
                    assert len({e.job_id for e in listed}) == len(listed)
                feeds.drop("member:3")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=cycle), threading.Thread(target=page)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors
    assert len(ids(feeds, "member:0")) == 60
    assert not list(tmp_path.joinpath("feeds").glob(".alertd-*"))  # no temp file left


def test_two_writers_on_one_feed_lose_nothing(tmp_path: Path) -> None:
    """The cycle adding while the page deletes, or two adds at once: each add reads,
    merges and writes the feed; without one lock, one writer's entries vanish."""
    feeds = Feeds.open(tmp_path)

    def add(prefix: str) -> None:
        for i in range(40):
            feeds.add("member:0", [entry(f"{prefix}{i}")], NOW)

    threads = [threading.Thread(target=add, args=(p,)) for p in "abc"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(ids(feeds, "member:0")) == 120


def test_one_job_into_many_feeds_at_once(tmp_path: Path) -> None:
    """One job matching every member: written to each feed, in parallel, and a feed that
    cannot be written fails after the others are on disk (a retry re-adds nothing)."""
    feeds = Feeds.open(tmp_path)
    feeds.add("member:broken", [entry("a")], NOW)
    feeds.path_for("member:broken").write_text("{damaged")
    keys = [f"member:{i}" for i in range(40)]
    with pytest.raises(StoreError, match="not a feed alertd wrote"):
        feeds.add_many({key: [entry("new")] for key in [*keys, "member:broken"]}, NOW)
    assert all(ids(feeds, key) == ["new"] for key in keys)
    assert feeds.add_many({key: [entry("new")] for key in keys}, NOW) == dict.fromkeys(keys, 0)


CHILD = textwrap.dedent(
    """
    import os, sys
    from datetime import UTC, datetime
    from pathlib import Path
    from alertd.feeds import FeedEntry, Feeds

    now = datetime.now(UTC)
    feeds = Feeds.open(Path(sys.argv[1]))
    jobs = [
        FeedEntry(job_id=f"job-{i}", title=f"Job {i}", url="https://app.opentrain.ai/jobs/x",
                  summary="", published=now, updated=now, search_title="s")
        for i in range(int(sys.argv[2]))
    ]
    feeds.add("member:7", jobs, now)
    os.write(1, b"added\\n")
    os.kill(os.getpid(), 9)  # the instant add returns: the outbox never hears of it
    """
)


def test_an_add_survives_sigkill_the_instant_it_returns_and_a_retry_adds_nothing(
    tmp_path: Path,
) -> None:
    for attempt in range(2):  # the delivery, then its retry after the crash
        child = subprocess.run(
            [sys.executable, "-c", CHILD, str(tmp_path), "30"],
            capture_output=True,
            timeout=60,
            env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])},
        )
        assert child.returncode == -signal.SIGKILL, child.stderr
        assert child.stdout == b"added\n", attempt
        listed = ids(Feeds.open(tmp_path), "member:7")
        assert sorted(listed) == sorted(f"job-{i}" for i in range(30))
