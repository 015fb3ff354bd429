"""A hostile review of the Telegram pacer's round-trip credit, commands over odd
whitespace, copies unsent at a stop and the stale temp files, against real servers on
127.0.0.1 (the fake Bot API, the stand-in API)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import ThreadingHTTPServer
from typing import Any

import pytest

from alertd.telegram import botapi
from alertd.telegram.botapi import BotApi, BotApiError
from alertd.telegram.pace import BusyError, Pacer
from tests import fakebot
from tests.fakebot import TOKEN, FakeBot, fake_bot


def _send_all(bot: BotApi, chats: range) -> list[threading.Thread]:
    """One thread a chat, each sending that chat its copy; started."""

    def send(chat: int) -> None:
        with contextlib.suppress(BotApiError):  # a 429: fake.limited tells
            bot.send(chat, f"job for {chat}")

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


class _Clock:
    """A monotonic clock a test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _send(pacer: Pacer, clock: _Clock, chat: int, trip: float) -> None:
    with pacer.slot(chat, patience=0):
        clock.now += trip


def test_a_chats_next_message_waits_its_second_after_the_network_got_faster() -> None:
    clock = _Clock()
    pacer = Pacer(clock=clock)
    for chat in range(1, 5):
        _send(pacer, clock, chat, 0.4)  # a congested network: 0.2 s each way
    # The alert to chat 7 went the slow way (0.2 s) and came back the fast way (10 ms):
    # Telegram saw it 10 ms before its answer ended, not 0.105 s.
    _send(pacer, clock, 7, 0.21)
    answered = clock.now
    _send(pacer, clock, 8, 0.02)  # the next send shows the network is fast now
    clock.now = answered + 0.9  # the member's reply 0.9 s later would reach Telegram
    with pytest.raises(BusyError):  # 0.91 s after the alert: a 429
        _send(pacer, clock, 7, 0.02)
    clock.now = answered + 1.0
    _send(pacer, clock, 7, 0.02)  # a second after Telegram saw the alert: it may go


class _SlowBack(FakeBot):
    """A network whose delay is all on the way back (0.3 s); the first send to
    ``LATE`` also spends 0.4 s on its way there (its packets were retransmitted)."""

    LATE = 7

    def _api_sendMessage(self, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        with self.lock:
            late = int(params["chat_id"]) == self.LATE and not self.sent.get(self.LATE)
        if late:
            time.sleep(0.4)
        answer = self._send_message(params)  # Telegram's stamp
        time.sleep(0.3)
        return answer


@contextmanager
def _serve(bot: FakeBot) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), fakebot._handler(bot))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.slow  # seconds of timeouts and pacing
def test_a_send_that_timed_out_is_counted_from_when_alertd_gave_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Round trips of 0.3 s, all of it the way back: the pacer credits 0.15 s. The alert
    # to chat 7 reaches Telegram 0.4 s after it left and alertd gives up waiting at
    # 0.5 s (its 15 s, scaled): no answer came back, so no way back can be credited.
    # Credited anyway, the member's reply goes 0.95 s after Telegram saw the alert.
    monkeypatch.setattr(botapi, "CALL_TIMEOUT", 0.5)
    fake = _SlowBack()
    with _serve(fake) as url:
        bot = BotApi(TOKEN, url)
        for chat in range(1, 5):
            bot.send(chat, "an alert")
        with pytest.raises(BotApiError, match="no answer in time"):
            bot.send(_SlowBack.LATE, "an alert")
        bot.send(_SlowBack.LATE, "your /list", urgent=True)
        time.sleep(0.4)  # the answers still on their way back
        bot.close()
    assert len(fake.messages(_SlowBack.LATE)) == 2
    assert fake.limited == 0
