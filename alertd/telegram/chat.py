"""The conversation: one Telegram update in, one members write and a few replies out.

Updates are acted on inside one ``Members.telegram_update`` write that also stores the
bot's update offset past them, so a command is done once even across ``kill -9`` (a
reply the kill cut off is lost; the change it announced is not, and ``/list`` shows it).
A run of updates from different chats shares one write: a crowd typing at once costs
one durable write, and each chat's updates are still read in order. The API's answers
a reply needs (``/jobs/facets`` for the keyboards, how many jobs match now) come from
the page's budgeted ``Lookup``, asked outside the write.

In a private chat the member talks to the bot; in a group the bot answers only its
commands (``/cmd`` or ``/cmd@thisbot``), and only the group's admins (``getChatMember``)
may add, change or remove the group's searches. Anything else (a sticker, a file, an
edited message, a command in another language, 4,096 characters of it) gets a short
hint or nothing. Replies are HTML, and everything a member typed is escaped in them.
"""

from __future__ import annotations

import html
import logging
import threading
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from alertd.community.config import CommunitySpec
from alertd.community.lookup import Lookup
from alertd.community.rules import Facets, FormError, parse_search
from alertd.errors import StoreError
from alertd.members import ChatBook, LimitError, Members, MemberSearch, SearchDraft, as_draft
from alertd.models import PAY_TYPES
from alertd.render import units
from alertd.telegram.botapi import BotApi, BotApiError, Button, Keyboard
from alertd.telegram.pace import BusyError, StoppedError
from alertd.telegram.send import STOP_PREFIX
from alertd.words import plural

log = logging.getLogger(__name__)

MAX_ECHO = 40  # characters of a member's text repeated back (escaped)
MAX_COMMAND = 512  # characters of a command read: its name and arguments are shorter
REPLY_ROOM = 3500  # UTF-16 units of a reply's HTML: Telegram refuses 4,096 (parsed) and more
LINK_PREFIX = "l:"  # callback data of "yes, link this chat": l:<code>
BURST = 3  # one chat's updates acted on from one getUpdates answer; the rest are skipped
PATIENCE = 2.0  # seconds a reply may wait for its chat's turn; a busier chat's is dropped
REPLY_RETRY = 30.0  # a reply refused with a 429 asking at most this many seconds is retried
STOP_BUTTONS = 30  # /stop's buttons, of Telegram's 100 a keyboard; /stop N for the others
GROUP_LINK = (
    "A group's page would let anyone here change its searches, so I do not post it in "
    "the group. Admins change them with /watch, /edit and /stop."
)
OFFERED = 12  # choices on one keyboard
CHOICE_STEPS = ("category", "language", "country", "pay_type")
TEXT_STEPS = ("q", "min_pay")
STEPS = (*CHOICE_STEPS, *TEXT_STEPS, "confirm")
CHANGES = frozenset(
    {"/watch", "/stop", "/pause", "/resume", "/edit", "/digest", "/link", "/cancel"}
)
ASKS = {
    "category": "Which category?",
    "language": "Which language?",
    "country": "Which country?",
    "pay_type": "Paid how?",
    "q": "Keywords to look for? Type them (e.g. <i>transcription audio</i>), or skip.",
    "min_pay": "The least pay you want (a number, per hour unless you chose another pay "
    "type)? Type it, or skip.",
}
PAY_NAMES = {"PAY_PER_HOUR": "per hour", "FIXED_PRICE": "fixed price", "PAY_PER_LABEL": "per label"}
HELP = (
    "/watch — a new search, step by step\n"
    "/list — your searches\n"
    "/edit N — change search N\n"
    "/pause, /resume [N|all] — hold alerts, or have them again\n"
    "/stop [N|all] — delete a search\n"
    "/digest HOUR — one message a day at that hour; /digest off — as they come\n"
    "/link — your page, to get alerts by e-mail or a feed instead\n"
    "/help — this"
)


def esc(text: object, limit: int = MAX_ECHO) -> str:
    """Member-typed text, cut and escaped for HTML parse mode."""
    value = str(text)
    value = value if len(value) <= limit else value[: limit - 1] + "…"
    return html.escape(value, quote=True)


@dataclass
class Reply:
    """A message to the chat; ``edit``: the message (a wizard step) to change instead."""

    text: str
    keyboard: Keyboard | None = None
    edit: int | None = None


