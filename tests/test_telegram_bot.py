"""The community bot end to end: a scripted member talks to it through the fake Bot
API while the page, the stand-in API and real cycles run; an admin-only group; a
blocked bot."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from alertd.market import Market
from alertd.members import SearchDraft
from alertd.standin import StandInServer
from tests.botworld import ANA, GROUP, BotWorld, bot_world
from tests.fakebot import BOT_USERNAME
from tests.pageworld import csrf_of


@pytest.fixture
def world(market: Market, standin: StandInServer, state_dir: Path) -> Iterator[BotWorld]:
    with bot_world(standin, state_dir) as world:
        yield world


def test_a_member_links_watches_gets_an_alert_and_stops_it(world: BotWorld, market: Market) -> None:
    market.add_job(title="Spanish audio transcription", category="Transcription")
    feeder = world.page.members.add_feed_member(SearchDraft(title="First", q="nothing"))
    manage = f"/m/{world.page.members.manage_token(feeder.member.id)}"
    with world.page.client() as browser:  # "get it on Telegram" on the manage page
        answer = browser.post(f"{manage}/telegram", data={"csrf_token": csrf_of(browser, manage)})
    assert answer.status_code == 303
    link = answer.headers["location"]
    assert link.startswith(f"https://t.me/{BOT_USERNAME}?start=")
    code = link.rpartition("=")[2]

    [linked] = world.say(ANA, f"/start {code}")
    assert "Linked" in linked.text
    assert world.page.members.export(feeder.member.id)["member"]["telegram_chat"] == ANA
    with world.page.client() as browser:
        assert 'id="chat"' in browser.get(manage).text  # the page says where alerts go
    [used] = world.say(ANA, f"/start {code}")  # single use
    assert "used or expired" in used.text

    [wizard] = world.say(ANA, "/watch")
    assert "Which category?" in wizard.text
    assert "Transcription" in dict(wizard.buttons())  # from /jobs/facets
    world.tap(wizard, "Transcription")
    assert "Which language?" in wizard.text
    for _ in ("language", "country", "pay_type"):
        world.tap(wizard, "Any")
    assert "Keywords" in wizard.text
    [ask_pay] = world.say(ANA, "audio")
    assert "least pay" in ask_pay.text
    world.tap(ask_pay, "Skip")
    assert "1 open job matches it now" in ask_pay.text and "“audio”" in ask_pay.text
    world.tap(ask_pay, "Save")
    assert "Saved" in ask_pay.text
    [listed] = world.say(ANA, "/list")
    assert "1. <b>First</b>" in listed.text and "2. <b>audio · Transcription</b>" in listed.text

    world.cycle()  # primes: a new search starts silent
    market.add_job(title="German audio labelling", category="Transcription")
    seen = len(world.fake.messages(ANA))
    world.cycle()
    [alert] = world.fake.wait_for(ANA, 1, after=seen)
    assert "German audio labelling" in alert.text and alert.parse_mode == "HTML"
    world.tap(alert, "Stop this search")
    [stopped] = world.fake.wait_for(ANA, 1, after=seen + 1)
    assert "Stopped <b>audio · Transcription</b>" in stopped.text
    market.add_job(title="More audio work", category="Transcription")
    world.cycle()
    assert world.fake.wait_for(ANA, 1, after=seen + 2, timeout=0.5) == []
    assert world.fake.limited == 0


def test_a_group_takes_changes_from_its_admins_only(world: BotWorld) -> None:
    world.fake.admins(GROUP, 1)
    [refused] = world.say(GROUP, f"/watch@{BOT_USERNAME}", user=2)
    assert "Only this group's admins" in refused.text
    assert world.say(GROUP, "hello everyone", user=2, replies=0) == []  # chatter: ignored
    assert world.say(GROUP, "/watch@other_bot", user=1, replies=0) == []  # not ours
    [wizard] = world.say(GROUP, "/watch", user=1)
    world.tap(wizard, "Any", user=2)  # a member's tap changes nothing
    assert "Which category?" in wizard.text
    assert world.fake.answered[-1]["text"] == "Only this group's admins may change its searches."
    assert world.say(GROUP, "/cancel", user=2)[0].text.startswith("Only this group's admins")
    for _ in range(4):
        world.tap(wizard, "Any", user=1)
    assert "Keywords" in wizard.text
    [pay] = world.say(GROUP, "translation", user=1)  # the admin who started it types
    assert "least pay" in pay.text
    world.tap(pay, "Skip", user=1)
    world.tap(pay, "Save", user=1)
    assert "Saved" in pay.text
    [listed] = world.say(GROUP, "/list", user=2)  # anyone may look
    assert "1. " in listed.text
    [refused] = world.say(GROUP, "/stop 1", user=2)
    assert "Only this group's admins" in refused.text
    [stopped] = world.say(GROUP, "/stop 1", user=1)
    assert "Stopped 1" in stopped.text


def paused_and_left_alone(world: BotWorld, market: Market) -> None:
    """After its chat refused the bot for good, a member's search is paused at the next
    alert, and no cycle sends to that chat again."""
    market.add_job(title="Audio job nobody will read")
    world.cycle()
    member = world.page.members.member_for_chat(ANA)
    assert member is not None
    assert [s.paused for s in world.page.members.searches_of(member.id)] == [True]
    calls = world.fake.calls
    market.add_job(title="Another audio job")
    world.cycle()
    world.cycle()
    assert world.fake.calls - calls < 10  # getUpdates only: no send retried


def test_a_blocked_bot_pauses_the_members_searches(world: BotWorld, market: Market) -> None:
    world.watch(ANA, "audio")
    world.cycle()
    world.fake.block(ANA)
    paused_and_left_alone(world, market)
    world.fake.blocked.clear()
    [resumed] = world.say(ANA, "/resume")
    assert "Resumed 1" in resumed.text


@pytest.mark.slow
def test_a_chat_that_is_gone_pauses_the_members_searches(world: BotWorld, market: Market) -> None:
    """400 "chat not found" (a deleted account) is let go like a block, not retried."""
    world.watch(ANA, "audio")
    world.cycle()
    world.fake.delete_chat(ANA)
    paused_and_left_alone(world, market)


def test_a_chat_linked_after_a_search_was_built_gets_its_alerts(world: BotWorld) -> None:
    feeder = world.page.members.add_feed_member(SearchDraft(title="Old", q="audio")).member
    provider = world.page.server.provider
    [before] = provider.searches()  # built once, as a cycle would
    assert not any((t.url or "").startswith("alertd-telegram://") for t in before.targets)
    world.page.members.telegram_update(None, lambda book: book.attach(feeder.id, ANA))
    [after] = provider.searches()
    assert f"alertd-telegram://{ANA}" in [t.url for t in after.targets]
