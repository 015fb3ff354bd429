"""One job out to many members' chats under Telegram's conditions: in a 429 storm every
send waits what Telegram asked, none is hammered, and each member gets their one copy in
the end; a slow round trip (several sends in flight) does not slow the fan-out."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from alertd.market import Market
from alertd.members import SearchDraft
from alertd.models import DeliveryStatus
from alertd.pipeline import PARALLEL_SENDS
from alertd.standin import StandInServer
from alertd.store import Store
from tests.botworld import BotWorld, bot_world

CHATS = range(101, 141)


@pytest.fixture
def world(market: Market, standin: StandInServer, state_dir: Path) -> Iterator[BotWorld]:
    with bot_world(standin, state_dir) as world:
        for chat in CHATS:
            member = world.page.members.add_feed_member(SearchDraft(title="Audio", q="audio"))
            world.page.members.telegram_update(
                None, lambda book, m=member.member.id, c=chat: book.attach(m, c)
            )
        yield world


@pytest.mark.slow
def test_a_storm_of_429s_is_waited_out_and_every_member_gets_one_copy(
    world: BotWorld, market: Market
) -> None:
    world.cycle()  # primes
    market.add_job(title="Audio transcription, Spanish")
    world.fake.storm(1.5, retry_after=1)
    world.cycle()
    stormed = world.fake.calls
    copies = {chat: len(world.fake.messages(chat)) for chat in CHATS}
    # Only those in flight when a 429 came wait (a few sends are in flight at once; the
    # 1.5 s storm has two such moments with retry_after 1)
    assert sum(copies.values()) >= len(CHATS) - 2 * PARALLEL_SENDS
    time.sleep(1.1)  # what the 429s asked
    world.cycle()
    assert {chat: len(world.fake.messages(chat)) for chat in CHATS} == dict.fromkeys(CHATS, 1)
    assert world.fake.limited == 0  # the pacer itself never broke a limit
    assert stormed < 2 * len(CHATS)  # no send was retried in a loop


@pytest.mark.slow  # seconds of Telegram's pacing: run with the slow tests
def test_a_slow_round_trip_does_not_slow_a_fan_out_below_telegrams_rate(
    world: BotWorld, market: Market
) -> None:
    world.cycle()  # primes
    world.fake.latency = 0.1  # each send answers 100 ms late, as across the internet
    market.add_job(title="Audio transcription, Spanish")
    world.cycle()
    times = sorted(s.at for chat in CHATS for s in world.fake.messages(chat))
    assert len(times) == len(CHATS) and world.fake.limited == 0
    # One at a time that is 40 × 0.1 s = 4 s; at Telegram's 30 a second, about 1 s.
    assert times[-1] - times[0] < 2.0


def test_copies_waiting_their_turn_when_alertd_stops_go_out_first_thing_after(
    world: BotWorld, market: Market
) -> None:
    world.cycle()  # primes
    market.add_job(title="Audio transcription, Spanish")
    stop = threading.Event()
    threading.Timer(0.4, stop.set).start()  # SIGTERM, within the first second's 30 sends
    world.cycle(stop)
    assert 0 < sum(len(world.fake.messages(chat)) for chat in CHATS) < len(CHATS)
    with Store.open(world.config.state_dir) as store:
        waiting = [r for r in store.owed.values() if r.status is DeliveryStatus.PENDING]
    assert waiting and all(r.attempts == 0 for r in waiting)  # no failure counted
    world.cycle()  # the restart's first cycle: the rest go now, not in a minute
    assert {chat: len(world.fake.messages(chat)) for chat in CHATS} == dict.fromkeys(CHATS, 1)
    assert world.fake.limited == 0


def test_a_reply_refused_with_a_429_is_sent_once_the_wait_is_over(world: BotWorld) -> None:
    # A restarted bot cannot know what it sent in its last second: Telegram may answer
    # its first reply with a 429. The member still gets the answer, after the wait.
    world.fake.storm(0.3, retry_after=1)
    [answer] = world.say(CHATS[0], "/help")
    assert "/watch" in answer.text