@dataclass(frozen=True)
class Incoming:
    """An update as the conversation reads it."""

    update_id: int | None
    chat_id: int
    user_id: int | None
    group: bool
    text: str | None = None
    command: str | None = None  # "/watch", lower case, without "@thisbot"
    args: str = ""
    data: str | None = None  # a button's callback data
    query_id: str | None = None
    message_id: int | None = None  # the message a button was under
    edited: bool = False
    as_group: bool = False  # sent by an anonymous admin, as the group itself


def parse_update(update: dict[str, Any], username: str | None) -> Incoming | None:
    """What an update says, or None when it is nothing the bot answers (a command to
    another bot, an update of a kind it did not ask for, a malformed one)."""
    update_id = update.get("update_id") if isinstance(update.get("update_id"), int) else None
    query = update.get("callback_query")
    if isinstance(query, dict):
        message = query.get("message") if isinstance(query.get("message"), dict) else {}
        chat = _chat(message)
        if chat is None:
            return None
        return Incoming(
            update_id,
            chat[0],
            _user(query),
            chat[1],
            data=str(query.get("data") or "")[:64],
            query_id=str(query.get("id") or ""),
            message_id=message.get("message_id") if isinstance(message, dict) else None,
        )
    edited = "message" not in update
    message = update.get("message") or update.get("edited_message")
    if not isinstance(message, dict) or (chat := _chat(message)) is None:
        return None
    text = message.get("text") if isinstance(message.get("text"), str) else None
    command, args = None, ""
    forwarded = any(k in message for k in ("forward_origin", "forward_from", "forward_date"))
    if text is not None and text.startswith("/") and not forwarded:  # a forward is no order
        # Invisible marks a keyboard adds (direction, zero-width) are no part of a command;
        # a phone may put a newline before its argument.
        typed = "".join(c for c in text[:MAX_COMMAND] if unicodedata.category(c) != "Cf")
        head, *rest = typed.split(maxsplit=1)
        name, at, bot = head.partition("@")
        if at and (username is None or bot.lower() != username.lower()):
            return None  # addressed to another bot in the group
        command, args = name.lower()[:64], " ".join("".join(rest).split())[:200]
    sender = message.get("sender_chat")
    as_group = chat[1] and isinstance(sender, dict) and sender.get("id") == chat[0]
    return Incoming(
        update_id,
        chat[0],
        _user(message),
        chat[1],
        text,
        command,
        args,
        edited=edited,
        as_group=as_group,
    )


def _chat(message: object) -> tuple[int, bool] | None:
    chat = message.get("chat") if isinstance(message, dict) else None
    if not isinstance(chat, dict) or not isinstance(chat.get("id"), int):
        return None
    return chat["id"], chat.get("type") != "private"


def _user(container: dict[str, Any]) -> int | None:
    user = container.get("from")
    return user.get("id") if isinstance(user, dict) and isinstance(user.get("id"), int) else None


def describe(draft: SearchDraft | MemberSearch) -> str:
    """A search as the member reads it, escaped: its title and what it looks for."""
    parts = [f"“{esc(draft.q, 200)}”"] if draft.q else []
    parts += [esc(v, 100) for v in (draft.category, draft.language, draft.country) if v]
    if draft.pay_type:
        parts.append(PAY_NAMES.get(draft.pay_type, esc(draft.pay_type)))
    pay = draft.filters.min_pay
    amounts = [] if pay is None else [v for v in (pay.hourly, pay.fixed, pay.per_label) if v]
    if amounts:
        parts.append(f"at least {amounts[0]:g}")
    if draft.pace == "daily":
        parts.append(f"daily at {draft.digest_hour or 0:02d}:00")
    looks = ", ".join(parts) or "every open job"
    return f"<b>{esc(draft.title, 80)}</b> — {looks}"


Change = Callable[[ChatBook], list[Reply]]


def _nothing(book: ChatBook) -> list[Reply]:
    return []


def _same(replies: list[Reply]) -> list[Reply]:
    return replies


@dataclass(frozen=True)
class Plan:
    """What one update does: ``change`` inside the members write (its replies), then
    ``after`` outside it (what needs the API, such as a count)."""

    incoming: Incoming | None
    change: Change
    after: Callable[[list[Reply]], list[Reply]] = _same
    toast: str | None = None  # a button's answer, shown to the one who tapped


