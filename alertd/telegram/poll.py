"""The bot's long-poll loop: a thread of ``alertd run``, beside the community page.

It asks getUpdates from the offset stored in the members table, hands each update to
``Chat.handle`` (which stores the offset past it with the change it made), and asks
again. It never touches a cycle: the cycle reads the members table as it does after a
page's sign-up. When Telegram cannot be reached, or the members file cannot be written,
it waits (``BACKOFF``, clamped to the last) and tries the same updates again: nothing is
skipped that was not done.
"""

from __future__ import annotations

import logging
import threading
from datetime import tzinfo

from alertd.community.config import CommunitySpec
from alertd.community.lookup import Lookup
from alertd.deliver import Sender
from alertd.errors import StoreError
from alertd.members import Members
from alertd.telegram.botapi import POLL_TIMEOUT, BotApi, BotApiError, bot_for
from alertd.telegram.chat import Chat
from alertd.telegram.send import with_bot

log = logging.getLogger(__name__)

BACKOFF = (1.0, 2.0, 5.0, 15.0, 30.0)
# Seconds before asking again after an answer whose updates did not move the offset
# (none had a usable id): a Bot API that keeps sending them must not make the loop spin.
STUCK_WAIT = 1.0
UNAUTHORIZED = (401, 404)  # a revoked or mistyped token: said once, retried slowly


class Poller:
    """Runs ``chat`` on the bot's updates in a thread until ``close``."""

    def __init__(self, bot: BotApi, chat: Chat, poll_timeout: int = POLL_TIMEOUT) -> None:
        self.bot = bot
        self.chat = chat
        self.poll_timeout = poll_timeout
        self.stop = chat.stop
        self.thread = threading.Thread(target=self._run, name="telegram", daemon=True)
        self.failures = 0

    def start(self) -> Poller:
        """Poll in a thread; returns self."""
        self.thread.start()
        return self

    def close(self, wait: float = 2.0) -> None:
        """Stop polling: an update being handled is finished first, within ``wait`` s."""
        self.stop.set()
        self.thread.join(wait)

    def wrap(
        self, send: Sender, tz: tzinfo | None = None, stop: threading.Event | None = None
    ) -> Sender:
        """``send``, with members' chats reached through this bot (and its pacer); a
        send waiting for its slot gives up when ``stop`` (the daemon's) is set."""
        return with_bot(send, self.bot, self.chat.members, tz, stop or self.stop)

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                self.turn()
                self.failures = 0
            except (BotApiError, StoreError) as exc:
                self._wait_after(exc)
            except Exception:  # a bug of ours must not end the bot for good
                log.exception("the Telegram bot's loop failed; it goes on")
                self._wait_after(None)

    def turn(self) -> None:
        """One getUpdates and the updates it brought."""
        if self.bot.username is None:
            self.bot.get_me()
            log.info("community bot @%s answering on Telegram", self.bot.username)
        offset = self.chat.members.telegram_offset()
        updates = self.bot.get_updates(offset, self.poll_timeout)
        self.chat.handle(updates)
        if updates and self.chat.members.telegram_offset() == offset:
            self.stop.wait(STUCK_WAIT)

    def _wait_after(self, exc: Exception | None) -> None:
        delay = BACKOFF[min(self.failures, len(BACKOFF) - 1)]
        self.failures += 1
        if isinstance(exc, BotApiError) and exc.code in UNAUTHORIZED:
            delay = BACKOFF[-1]
            if self.failures == 1:
                log.error("Telegram refused the community bot's token (%s): check "
                          "community.telegram.token", exc.code)  # fmt: skip
        elif exc is not None and self.failures in (1, 10, 100):
            log.warning("the Telegram bot cannot poll: %s; trying again in %gs", exc, delay)
        self.stop.wait(delay)


def serve_bot(
    spec: CommunitySpec,
    members: Members,
    lookup: Lookup | None,
    poll_timeout: int = POLL_TIMEOUT,
    tz_name: str = "UTC",
) -> Poller | None:
    """The community bot's loop in a thread, when ``spec`` has ``telegram:`` (None if
    not); its client (and pacer) is the process's one for that token (``bot_for``)."""
    if spec.telegram is None:
        return None
    bot = bot_for(spec.telegram.token, spec.telegram.api_url)
    chat = Chat(members, bot, spec, lookup, tz_name=tz_name)
    return Poller(bot, chat, poll_timeout).start()
