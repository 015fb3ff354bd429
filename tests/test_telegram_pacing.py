"""Telegram's limits kept by the one pacer, against the fake Bot API's real limits."""

from __future__ import annotations

import itertools
import logging
import threading
import time

import pytest

from alertd.telegram.botapi import BotApi, BotApiError
from alertd.telegram.pace import Pacer, StoppedError
from tests.fakebot import TOKEN, fake_bot


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


def test_a_429_storm_is_waited_out_not_hammered(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
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
