"""The community bot end to end: a scripted member talks to it through the fake Bot
API while the page, the stand-in API and real cycles run; an admin-only group; a
blocked bot; input no member should be able to break it with."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from alertd.api import OpenTrainClient
from alertd.config import Config, parse_config
from alertd.deliver import sender_for, with_feeds
from alertd.feeds import Feeds
from alertd.market import Market
from alertd.members import SearchDraft
from alertd.pipeline import run_once
from alertd.standin import StandInServer
from alertd.store import Store
from alertd.telegram.poll import Poller, serve_bot
from tests.fakebot import BOT_USERNAME, TOKEN, FakeBot, Sent, fake_bot
from tests.pageworld import PageWorld, csrf_of, page_world

ANA = 4242  # a member's private chat (its id is the member's own)
GROUP = -1001234  # a group


@dataclass
class BotWorld:
    """The page, the bot's loop, the fake Bot API, and a config naming them all."""

    page: PageWorld
    fake: FakeBot
    poller: Poller
    config: Config

    def cycle(self) -> None:
        """One real cycle of every member's search, delivered through the bot."""
        subs = self.page.server.subscriptions(self.config)
        with (
            Store.open(self.config.state_dir) as store,
            OpenTrainClient(self.page.standin.url) as client,
        ):
            send = with_feeds(sender_for(10.0, self.config.tz), Feeds.open(self.config.state_dir))
            run_once(self.config, client, store, self.poller.wrap(send), subscriptions=subs)

    def say(self, chat: int, text: str, user: int | None = None, replies: int = 1) -> list[Sent]:
        """A member types ``text``; the bot's next ``replies`` messages to the chat."""
        before = len(self.fake.messages(chat))
        update = self.fake.say(chat, text, user)
        assert self.fake.wait_confirmed(update), "the bot did not take the update"
        return self.fake.wait_for(chat, replies, after=before, timeout=5 if replies else 0.3)

    def tap(self, sent: Sent, label: str, user: int | None = None) -> Sent:
        """A member taps the button labelled ``label``; the message as it is after."""
        data = dict(sent.buttons())[label]
        update = self.fake.tap(sent, data, user)
        assert self.fake.wait_confirmed(update)
        return sent


@pytest.fixture
def world(market: Market, standin: StandInServer, state_dir: Path) -> Iterator[BotWorld]:
    with (
        fake_bot() as (fake, url),
        page_world(standin, state_dir, telegram={"token": TOKEN, "api_url": url}) as page,
    ):
        spec = page.server.page.spec
        poller = serve_bot(spec, page.members, page.server.page.lookup, poll_timeout=1)
        assert poller is not None
        page.server.page.telegram = lambda: poller.bot.username
        text = (
            f"api_url: {standin.url}\nstate_dir: {state_dir}\n"
            f"community:\n  name: {spec.name}\n  public_url: {spec.public_url}\n"
            f"  telegram: {{token: '{TOKEN}', api_url: '{url}'}}\n"
        )
        config = parse_config(text, str(state_dir.parent / "alerts.yaml"))
        try:
            yield BotWorld(page, fake, poller, config)
        finally:
            poller.close(wait=0.1)


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
    assert "1 open jobs match it now" in ask_pay.text and "“audio”" in ask_pay.text
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


def test_a_blocked_bot_pauses_the_members_searches(world: BotWorld, market: Market) -> None:
    world.say(ANA, "/watch")
    wizard = world.fake.messages(ANA)[-1]
    for _ in range(4):
        world.tap(wizard, "Any")
    [pay] = world.say(ANA, "audio")
    world.tap(pay, "Skip")
    world.tap(pay, "Save")
    world.cycle()
    world.fake.block(ANA)
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
    world.fake.blocked.clear()
    [resumed] = world.say(ANA, "/resume")
    assert "Resumed 1" in resumed.text


ODD_UPDATES: list[dict[str, object]] = [
    {"message": {"message_id": 1, "chat": {"id": ANA, "type": "private"}, "sticker": {}}},
    {"message": {"message_id": 1, "chat": {"id": ANA, "type": "private"}, "document": {}}},
    {
        "edited_message": {
            "message_id": 1,
            "chat": {"id": ANA, "type": "private"},
            "text": "/stop all",
        }
    },
    {
        "message": {
            "message_id": 1,
            "chat": {"id": ANA, "type": "private"},
            "forward_origin": {"type": "hidden_user"},
            "text": "/stop all",
        }
    },
    {"message": {"chat": "not a chat"}},
    {"callback_query": {"id": "1", "data": "w:nonsense:9"}},
    {"poll": {"id": "1"}},
    {"message": {"message_id": 1, "chat": {"id": ANA, "type": "private"}, "text": None}},
]


def test_odd_updates_get_a_hint_or_nothing_and_the_loop_goes_on(world: BotWorld) -> None:
    kept = world.page.members.add_feed_member(SearchDraft(title="Keep me", q="x"))
    world.page.members.telegram_update(None, lambda book: book.data["members"][kept.member.id]
                                       .update({"telegram": ANA}))  # fmt: skip
    for update in ODD_UPDATES:
        before = len(world.fake.messages(ANA))
        assert world.fake.wait_confirmed(world.fake.push(update))
        hints = world.fake.messages(ANA)[before:]
        assert all("/help" in m.text for m in hints) and len(hints) <= 1, update
    assert "/watch" in world.say(ANA, "/help")[-1].text  # still answering
    assert len(world.page.members.searches_of(kept.member.id)) == 1  # no forward, no edit


def test_what_a_member_types_is_escaped_and_nothing_long_breaks_a_reply(world: BotWorld) -> None:
    [unknown] = world.say(ANA, "/<b>x</b>&" + "y" * 5000)
    assert "&lt;b&gt;" in unknown.text and "<b>x" not in unknown.text
    [other] = world.say(ANA, "/подписка")
    assert "I do not know /подписка" in other.text
    wizard = world.say(ANA, "/watch")[0]
    for _ in range(4):
        world.tap(wizard, "Any")
    [pay] = world.say(ANA, "<script>alert(1)</script> & more")
    world.tap(pay, "Skip")
    assert "&lt;script&gt;" in pay.text and "<script>" not in pay.text
    world.tap(pay, "Save")
    [listed] = world.say(ANA, "/list")
    assert "&lt;script&gt;" in listed.text
    assert all(re.search(r"<(?!/?(b|i|a)\b)", m.text) is None for m in world.fake.messages(ANA))
    [bad] = world.say(ANA, "/stop 99")
    assert "Which one?" in bad.text


def test_the_token_never_reaches_the_log(world: BotWorld, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG")
    world.say(ANA, "/help")
    assert TOKEN not in caplog.text
    assert "/bot<token>/getUpdates" in caplog.text  # httpx's own line, masked
    with httpx.Client() as client:  # the fake refuses a wrong token, as Telegram does
        assert (
            client.get(world.poller.bot.client.base_url.join("/botWRONG/getMe")).status_code == 401
        )
