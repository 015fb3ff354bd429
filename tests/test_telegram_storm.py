"""A 429 storm while one job goes out to many members' chats: every send waits what
Telegram asked, none is hammered, and each member gets their one copy in the end."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from alertd.market import Market
from alertd.members import SearchDraft
from alertd.standin import StandInServer
from tests.botworld import BotWorld, bot_world

CHATS = range(101, 141)


@pytest.fixture
def world(market: Market, standin: StandInServer, state_dir: Path) -> Iterator[BotWorld]:
    with bot_world(standin, state_dir) as world:
        for chat in CHATS:
            member = world.page.members.add_feed_member(SearchDraft(title="Audio", q="audio"))
            world.page.members.telegram_update(
                None,
                lambda book, m=member.member.id, c=chat: book.data["members"][m].update(
                    {"telegram": c}
                ),
            )
        yield world


def test_a_storm_of_429s_is_waited_out_and_every_member_gets_one_copy(
    world: BotWorld, market: Market
) -> None:
    world.cycle()  # primes
    market.add_job(title="Audio transcription, Spanish")
    world.fake.storm(1.5, retry_after=1)
    world.cycle()
    stormed = world.fake.calls
    copies = {chat: len(world.fake.messages(chat)) for chat in CHATS}
    assert sum(copies.values()) >= len(CHATS) - 3  # only the few that met a 429 wait
    time.sleep(1.1)  # what the 429s asked
    world.cycle()
    assert {chat: len(world.fake.messages(chat)) for chat in CHATS} == dict.fromkeys(CHATS, 1)
    assert world.fake.limited == 0  # the pacer itself never broke a limit
    assert stormed < 2 * len(CHATS)  # no send was retried in a loop