def _chat_key(update: dict[str, Any]) -> object:
    """The chat an update comes from (None: none readable), to keep one a batch."""
    for kind in ("message", "edited_message", "callback_query"):
        body = update.get(kind)
        if isinstance(body, dict):
            message = body.get("message", body) if kind == "callback_query" else body
            chat = _chat(message)
            return None if chat is None else chat[0]
    return None


@dataclass
class Chat:
    """The bot's side of every chat."""

    members: Members
    bot: BotApi
    spec: CommunitySpec
    lookup: Lookup | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    tz_name: str = "UTC"  # the config's time zone: a digest's hour is read in it
    _flooded: set[int] = field(default_factory=set)  # ids of the updates to skip

    # -- one update ------------------------------------------------------------------

    def handle(self, updates: list[dict[str, Any]]) -> None:
        """Act on updates (in update order) and answer them. Each run of updates from
        different chats is one write, with the offset past its last update: a crowd
        typing at once costs one durable write, not one each. A StoreError (the write
        failed: nothing was done, the offset did not move) is raised for the loop to
        retry; any other failure is logged and its update skipped, so one odd update
        never sticks."""
        pending = self._unseen(updates)
        self._flooded = self._over_budget(pending)
        while pending and not self.stop.is_set():
            chats: set[object] = set()
            batch: list[dict[str, Any]] = []
            for update in pending:
                chat = _chat_key(update)
                if chat is not None and chat in chats:
                    break
                chats.add(chat)
                batch.append(update)
            pending = pending[len(batch) :]
            self._handle_batch(batch)

    def _unseen(self, updates: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """``updates`` the bot has not acted on, once each, in update order: an update
        below the stored offset was acted on already (a Bot API that answers an update
        again, or out of order, must not stop a second search), and one without an id
        is left alone (the offset could never move past it: it would be acted on at
        every poll)."""
        offset = self.members.telegram_offset()
        unseen: dict[int, dict[str, Any]] = {}
        for update in updates:
            update_id = update.get("update_id")
            if type(update_id) is not int or update_id < offset:
                continue
            unseen.setdefault(update_id, update)
        return [unseen[k] for k in sorted(unseen)]

    def _over_budget(self, updates: list[dict[str, Any]]) -> set[int]:
        """The ids of ``updates`` a chat sent past ``BURST`` in one answer: they came at
        once, and their replies would go one a second (Telegram's limit for a chat)
        while every other chat waited for its own. They are skipped (the offset moves
        past them)."""
        counted: dict[int, int] = {}
        skipped: set[int] = set()
        for update in updates:
            chat = _chat_key(update)
            if isinstance(chat, int):
                counted[chat] = counted.get(chat, 0) + 1
                if counted[chat] > BURST:
                    skipped.add(update["update_id"])
        return skipped

    def _handle_batch(self, updates: list[dict[str, Any]]) -> None:
        plans = [self._plan(update) for update in updates]
        last = max((u["update_id"] for u in updates if isinstance(u.get("update_id"), int)),
                   default=None)  # fmt: skip
        try:
            results: list[list[Reply]] = self.members.telegram_update(
                last, lambda book: [plan.change(book) for plan in plans]
            )
        except StoreError:
            raise
        except Exception:  # one update's change failed: nothing was written; one by one
            if len(updates) > 1:
                for update in updates:
                    self._handle_batch([update])
                return
            log.exception("a Telegram update could not be handled; it is skipped")
            self.members.telegram_update(last, lambda book: None)
            return
        for plan, replies in zip(plans, results, strict=True):
            self._deliver(plan, replies)

    def _plan(self, update: dict[str, Any]) -> Plan:
        """What one update will do (the API asked here, outside the write)."""
        if update.get("update_id") in self._flooded:
            log.info("a Telegram chat sends faster than it is answered: an update is skipped")
            return Plan(None, _nothing)
        try:
            incoming = parse_update(update, self.bot.username)
            return Plan(None, _nothing) if incoming is None else self._act(incoming)
        except StoreError:
            raise
        except Exception:
            log.exception("a Telegram update could not be read; it is skipped")
            return Plan(None, _nothing)

    def _deliver(self, plan: Plan, replies: list[Reply]) -> None:
        incoming = plan.incoming
        if incoming is None:
            return
        try:
            replies = plan.after(replies)
        except Exception:
            log.exception("a reply in Telegram could not be made")
            replies = []
        if incoming.query_id:
            self._answer(incoming.query_id, plan.toast)
        for reply in replies:
            self._say(incoming.chat_id, reply)

    def _commit(
        self,
        incoming: Incoming,
        change: Change | None,
        after: Callable[[list[Reply]], list[Reply]] | None = None,
    ) -> Plan:
        return Plan(incoming, change or _nothing, after or _same)

    def _answer(self, query_id: str, text: str | None) -> None:
        try:
            self.bot.answer_callback(query_id, text)
        except BotApiError as exc:
            log.info("a button's answer was not taken: %s", exc)

    def _say(self, chat_id: int, reply: Reply, again: bool = True) -> None:
        try:
            if reply.edit is not None:
                self.bot.edit(chat_id, reply.edit, reply.text, reply.keyboard)
            else:
                self.bot.send(chat_id, reply.text, reply.keyboard, urgent=True, stop=self.stop,
                              patience=PATIENCE)  # fmt: skip
        except StoppedError:
            return
        except BusyError:  # a group past its 20 a minute: the loop does not wait a minute
            log.info("a reply in Telegram was dropped: its chat is at Telegram's limit")
            return
        except BotApiError as exc:
            if again and exc.retry_after is not None and exc.retry_after <= REPLY_RETRY:
                # A 429 (a restarted bot cannot know what it sent in its last second):
                # the pacer holds every send that long, then the member gets the answer.
                self._say(chat_id, reply, again=False)
                return
            if exc.blocked:
                self.members.block_chat(chat_id)
            if exc.migrate_to is not None and exc.migrate_to != chat_id:
                self.members.move_chat(chat_id, exc.migrate_to)  # made a supergroup
            log.warning("a reply in Telegram was not sent: %s", exc)

    # -- deciding --------------------------------------------------------------------

    def _act(self, inc: Incoming) -> Plan:
        if inc.edited:
            return self._commit(inc, None)  # an edited command is not a new one
        if inc.group and not self._group_may(inc):
            return self._commit(inc, None)
        if inc.group and self._needs_admin(inc) and not self._is_admin(inc):
            if inc.data is not None:  # a tap: said to the tapper alone, not to the group
                return Plan(inc, _nothing, toast=ONLY_ADMINS)
            return self._commit(inc, lambda book: [Reply(ONLY_ADMINS)])
        if inc.data is not None:
            return self._button(inc)
        if inc.command is not None:
            return self._command(inc)
        state = self.members.chat_state(inc.chat_id)
        if inc.text is not None and state is not None and state.get("step") in TEXT_STEPS:
            return self._typed(inc, state)
        if inc.group:
            return self._commit(inc, None)
        return self._commit(inc, lambda book: [Reply(HINT)])

    def _group_may(self, inc: Incoming) -> bool:
        """In a group: commands, buttons, and the wizard's own typist's answers only."""
        if inc.command is not None or inc.data is not None:
            return True
        state = self.members.chat_state(inc.chat_id)
        return (
            inc.text is not None
            and state is not None
            and state.get("by") == inc.user_id
            and state.get("step") in TEXT_STEPS
        )

    def _needs_admin(self, inc: Incoming) -> bool:
        return inc.data is not None or inc.command in CHANGES or inc.command is None

    def _is_admin(self, inc: Incoming) -> bool:
        if inc.as_group:  # only the group's anonymous admins may post as the group
            return True
        if inc.user_id is None:
            return False
        try:
            return self.bot.is_admin(inc.chat_id, inc.user_id)
        except BotApiError as exc:
            log.info("could not ask who administers a group: %s", exc)
            return False

    def _command(self, inc: Incoming) -> Plan:
        handler = COMMANDS.get(inc.command or "")
        if handler is None:
            if inc.group:
                return self._commit(inc, None)
            unknown = f"I do not know {esc(inc.command)}.\n\n{HELP}"
            return self._commit(inc, lambda book: [Reply(unknown)])
        return handler(self, inc)

    def _member(self, book: ChatBook, inc: Incoming, create: bool) -> str | None:
        member_id = book.member_id(inc.chat_id)
        if member_id is None and create and self.spec.signup_mode == "open":
            member_id = book.add_member(inc.chat_id, inc.group)
        return member_id

    def _numbered(self, book: ChatBook, member_id: str, args: str) -> list[MemberSearch] | None:
        """The searches ``args`` names: ``all`` (or nothing), or a number from /list."""
        searches = book.searches(member_id)
        if args in ("", "all"):
            return searches
        if args.isdecimal() and 1 <= int(args) <= len(searches):
            return [searches[int(args) - 1]]
        return None

    # -- commands ----------------------------------------------------------------------

    def start(self, inc: Incoming) -> Plan:
        """/start, and /start <code> from the page's "get it on Telegram" link."""
        code = inc.args.split(" ")[0]
        name = esc(self.spec.name, 100)
        if not code or inc.group:
            hello = f"Hello! I send you new jobs from <b>{name}</b> as they are posted.\n\n"
            return self._commit(inc, lambda book: [Reply(hello + HELP)])
        return self._commit(inc, lambda book: self._link(book, inc, code, confirmed=False))

    def _link(self, book: ChatBook, inc: Incoming, code: str, confirmed: bool) -> list[Reply]:
        """``code`` links this chat to its member. A chat that is another member's
        already (its own searches, or an e-mail member's alerts) moves only when the
        member taps to confirm: a link someone else sent could otherwise take over the
        chat and its searches with one tap on "Start"."""
        name = esc(self.spec.name, 100)
        owner = book.code_owner(code)
        before = book.member_id(inc.chat_id)
        if owner is not None and before not in (None, owner) and not confirmed:
            count = len(book.searches(before))
            ask = (f"This chat already gets the alerts of {plural(count, 'search', 'searches')}"
                   f" at <b>{name}</b>. Link it to the page you came from instead? Only if "
                   "that page is yours: its searches will alert here, and this chat's go "
                   "with it.")  # fmt: skip
            return [Reply(ask, [[Button("Yes, link this chat", f"{LINK_PREFIX}{code}")]])]
        if book.link(code, inc.chat_id) is None:
            return [Reply(f"That link is used or expired: get a new one from your page. {TRY}")]
        count = len(book.searches(book.member_id(inc.chat_id) or ""))
        return [Reply(f"Linked: your {count} searches at <b>{name}</b> now alert here.\n\n"
                      + HELP)]  # fmt: skip

    def help_command(self, inc: Incoming) -> Plan:
        """/help."""
        return self._commit(inc, lambda book: [Reply(HELP)])

    def list_searches(self, inc: Incoming) -> Plan:
        """/list: the chat's searches, numbered."""

        def change(book: ChatBook) -> list[Reply]:
            member_id = book.member_id(inc.chat_id)
            searches = [] if member_id is None else book.searches(member_id)
            if not searches:
                return [Reply("No searches yet: /watch adds one.")]
            text = "Your searches:"
            for n, s in enumerate(searches, 1):
                line = f"\n{n}. {describe(s)}{' (paused)' if s.paused else ''}"
                if units(text + line) > REPLY_ROOM:  # Telegram refuses 4,096 UTF-16 units
                    more = len(searches) - n + 1
                    return [Reply(f"{text}\n… and {more} more: /link shows them all.")]
                text += line
            return [Reply(text)]

        return self._commit(inc, change)

    def pause(self, inc: Incoming, paused: bool = True) -> Plan:
        """/pause [N|all] and /resume [N|all]."""
        verb = "Paused" if paused else "Resumed"

        def change(book: ChatBook) -> list[Reply]:
            member_id = book.member_id(inc.chat_id)
            chosen = None if member_id is None else self._numbered(book, member_id, inc.args)
            if member_id is None or chosen is None:
                return [Reply(f"Which one? Give a number from /list, or all. {TRY}")]
            done = book.set_paused(member_id, [s.id for s in chosen], paused)
            return [Reply(f"{verb} {done} of your searches.")]

        return self._commit(inc, change)

    def resume(self, inc: Incoming) -> Plan:
        """/resume [N|all]."""
        return self.pause(inc, paused=False)

    def stop_command(self, inc: Incoming) -> Plan:
        """/stop N, /stop all, or /stop: a button per search."""

        def change(book: ChatBook) -> list[Reply]:
            member_id = book.member_id(inc.chat_id)
            if member_id is None or not book.searches(member_id):
                return [Reply("No searches to stop.")]
            if not inc.args:
                rows = [
                    [Button(f"Stop {n}. {s.title[:40]}", f"s:{s.id}")]
                    for n, s in enumerate(book.searches(member_id)[:STOP_BUTTONS], 1)
                ]
                rows.append([Button("Stop all", "s:all")])
                return [Reply("Which search should stop?", rows)]
            chosen = self._numbered(book, member_id, inc.args)
            if chosen is None:
                return [Reply(f"Which one? Give a number from /list, or all. {TRY}")]
            done = book.remove(member_id, [s.id for s in chosen])
            return [Reply(f"Stopped {done} of your searches: no more alerts for them.")]

        return self._commit(inc, change)

    def digest(self, inc: Incoming) -> Plan:
        """/digest HOUR or /digest off."""
        arg = inc.args.lower()
        hour = int(arg) if arg.isdecimal() and int(arg) <= 23 else None
        if hour is None and arg != "off":
            return self._commit(
                inc, lambda book: [Reply(f"Give an hour from 0 to 23, or off. {TRY}")]
            )

        zone = esc(self.tz_name, 60)

        def change(book: ChatBook) -> list[Reply]:
            member_id = book.member_id(inc.chat_id)
            done = 0 if member_id is None else book.set_digest(member_id, hour)
            when = "as they come" if hour is None else f"once a day at {hour:02d}:00 {zone}"
            return [Reply(f"{plural(done, 'search', 'searches')} now alert {when}.")]

        return self._commit(inc, change)

    def link(self, inc: Incoming) -> Plan:
        """/link: the member's page (e-mail, a feed, everything at once)."""

        if inc.group:  # the page is a key to the group's searches: not for every member
            return self._commit(inc, lambda book: [Reply(GROUP_LINK)])

        def change(book: ChatBook) -> list[Reply]:
            member_id = book.member_id(inc.chat_id)
            if member_id is None:
                return [Reply(f"No searches yet: /watch adds one. {TRY}")]
            url = self.members.manage_url(member_id, self.spec.public_url)
            return [Reply(f'Your page: <a href="{html.escape(url)}">manage your searches</a> '
                          "(keep this link to yourself).")]  # fmt: skip

        return self._commit(inc, change)

    def cancel(self, inc: Incoming) -> Plan:
        """/cancel: drop a /watch or /edit half done."""

        def change(book: ChatBook) -> list[Reply]:
            book.set_state(inc.chat_id, None)
            return [Reply("Cancelled.")]

        return self._commit(inc, change)

    # -- /watch and /edit: a step at a time --------------------------------------------

    def watch(self, inc: Incoming) -> Plan:
        """/watch: a new search, from the first question."""
        facets = self._facets()

        def change(book: ChatBook) -> list[Reply]:
            if book.member_id(inc.chat_id) is None and self.spec.signup_mode != "open":
                return [Reply(f"Sign up on {esc(self.spec.public_url, 200)} first, then use "
                              "its “get it on Telegram” link.")]  # fmt: skip
            state: dict[str, Any] = {"step": STEPS[0], "form": {}, "by": inc.user_id}
            return [self._ask(book, inc.chat_id, state, facets, None)]

        return self._commit(inc, change)

    def edit(self, inc: Incoming) -> Plan:
        """/edit N: the questions again, starting from that search's answers."""
        facets = self._facets()

        def change(book: ChatBook) -> list[Reply]:
            member_id = book.member_id(inc.chat_id)
            chosen = None if member_id is None else self._numbered(book, member_id, inc.args)
            if member_id is None or not inc.args or chosen is None or len(chosen) != 1:
                return [Reply(f"Which one? /edit 1 changes the first search in /list. {TRY}")]
            search = chosen[0]
            state = {"step": STEPS[0], "form": _form_of(as_draft(search)), "by": inc.user_id,
                     "edit": search.id}  # fmt: skip
            return [self._ask(book, inc.chat_id, state, facets, None)]

        return self._commit(inc, change)

    def _facets(self) -> Facets:
        return self.lookup.facets() if self.lookup is not None else Facets()

    def _ask(
        self,
        book: ChatBook,
        chat_id: int,
        state: dict[str, Any],
        facets: Facets,
        edit: int | None,
    ) -> Reply:
        """Store ``state`` and ask its step's question (in place of ``edit``)."""
        step = state["step"]
        head = "<b>Editing your search</b>" if state.get("edit") else "<b>A new search</b>"
        head += f" ({STEPS.index(step) + 1}/{len(STEPS) - 1})" if step != "confirm" else ""
        if step in CHOICE_STEPS:
            offered = _offered(step, facets)
            state["offered"] = offered
            rows = [
                [
                    Button(_label(step, v), f"w:{step}:{i}")
                    for i, v in enumerate(offered[j : j + 2], j)
                ]
                for j in range(0, len(offered), 2)
            ]
            rows.append([Button("Any", f"w:{step}:any")])
            book.set_state(chat_id, state)
            return Reply(f"{head}\n{ASKS[step]}", rows, edit)
        if step in TEXT_STEPS:
            state["offered"] = []
            book.set_state(chat_id, state)
            return Reply(f"{head}\n{ASKS[step]}", [[Button("Skip", f"w:{step}:skip")]], edit)
        book.set_state(chat_id, state)
        return Reply("", None, edit)  # confirm: filled in after the write (a count)

    def _button(self, inc: Incoming) -> Plan:
        data = inc.data or ""
        if data.startswith(LINK_PREFIX):  # a private chat's own confirmation only
            if inc.group:
                return self._commit(inc, None)
            code = data.removeprefix(LINK_PREFIX)
            return self._commit(inc, lambda book: self._link(book, inc, code, confirmed=True))
        if data.startswith((STOP_PREFIX, "s:")):
            return self._stop_button(inc, data.split(":", 1)[1])
        step, _, choice = data.removeprefix("w:").partition(":")
        if not data.startswith("w:") or step not in STEPS:
            return self._commit(inc, None)
        facets = self._facets()
        draft_box: list[SearchDraft] = []

        def change(book: ChatBook) -> list[Reply]:
            state = book.state(inc.chat_id)
            if state is None or state.get("step") != step:
                return [Reply(f"That question has passed. {TRY}")]
            if step == "confirm":
                return self._finish(book, inc, state, choice == "save")
            form = dict(state.get("form") or {})
            offered = state.get("offered") or []
            if choice in ("any", "skip"):
                form.pop(step, None)
            elif choice.isdecimal() and int(choice) < len(offered):
                form[step] = offered[int(choice)]
            else:
                return [Reply(f"That question has passed. {TRY}")]
            return self._next(book, inc, {**state, "form": form}, facets, draft_box, inc.message_id)

        return self._commit(inc, change, lambda replies: self._confirmed(replies, draft_box))

    def _typed(self, inc: Incoming, state: dict[str, Any]) -> Plan:
        """The member typed the answer to a text step (keywords, the least pay)."""
        step = str(state["step"])
        text = (inc.text or "").strip()
        form = {**(state.get("form") or {}), step: text}
        try:
            parse_search(form, Facets())
        except FormError as exc:
            field = "Keywords" if step == "q" else "The pay"
            why = f"{field} {esc(exc.message, 100)}. Try again, or skip."
            return self._commit(inc, lambda book: [Reply(why)])
        draft_box: list[SearchDraft] = []
        facets = self._facets()

        def change(book: ChatBook) -> list[Reply]:
            now = book.state(inc.chat_id)
            if now is None or now.get("step") != step:
                return [Reply(HINT)]
            return self._next(book, inc, {**now, "form": form}, facets, draft_box, None)

        return self._commit(inc, change, lambda replies: self._confirmed(replies, draft_box))

    def _next(
        self,
        book: ChatBook,
        inc: Incoming,
        state: dict[str, Any],
        facets: Facets,
        draft_box: list[SearchDraft],
        edit: int | None,
    ) -> list[Reply]:
        step = STEPS[STEPS.index(state["step"]) + 1]
        state = {**state, "step": step}
        if step == "confirm":
            draft_box.append(parse_search(state["form"], Facets()))
        return [self._ask(book, inc.chat_id, state, facets, edit)]

    def _confirmed(self, replies: list[Reply], draft_box: list[SearchDraft]) -> list[Reply]:
        """The confirm step's text: the search as the member will see it, and how many
        open jobs match it now (asked after the write, outside it)."""
        if not draft_box:
            return replies
        draft = draft_box[0]
        count = self.lookup.count(draft) if self.lookup is not None else None
        matching = "" if count is None else f"\n{_matching(count.jobs, count.at_least)}"
        keyboard = [[Button("Save", "w:confirm:save"), Button("Cancel", "w:confirm:cancel")]]
        text = f"{describe(draft)}{matching}\nSave it? New jobs will be sent here."
        return [Reply(text, keyboard, r.edit) for r in replies]

    def _finish(
        self, book: ChatBook, inc: Incoming, state: dict[str, Any], save: bool
    ) -> list[Reply]:
        book.set_state(inc.chat_id, None)
        if not save:
            return [Reply("Cancelled: nothing was saved.", None, inc.message_id)]
        draft = parse_search(state.get("form") or {}, Facets())
        member_id = self._member(book, inc, create=True)
        if member_id is None:
            return [
                Reply(f"Sign up on {esc(self.spec.public_url, 200)} first.", None, inc.message_id)
            ]
        if state.get("edit"):
            if not book.edit_search(member_id, str(state["edit"]), draft):
                return [Reply("That search is gone.", None, inc.message_id)]
            return [Reply(f"Changed: {describe(draft)}", None, inc.message_id)]
        try:
            book.add_search(member_id, draft, self.spec.limits.searches_per_member)
        except LimitError:
            limit = self.spec.limits.searches_per_member
            full = f"You have {limit} searches already: /stop one first."
            return [Reply(full, None, inc.message_id)]
        saved = f"Saved: {describe(draft)}\nNew jobs that match come here."
        return [Reply(saved, None, inc.message_id)]

    def _stop_button(self, inc: Incoming, which: str) -> Plan:
        def change(book: ChatBook) -> list[Reply]:
            member_id = book.member_id(inc.chat_id)
            if member_id is None:
                return []
            searches = book.searches(member_id)
            chosen = searches if which == "all" else [s for s in searches if s.id == which]
            if not chosen:
                return [Reply("That search was already stopped.")]
            book.remove(member_id, [s.id for s in chosen])
            names = ", ".join(f"<b>{esc(s.title)}</b>" for s in chosen[:5])
            return [Reply(f"Stopped {names}: no more alerts for it.")]

        return self._commit(inc, change)


ONLY_ADMINS = "Only this group's admins may change its searches."
HINT = "Send /help to see what I can do."
TRY = "/help lists what I understand."

COMMANDS: dict[str, Callable[[Chat, Incoming], Plan]] = {
    "/start": Chat.start,
    "/help": Chat.help_command,
    "/list": Chat.list_searches,
    "/watch": Chat.watch,
    "/edit": Chat.edit,
    "/pause": Chat.pause,
    "/resume": Chat.resume,
    "/stop": Chat.stop_command,
    "/digest": Chat.digest,
    "/link": Chat.link,
    "/cancel": Chat.cancel,
}


def _offered(step: str, facets: Facets) -> list[str]:
    """A choice step's values: the API's most common first; only what fits in a button's
    64 bytes of callback data is offered by index, so any value may be offered."""
    if step == "pay_type":
        return list(PAY_TYPES)
    items = {"category": facets.categories, "language": facets.languages}.get(
        step, facets.countries
    )
    ranked = sorted(items, key=lambda pair: -pair[1])
    return [value for value, _count in ranked[:OFFERED]]


def _matching(jobs: int, at_least: bool) -> str:
    """``1 open job matches it now``, ``At least 100 open jobs match it now``."""
    verb = "matches" if jobs == 1 and not at_least else "match"
    return f"{'At least ' if at_least else ''}{plural(jobs, 'open job')} {verb} it now."


def _label(step: str, value: str) -> str:
    return PAY_NAMES.get(value, value) if step == "pay_type" else value[:40]


def _form_of(draft: SearchDraft) -> dict[str, str]:
    """A search's terms as the answers the questions collect (an /edit starts there)."""
    form = {
        k: v
        for k, v in {
            "q": draft.q,
            "category": draft.category,
            "language": draft.language,
            "country": draft.country,
            "pay_type": draft.pay_type,
        }.items()
        if v
    }
    pay = draft.filters.min_pay
    amount = None if pay is None else (pay.hourly or pay.fixed or pay.per_label)
    if amount:
        form["min_pay"] = f"{amount:g}"
    if draft.pace == "daily":
        form["pace"], form["digest_hour"] = "daily", str(draft.digest_hour or 0)
    return form
