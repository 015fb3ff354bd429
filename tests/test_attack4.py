"""A hostile review of the Telegram pacer's round-trip credit, commands over odd
whitespace, copies unsent at a stop and the stale temp files, against real servers on
127.0.0.1 (the fake Bot API, the stand-in API)."""

from __future__ import annotations

import threading
import time

from alertd.telegram.botapi import BotApi, BotApiError
from tests.fakebot import TOKEN, FakeBot, fake_bot


def _send_all(bot: BotApi, chats: range) -> list[threading.Thread]:
    """One thread a chat, each sending that chat its copy; started."""

    def send(chat: int) -> None:
        try:
            bot.send(chat, f"job for {chat}")
        except BotApiError:
            pass  # a 429: fake.limited tells

    threads = [threading.Thread(target=send, args=(chat,)) for chat in chats]
    for thread in threads:
        thread.start()
    return threads


def test_a_network_that_gets_faster_mid_fanout_breaks_no_limit() -> None:
    # 20 copies leave over a congested way (0.2 s there); the congestion clears while
    # they are on their way, so each comes back at once: its round trip (0.2 s) was all
    # the way there. Ten more then go and come back in 10 ms, then twenty more. Counted
    # from their answers' end less half of 0.2 s, the first twenty leave room 0.1 s too
    # early and Telegram sees 50 copies in one second.
    with fake_bot(latency=0.4) as (fake, url):
        bot = BotApi(TOKEN, url)
        first = _send_all(bot, range(1, 21))
        time.sleep(0.1)
        fake.latency = 0.01
        time.sleep(0.2)
        then = _send_all(bot, range(21, 31))
        time.sleep(0.1)
        last = _send_all(bot, range(31, 51))
        for thread in first + then + last:
            thread.join(10)
        bot.close()
    assert _copies(fake) == 50
    assert fake.limited == 0


def _copies(fake: FakeBot) -> int:
    return sum(len(sent) for sent in fake.sent.values())
