"""The community bot served for real: the page, the bot's loop against the fake Bot
API (tests/fakebot.py), the stand-in API, and real cycles delivering through the bot."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from alertd.api import OpenTrainClient
from alertd.config import Config, parse_config
from alertd.deliver import sender_for, with_feeds
from alertd.feeds import Feeds
from alertd.pipeline import run_once
from alertd.standin import StandInServer
from alertd.store import Store
from alertd.telegram.poll import Poller, serve_bot
from tests.fakebot import TOKEN, FakeBot, Sent, fake_bot
from tests.pageworld import PageWorld, page_world

ANA = 4242  # a member's private chat (its id is the member's own)
GROUP = -1001234  # a group


@dataclass
class BotWorld:
    """The page, the bot's loop, the fake Bot API, and a config naming them all."""

    page: PageWorld
    fake: FakeBot
    poller: Poller
    config: Config

    def cycle(self, stop: threading.Event | None = None) -> None:
        """One real cycle of every member's search, delivered through the bot; ``stop``
        is the daemon's (set: it is stopping)."""
        subs = self.page.server.subscriptions(self.config)
        with (
            Store.open(self.config.state_dir) as store,
            OpenTrainClient(self.page.standin.url) as client,
        ):
            send = with_feeds(sender_for(10.0, self.config.tz), Feeds.open(self.config.state_dir))
            send = self.poller.wrap(send, stop=stop)
            run_once(self.config, client, store, send, subscriptions=subs, stop=stop)

    def say(self, chat: int, text: str, user: int | None = None, replies: int = 1) -> list[Sent]:
        """A member types ``text``; the bot's next ``replies`` messages to the chat."""
        before = len(self.fake.messages(chat))
        update = self.fake.say(chat, text, user)
        assert self.fake.wait_confirmed(update), "the bot did not take the update"
        return self.fake.wait_for(chat, replies, after=before, timeout=5 if replies else 0.3)

    def watch(self, chat: int, keywords: str) -> None:
        """``/watch`` through the keyboards: any category, language, country and pay
        type, ``keywords`` typed, no minimum pay, saved."""
        self.say(chat, "/watch")
        wizard = self.fake.messages(chat)[-1]
        for _ in range(4):
            self.tap(wizard, "Any")
        [pay] = self.say(chat, keywords)
        self.tap(pay, "Skip")
        self.tap(pay, "Save")

    def tap(self, sent: Sent, label: str, user: int | None = None) -> Sent:
        """A member taps the button labelled ``label``; the message as it is after."""
        data = dict(sent.buttons())[label]
        update = self.fake.tap(sent, data, user)
        assert self.fake.wait_confirmed(update)
        return sent


@contextmanager
def bot_world(standin: StandInServer, state_dir: Path) -> Iterator[BotWorld]:
    """A page with ``community.telegram`` and its bot polling the fake, until the block ends."""
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
