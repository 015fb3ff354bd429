"""Telegram's limits kept by the one pacer, against the fake Bot API's real limits."""

from __future__ import annotations

import itertools
import logging
import tempfile
import threading
import time
from pathlib import Path

import pytest

from alertd.community.config import CommunitySpec
from alertd.telegram.botapi import BotApi, BotApiError
from alertd.telegram.pace import BusyError, Pacer, StoppedError
from tests.fakebot import TOKEN, fake_bot


@pytest.mark.slow  # seconds of Telegram's pacing: run with the slow tests
def test_sixty_one_members_get_their_copy_within_the_limit_and_none_is_refused() -> None:
    with fake_bot() as (fake, url):
        bot = BotApi(TOKEN, url)
        started = time.monotonic()
        for chat in range(1, 62):
            bot.send(chat, f"job for {chat}")
        took = time.monotonic() - started
        bot.close()
    assert fake.limited == 0  # no 429: the pacer kept 30 a second
    assert sum(len(v) for v in fake.sent.values()) == 61
    assert 1.9 < took < 4  # two seconds' worth, not a burst and not a crawl


@pytest.mark.slow
def test_one_chat_gets_one_message_a_second_whoever_sends() -> None:
    with fake_bot() as (fake, url):
        bot = BotApi(TOKEN, url)
        threads = [threading.Thread(target=bot.send, args=(7, f"m{i}")) for i in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        bot.close()
    times = [s.at for s in fake.messages(7)]
    assert len(times) == 3 and fake.limited == 0
    assert all(b - a >= 1.0 for a, b in itertools.pairwise(times))


def test_a_group_gets_no_more_than_its_minute_allows() -> None:
    with fake_bot(group_per_minute=3) as (fake, url):
        bot = BotApi(TOKEN, url, Pacer(group_per_minute=3))
        for i in range(3):
            bot.send(-100, f"m{i}")
        stop = threading.Event()
        threading.Timer(0.3, stop.set).start()
        with pytest.raises(StoppedError):
            bot.send(-100, "the fourth waits for the minute", stop=stop)
        bot.close()
    assert len(fake.messages(-100)) == 3 and fake.limited == 0


@pytest.mark.slow  # seconds of Telegram's pacing: run with the slow tests
def test_a_reply_goes_before_the_alerts_queued_for_the_same_second() -> None:
    with fake_bot() as (fake, url):
        bot = BotApi(TOKEN, url)
        fanout = threading.Thread(target=lambda: [bot.send(c, "alert") for c in range(1, 62)])
        fanout.start()
        time.sleep(0.3)
        asked = time.monotonic()
        bot.send(9999, "your /list", urgent=True)
        waited = time.monotonic() - asked
        fanout.join(30)
        bot.close()
    assert waited < 1.1  # not behind the 60 alerts still queued (2 s)
    assert fake.limited == 0


@pytest.mark.slow
def test_a_429_storm_is_waited_out_not_hammered(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="httpx")  # its request lines carry the URL
    with fake_bot() as (fake, url):
        bot = BotApi(TOKEN, url)
        fake.storm(1.5, retry_after=1)
        refused = 0
        started = time.monotonic()
        for chat in range(1, 11):
            while True:
                try:
                    bot.send(chat, "job")
                    break
                except BotApiError as exc:
                    assert exc.code == 429 and exc.retry_after == 1
                    refused += 1
        took = time.monotonic() - started
        bot.close()
    assert refused <= 3  # one per retry_after, not a request per loop turn
    assert 1.4 < took < 5
    assert sum(len(v) for v in fake.sent.values()) == 10
    assert TOKEN not in caplog.text and TOKEN.split(":")[1] not in caplog.text


def test_a_refused_token_is_said_once_and_not_hammered(caplog: pytest.LogCaptureFixture) -> None:
    from alertd.members import Members
    from alertd.telegram.chat import Chat
    from alertd.telegram.poll import Poller
    from tests.pageworld import PUBLIC

    caplog.set_level(logging.INFO)
    caplog.set_level(logging.DEBUG, logger="httpx")
    spec = CommunitySpec(name="G", public_url=PUBLIC)
    with fake_bot() as (fake, url), tempfile.TemporaryDirectory() as tmp:
        wrong = "999:this-token-was-revoked-long-ago"
        bot = BotApi(wrong, url)
        poller = Poller(bot, Chat(Members.open(Path(tmp)), bot, spec), poll_timeout=1).start()
        time.sleep(1.5)
        poller.close(wait=0.1)
        bot.close()
    assert fake.calls == 0  # refused before any method ran
    errors = [r for r in caplog.records if "refused the community bot's token" in r.getMessage()]
    assert len(errors) == 1
    assert wrong not in caplog.text and "revoked-long-ago" not in caplog.text


@pytest.mark.slow  # three seconds of Telegram's pacing
def test_a_slow_round_trip_is_not_added_to_every_seconds_thirty_sends() -> None:
    # 61 members' copies, 40 at a time, each send answering 0.6 s late (0.3 s each way).
    # Counted from each answer's end, the third second's copy would reach Telegram 3.2 s
    # after the first; counted from the midpoint (when Telegram saw it), 2.6 s.
    with fake_bot(latency=0.6) as (fake, url):
        bot = BotApi(TOKEN, url)
        chats = iter(range(1, 62))
        lock = threading.Lock()

        def sender() -> None:
            while True:
                with lock:
                    chat = next(chats, None)
                if chat is None:
                    return
                bot.send(chat, f"job for {chat}")

        threads = [threading.Thread(target=sender) for _ in range(40)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(20)
        bot.close()
    seen = sorted(s.at for sent in fake.sent.values() for s in sent)
    assert len(seen) == 61
    assert fake.limited == 0  # and Telegram refused none
    assert seen[-1] - seen[0] < 2.9


@pytest.mark.slow  # two and a half seconds of a 429's hold and a chat's second
def test_a_429s_hold_does_not_count_against_a_replys_patience() -> None:
    # Two replies to one chat wait out a 1.5 s hold; the first goes when it ends, the
    # second a second later. That second is the chat's own limit, within the reply's 2 s
    # of patience once the hold is over: it must not be dropped for the hold's 1.5 s.
    pacer = Pacer()
    pacer.hold(1.5)
    outcomes: list[str] = []

    def reply() -> None:
        try:
            with pacer.slot(7, urgent=True, patience=2.0):
                outcomes.append("sent")
        except BusyError:
            outcomes.append("dropped")

    threads = [threading.Thread(target=reply) for _ in range(2)]
    for thread in threads:
        thread.start()
        time.sleep(0.05)
    for thread in threads:
        thread.join(10)
    assert outcomes == ["sent", "sent"]
