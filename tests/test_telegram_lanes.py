"""While one job goes out to many members' chats at Telegram's pace, every other target
is served beside it, not after it: the members' feeds (and any mail, webhook or the
operator's channel) do not wait the fan-out's seconds."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from alertd.feeds import FEEDS_DIR
from alertd.market import Market
from alertd.members import SearchDraft
from alertd.standin import StandInServer
from tests.botworld import BotWorld, bot_world

CHATS = range(201, 271)  # 70 chats: Telegram's 30 a second make it a 2 s fan-out


@pytest.fixture
def world(market: Market, standin: StandInServer, state_dir: Path) -> Iterator[BotWorld]:
    with bot_world(standin, state_dir) as world:
        for chat in CHATS:  # each member reads a feed and has the bot
            member = world.page.members.add_feed_member(SearchDraft(title="Audio", q="audio"))
            world.page.members.telegram_update(
                None, lambda book, m=member.member.id, c=chat: book.attach(m, c)
            )
        yield world


def test_members_feeds_are_written_while_their_chats_wait_for_telegrams_pace(
    world: BotWorld, market: Market
) -> None:
    world.cycle()  # primes
    feeds = world.config.state_dir / FEEDS_DIR
    market.add_job(title="Audio transcription, Spanish")
    began, began_wall = time.monotonic(), time.time()
    world.cycle()
    chats = sorted(s.at - began for chat in CHATS for s in world.fake.messages(chat))
    written = sorted(p.stat().st_mtime - began_wall for p in feeds.iterdir())
    assert len(chats) == len(CHATS) and len(written) >= len(CHATS)
    assert chats[-1] > 1.9  # the fan-out took Telegram's two seconds and more
    assert written[-1] < 1.2  # the feeds did not wait for it
    assert world.fake.limited == 0
