"""A member's chat that no longer exists (400 "chat not found": the account was deleted)
is let go like a chat that blocked the bot, not retried for ever."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from alertd.market import Market
from alertd.standin import StandInServer
from tests.botworld import ANA, BotWorld, bot_world


@pytest.fixture
def world(market: Market, standin: StandInServer, state_dir: Path) -> Iterator[BotWorld]:
    with bot_world(standin, state_dir) as world:
        yield world


@pytest.mark.slow
def test_a_chat_that_is_gone_pauses_the_members_searches(world: BotWorld, market: Market) -> None:
    world.say(ANA, "/watch")
    wizard = world.fake.messages(ANA)[-1]
    for _ in range(4):
        world.tap(wizard, "Any")
    [pay] = world.say(ANA, "audio")
    world.tap(pay, "Skip")
    world.tap(pay, "Save")
    world.cycle()
    world.fake.delete_chat(ANA)
    market.add_job(title="Audio job for an account that is gone")
    world.cycle()
    member = world.page.members.member_for_chat(ANA)
    assert member is not None
    assert [s.paused for s in world.page.members.searches_of(member.id)] == [True]
    calls = world.fake.calls
    market.add_job(title="Another audio job")
    world.cycle()
    world.cycle()
    assert world.fake.calls - calls < 10  # getUpdates only: no send retried
