"""A member's alert to their chat with the community bot, paced with the bot's replies.

The message is today's Telegram alert (``render.render_telegram``), with one inline
button that stops the search it is about (a tap: ``alertd.telegram.chat`` removes it,
if the chat is still that search's member's). A chat that refuses the bot for good (403:
the member blocked it) pauses that member's searches, so alertd does not retry for ever;
a 429 is the service asking to wait, and the alert waits that long.
"""

from __future__ import annotations

import logging
import threading
from datetime import tzinfo

from alertd.community.provider import CHAT_SCHEME
from alertd.deliver import Sender
from alertd.members import Members
from alertd.models import Target
from alertd.outcome import Outcome
from alertd.render import Message, render_telegram
from alertd.telegram.botapi import BotApi, BotApiError, Button, Keyboard
from alertd.telegram.pace import StoppedError

log = logging.getLogger(__name__)

STOP_PREFIX = "x:"  # callback data of an alert's "stop this search" button: x:<search id>


def chat_of(target: Target) -> int | None:
    """The chat a member's bot target sends to, or None for any other target."""
    url = target.url or ""
    if not url.startswith(CHAT_SCHEME):
        return None
    try:
        return int(url[len(CHAT_SCHEME) :])
    except ValueError:
        return None


def stop_button(message: Message) -> Keyboard | None:
    """The one-tap way out of the search a member's alert is about."""
    links = message.links
    if links is None or links.search is None:
        return None
    return [[Button("Stop this search", f"{STOP_PREFIX}{links.search}")]]


def send_to_chat(
    bot: BotApi,
    members: Members,
    chat_id: int,
    message: Message,
    tz: tzinfo | None,
    stop: threading.Event | None = None,
) -> Outcome:
    """Send ``message`` to ``chat_id`` through the shared pacer; what Telegram did."""
    text, keyboard = render_telegram(message, tz), stop_button(message)
    try:
        try:
            bot.send(chat_id, text, keyboard, stop=stop)
        except BotApiError as exc:
            if exc.migrate_to is None or exc.migrate_to == chat_id:
                raise
            members.move_chat(chat_id, exc.migrate_to)  # a group made a supergroup
            log.info("a group with the bot became a supergroup: its alerts follow it")
            bot.send(exc.migrate_to, text, keyboard, stop=stop)
    except StoppedError:
        return Outcome(False, "alertd stopped before the send", unsent=True)
    except BotApiError as exc:
        if exc.blocked:
            paused = members.block_chat(chat_id)
            if paused:
                log.warning("a member blocked the bot: their %d searches are paused", paused)
            else:
                log.warning("a member blocked the bot: their chat is no longer sent to")
            return Outcome(False, f"the member's chat refused the bot ({exc})", permanent=True)
        if exc.retry_after is not None:
            return Outcome(False, str(exc), retry_after=exc.retry_after)
        return Outcome(False, str(exc), unknown=exc.unknown, refused_message=exc.code in (400, 413))
    return Outcome(True)


def with_bot(
    send: Sender,
    bot: BotApi,
    members: Members,
    tz: tzinfo | None = None,
    stop: threading.Event | None = None,
) -> Sender:
    """``send``, but a member's chat target gets its alert from the community bot."""

    def route(target: Target, message: Message) -> Outcome:
        chat_id = chat_of(target)
        if chat_id is None:
            return send(target, message)
        return send_to_chat(bot, members, chat_id, message, tz, stop)

    return route
