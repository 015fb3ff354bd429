"""A Bot API that keeps answering with updates alertd cannot move past (no usable id)
does not make the bot's loop spin: it asks again after a pause, not at once."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from alertd.community.config import CommunitySpec
from alertd.members import Members
from alertd.telegram.botapi import BotApi
from alertd.telegram.chat import Chat
from alertd.telegram.poll import Poller
from tests.fakebot import TOKEN, fake_bot
from tests.pageworld import PUBLIC


def test_updates_that_never_move_the_offset_do_not_make_the_loop_spin() -> None:
    spec = CommunitySpec(name="G", public_url=PUBLIC)
    with fake_bot() as (fake, url), tempfile.TemporaryDirectory() as tmp:
        with fake.lock:  # an id that is no integer: never acted on, never passed
            fake.updates.append({"update_id": 5001.5, "message": fake.message(7, "/help")})
        bot = BotApi(TOKEN, url)
        members = Members.open(Path(tmp))
        poller = Poller(bot, Chat(members, bot, spec), poll_timeout=1).start()
        time.sleep(1.2)
        poller.close(wait=0.5)
        bot.close()
        asked = len(fake.offsets)
    assert asked <= 3, f"{asked} getUpdates in 1.2 s"  # spinning, it asked hundreds of times
    assert fake.sent.get(7, []) == []  # and never acted on it
