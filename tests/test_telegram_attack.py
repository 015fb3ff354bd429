"""The community bot attacked: a hostile member, a hostile group and a hostile (or
broken) Bot API server. Each test here failed before the fix it names.

The conversation is driven directly (``Chat.handle`` on the updates a getUpdates would
bring) against the fake Bot API on 127.0.0.1 (tests/fakebot.py), so each case is one
exact sequence of updates.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from alertd.community.config import CommunitySpec
from alertd.members import Members, SearchDraft
from alertd.outcome import Outcome
from alertd.render import Item, Message
from alertd.telegram import botapi
from alertd.telegram.botapi import BotApi, BotApiError
from alertd.telegram.chat import Chat
from alertd.telegram.pace import Pacer
from alertd.telegram.send import send_to_chat
from tests.fakebot import TOKEN, FakeBot, fake_bot
from tests.hostile_jobs import HOSTILE_JOBS
from tests.rawserver import RawServer

ANA, BEN = 4242, 4343
GROUP = -100777


@dataclass
class Bot:
    """The bot's side (members table, client, conversation) and the fake it talks to."""

    fake: FakeBot
    members: Members
    api: BotApi
    chat: Chat

    def update(
        self, update_id: int, chat_id: int, text: str, user: int | None = None
    ) -> dict[str, Any]:
        """A getUpdates entry: ``text`` typed in ``chat_id`` (by ``user``)."""
        message = self.fake.message(chat_id, text, user)
        return {"update_id": update_id, "message": message}

    def attach(self, chat_id: int, searches: int = 1, title: str = "s") -> str:
        """A member with ``searches`` searches, linked to ``chat_id``; their id."""
        member = self.members.add_feed_member(SearchDraft(title=f"{title}0", q="audio")).member
        for n in range(1, searches):
            self.members.add_search(member.id, SearchDraft(title=f"{title}{n}", q="audio"), 100)
        self.members.telegram_update(None, lambda book: book.attach(member.id, chat_id))
        return member.id

    def texts(self, chat_id: int) -> list[str]:
        return [m.text for m in self.fake.messages(chat_id)]


def _spec(**fields: Any) -> CommunitySpec:
    values: dict[str, Any] = {"name": "Guild", "public_url": "https://alerts.example.org"}
    return CommunitySpec.model_validate({**values, **fields})


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[FakeBot, str]]:
    """One fake Bot API for the module's tests (stopping one takes half a second)."""
    with fake_bot(chat_gap=0.0) as served:
        yield served


@pytest.fixture
def bot(state_dir: Path, served: tuple[FakeBot, str]) -> Iterator[Bot]:
    """Telegram's one message a second to a chat is left out (no case here needs it)."""
    fake, url = served
    with fake.lock:  # what the last test left
        fake.sent.clear()
        fake.updates.clear()
        fake.group_admins.clear()
        fake.__dict__.pop("_api_sendMessage", None)
    api = BotApi(TOKEN, url, Pacer(chat_gap=0.0))
    api.get_me()
    members = Members.open(state_dir)
    chat = Chat(members, api, _spec(telegram={"token": TOKEN, "api_url": url}))
    try:
        yield Bot(fake, members, api, chat)
    finally:
        chat.stop.set()
        api.close()


# -- a Bot API that answers the same update twice ------------------------------------------


def test_an_update_answered_twice_is_acted_on_once(bot: Bot) -> None:
    """A getUpdates that brings an update again (a retried long poll, a proxy replaying
    an answer, a self-hosted server after a restart) must not stop a second search."""
    member = bot.attach(ANA, searches=3)
    stop = bot.update(5000, ANA, "/stop 1")
    bot.chat.handle([stop])
    bot.chat.handle([stop])  # the same update, in the next answer
    bot.chat.handle([stop, stop])  # and twice in one answer
    assert len(bot.members.searches_of(member)) == 2
    assert len(bot.texts(ANA)) == 1


def test_an_update_older_than_the_offset_is_not_acted_on(bot: Bot) -> None:
    member = bot.attach(ANA, searches=3)
    bot.chat.handle([bot.update(7000, ANA, "/help")])
    bot.chat.handle([bot.update(6999, ANA, "/stop all")])  # out of order: already past it
    assert len(bot.members.searches_of(member)) == 3


def test_an_update_without_an_id_is_not_acted_on(bot: Bot) -> None:
    """Without an id the offset cannot move past it: acted on, it would be acted on at
    every poll (a reply a poll, for ever)."""
    member = bot.attach(ANA, searches=2)
    odd = bot.update(0, ANA, "/stop 1")
    odd["update_id"] = "5001"
    for _ in range(3):
        bot.chat.handle([odd])
    assert len(bot.members.searches_of(member)) == 2
    assert bot.texts(ANA) == []


# -- a hostile group member ------------------------------------------------------------


def test_a_groups_page_link_is_never_posted_in_the_group(bot: Bot) -> None:
    """The manage link is a key to the group's searches: posted in the group, any member
    who is no admin could change them on the page (or link them to their own chat)."""
    bot.fake.admins(GROUP, 1)
    member = bot.attach(GROUP)
    token = bot.members.manage_token(member)
    bot.chat.handle([bot.update(8000, GROUP, "/link", user=1)])  # an admin asks, in public
    said = bot.texts(GROUP)
    assert said and all(token not in text for text in said)
    assert all("/m/" not in text for text in said)


# -- 4,096 characters ------------------------------------------------------------------


def test_a_long_list_is_still_answered(state_dir: Path) -> None:
    """/list of many searches with long keywords is more than Telegram's 4,096
    characters: sent whole, Telegram refuses it and the member gets nothing."""
    with fake_bot(chat_gap=0.0) as (fake, url):
        api = BotApi(TOKEN, url, Pacer(chat_gap=0.0))
        api.get_me()
        members = Members.open(state_dir)
        spec = _spec(telegram={"token": TOKEN, "api_url": url}, limits={"searches_per_member": 40})
        bot = Bot(fake, members, api, Chat(members, api, spec))
        member = members.add_feed_member(SearchDraft(title="T" * 80, q="k" * 200)).member
        for _ in range(19):  # what Telegram counts is UTF-16 units: an emoji is two
            members.add_search(member.id, SearchDraft(title="🎧" * 80, q="🎙" * 200), 40)
        for n in range(20):
            members.add_search(member.id, SearchDraft(title=f"{n}" * 80, q="&" * 200), 40)
        members.telegram_update(None, lambda book: book.attach(member.id, ANA))
        bot.chat.handle([bot.update(9000, ANA, "/list")])
        bot.chat.handle([bot.update(9001, ANA, "/stop")])
        said = bot.texts(ANA)
        api.close()
    assert len(said) == 2
    assert said[0].startswith("Your searches:\n1. ") and "more" in said[0]


# -- /start codes ------------------------------------------------------------------------


def test_link_codes_made_again_and_again_do_not_pile_up(bot: Bot, state_dir: Path) -> None:
    """'Get it on Telegram' is a POST any member may repeat (a script: thousands an hour);
    each made a row that only a later /start ever cleared. A member has one live code:
    a new one replaces the last, and only the newest links."""
    member = bot.attach(ANA)
    codes = [bot.members.telegram_code(member) for _ in range(200)]
    table = Members.open(state_dir)._data["telegram"]
    assert len([k for k in table if k.startswith("code:")]) == 1
    bot.chat.handle([bot.update(9500, BEN, f"/start {codes[0]}")])
    assert "used or expired" in bot.texts(BEN)[-1]
    bot.chat.handle([bot.update(9501, BEN, f"/start {codes[-1]}")])
    assert "Linked" in bot.texts(BEN)[-1]
    bot.chat.handle([bot.update(9502, ANA, f"/start {codes[-1]}")])  # used up
    assert "used or expired" in bot.texts(ANA)[-1]


# -- a flood from one chat -----------------------------------------------------------------


def _replied_within(fake: FakeBot, chat_id: int, seconds: float) -> bool:
    return bool(fake.wait_for(chat_id, 1, timeout=seconds))


def test_one_chat_flooding_does_not_starve_the_others(state_dir: Path) -> None:
    """Replies go one at a time, one a second to a chat (Telegram's limit): 30 commands
    from one member kept every other member waiting half a minute. A chat gets a few
    updates acted on at once and then about one a second; the rest of a flood is not."""
    with fake_bot() as (fake, url):
        api = BotApi(TOKEN, url)  # Telegram's real pacing
        api.get_me()
        members = Members.open(state_dir)
        bot = Bot(fake, members, api, Chat(members, api, _spec()))
        flood = [bot.update(100 + n, ANA, "/help") for n in range(30)]
        group_flood = [bot.update(200 + n, GROUP, "/watch", user=5) for n in range(30)]
        ben = bot.update(300, BEN, "/help")
        worker = threading.Thread(target=bot.chat.handle, args=([*flood, *group_flood, ben],))
        started = time.monotonic()
        worker.start()
        try:
            assert _replied_within(fake, BEN, 4.0), "Ben waited behind the flood"
            took = time.monotonic() - started
            worker.join(5)
            assert members.telegram_offset() == 301  # the flood is past, not left to redo
        finally:
            bot.chat.stop.set()
            worker.join(5)
            api.close()
    assert len(fake.messages(ANA)) <= 4 and len(fake.messages(GROUP)) <= 4
    assert took < 4.0


def test_a_group_at_its_minute_limit_does_not_hold_up_the_others(state_dir: Path) -> None:
    """A group may have 20 messages a minute. Once its alerts (or a non-admin's
    commands) used them, a reply to it waited up to a minute for the group's window,
    and every other chat's reply waited behind it: such a reply is dropped."""
    with fake_bot() as (fake, url):
        api = BotApi(TOKEN, url)
        api.get_me()
        members = Members.open(state_dir)
        bot = Bot(fake, members, api, Chat(members, api, _spec()))
        for n in range(20):  # the group's alerts of this minute
            api.send(GROUP, f"alert {n}")
        updates = [bot.update(400, GROUP, "/watch", user=5), bot.update(401, BEN, "/help")]
        worker = threading.Thread(target=bot.chat.handle, args=(updates,))
        worker.start()
        try:
            assert _replied_within(fake, BEN, 4.0), "Ben waited behind the group's minute"
        finally:
            bot.chat.stop.set()
            worker.join(5)
            api.close()
    assert fake.limited == 0


# -- a hostile Bot API server ------------------------------------------------------------


def _trickle(conn: socket.socket, stop: threading.Event) -> None:
    """200 OK, and then a body that never ends: a byte every 0.1 s."""
    conn.sendall(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n"
    )
    conn.sendall(b'{"ok": true, "result": "')
    while not stop.wait(0.1):
        conn.sendall(b"a")


def test_a_bot_api_answer_that_never_ends_fails_in_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """httpx's timeouts are per read: a server trickling a byte at a time held a send
    (and its pacer slot, and the cycle waiting for it) for as long as it liked."""
    monkeypatch.setattr(botapi, "CALL_TIMEOUT", 1.0)
    server = RawServer(_trickle)
    api = BotApi(TOKEN, server.url, Pacer(chat_gap=0.0))
    failed: list[BaseException] = []

    def send() -> None:
        try:
            api.send(ANA, "an alert")
        except BaseException as exc:
            failed.append(exc)

    worker = threading.Thread(target=send, daemon=True)
    started = time.monotonic()
    worker.start()
    worker.join(4.0)
    took = time.monotonic() - started
    server.close()
    api.close()
    assert took < 4.0, "the send was still waiting for the end of the answer"
    assert len(failed) == 1 and isinstance(failed[0], BotApiError)
    assert failed[0].unknown  # it may have arrived: not sent again at once
    assert TOKEN not in str(failed[0])


def test_a_revoked_token_is_not_sent_one_request_per_member() -> None:
    """A revoked token (401) refuses every send alike: a fan-out to 10,000 members made
    10,000 requests Telegram was sure to refuse (over five minutes at 30 a second, each
    cycle). Once refused, sends fail at once for a while without asking."""
    asked: list[bytes] = []

    def revoked(conn: socket.socket, stop: threading.Event) -> None:
        body = json.dumps({"ok": False, "error_code": 401, "description": "Unauthorized"})
        asked.append(b"")
        conn.sendall(
            b"HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n{body}".encode()
        )

    server = RawServer(revoked)
    api = BotApi(TOKEN, server.url, Pacer(chat_gap=0.0))
    codes = []
    started = time.monotonic()
    for chat in range(1, 41):
        try:
            api.send(chat, "an alert")
        except BotApiError as exc:
            codes.append(exc.code)
    took = time.monotonic() - started
    server.close()
    api.close()
    assert codes == [401] * 40
    assert len(asked) <= 2
    assert took < 1.0


def test_a_send_answered_200_with_garbage_is_not_sent_again_at_once(state_dir: Path) -> None:
    """A 200 whose body is no JSON (a proxy's page, a cut answer) is a message Telegram
    most likely took: retried at the first step, the member got the alert twice."""

    def garbage(conn: socket.socket, stop: threading.Event) -> None:
        body = b"<html>upstream hiccup</html>"
        conn.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nConnection: close\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )

    server = RawServer(garbage)
    api = BotApi(TOKEN, server.url, Pacer(chat_gap=0.0))
    members = Members.open(state_dir)
    message = Message((Item(HOSTILE_JOBS[next(iter(HOSTILE_JOBS))], ("s",)),))
    outcome = send_to_chat(api, members, ANA, message, None)
    server.close()
    api.close()
    assert not outcome.accepted and outcome.unknown


def test_someone_elses_link_does_not_take_over_a_chat_without_a_tap(bot: Bot) -> None:
    """'Get it on Telegram' gives a t.me link with a code: sent to a member who already
    has searches in their chat with the bot, one tap on Start moved the chat (and their
    searches) to the sender's member, whose page and export then showed them (and the
    victim's Telegram id). A chat that is another member's moves only on a confirmation."""
    victim = bot.attach(ANA, searches=2)
    attacker = bot.members.add_feed_member(SearchDraft(title="spam", q="x")).member.id
    code = bot.members.telegram_code(attacker)
    bot.chat.handle([bot.update(9600, ANA, f"/start {code}")])
    assert bot.members.chat_of(attacker) is None
    assert len(bot.members.searches_of(victim)) == 2 and bot.members.chat_of(victim) == ANA
    [ask] = bot.fake.messages(ANA)
    assert "already gets the alerts of 2 searches" in ask.text
    bot.chat.handle([_tap(9601, ask, dict(ask.buttons())["Yes, link this chat"])])
    assert bot.members.chat_of(attacker) == ANA  # the member said yes: it moves
    assert "Linked" in bot.texts(ANA)[-1]


def _tap(update_id: int, sent: Any, data: str) -> dict[str, Any]:
    chat = {"id": sent.chat_id, "type": "private"}
    query = {
        "id": str(update_id),
        "from": {"id": sent.chat_id, "is_bot": False, "first_name": "M"},
        "message": {"message_id": sent.message_id, "chat": chat, "date": 0},
        "data": data,
    }
    return {"update_id": update_id, "callback_query": query}


def test_a_group_upgraded_to_a_supergroup_keeps_its_alerts(bot: Bot) -> None:
    """A group made a supergroup gets a new id: Telegram refuses sends to the old one
    (400, parameters.migrate_to_chat_id). Every alert of the group failed for ever."""
    member = bot.attach(GROUP)
    supergroup = -1009999
    send_message = bot.fake._api_sendMessage

    def moved(params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if int(params["chat_id"]) == GROUP:
            return 400, {
                "ok": False,
                "error_code": 400,
                "description": "Bad Request: group chat was upgraded to a supergroup chat",
                "parameters": {"migrate_to_chat_id": supergroup},
            }
        return send_message(params)

    bot.fake._api_sendMessage = moved  # type: ignore[method-assign]
    message = Message((Item(HOSTILE_JOBS[next(iter(HOSTILE_JOBS))], ("s",)),))
    outcome = send_to_chat(bot.api, bot.members, GROUP, message, None)
    assert outcome.accepted
    assert len(bot.fake.messages(supergroup)) == 1
    assert bot.members.chat_of(member) == supergroup


@pytest.mark.parametrize("result", [["odd"], {"message_id": "x"}, "sent", None])
def test_a_send_taken_with_an_odd_result_is_recorded_as_sent(bot: Bot, result: object) -> None:
    """Telegram said ok: the message is in the chat, whatever the result looks like. A
    result that was no message object raised in the sending thread, so the alert counted
    as failed and was sent again at the next step."""
    send_message = bot.fake._api_sendMessage

    def odd(params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        send_message(params)
        return 200, {"ok": True, "result": result}

    bot.fake._api_sendMessage = odd  # type: ignore[method-assign]
    message = Message((Item(HOSTILE_JOBS[next(iter(HOSTILE_JOBS))], ("s",)),))
    try:
        outcome = send_to_chat(bot.api, bot.members, ANA, message, None)
    except Exception as exc:  # what the cycle's sending thread would record as a failure
        outcome = Outcome(False, type(exc).__name__)
    assert outcome.accepted


def test_blocking_the_bot_does_not_stop_a_members_e_mail(bot: Bot) -> None:
    """A member with e-mail alerts who also linked their chat, then blocked the bot,
    had every search paused: their e-mail stopped too. Their chat is let go instead;
    a member known only by their chat still has their searches paused."""
    _pending, token = bot.members.start_signup("ana@example.org", SearchDraft(title="a", q="x"))
    ana = bot.members.confirm(token, 10).member.id
    bot.members.telegram_update(None, lambda book: book.attach(ana, ANA))
    ben = bot.attach(BEN)  # Telegram only
    bot.fake.block(ANA)
    bot.fake.block(BEN)
    message = Message((Item(HOSTILE_JOBS[next(iter(HOSTILE_JOBS))], ("s",)),))
    try:
        for chat in (ANA, BEN):
            assert send_to_chat(bot.api, bot.members, chat, message, None).permanent
    finally:
        bot.fake.blocked.clear()
    assert [s.paused for s in bot.members.searches_of(ana)] == [False]
    assert bot.members.chat_of(ana) is None  # no more sends to a chat that refuses them
    assert [s.paused for s in bot.members.searches_of(ben)] == [True]


ANONYMOUS = 1087968824  # @GroupAnonymousBot: the "from" of an admin who posts as the group


def test_an_anonymous_admin_may_change_the_groups_searches(bot: Bot) -> None:
    """An admin who posts anonymously comes as @GroupAnonymousBot with the group itself
    as sender_chat; getChatMember says that bot is no admin, so such a group could not
    change its searches at all. A channel posting in the group is still nobody."""
    bot.fake.admins(GROUP, 1)
    member = bot.attach(GROUP, searches=2)
    as_group = bot.update(9700, GROUP, "/stop 1", user=ANONYMOUS)
    as_group["message"]["sender_chat"] = {"id": GROUP, "type": "supergroup"}
    as_channel = bot.update(9701, GROUP, "/stop 1", user=136817688)  # @Channel_Bot
    as_channel["message"]["sender_chat"] = {"id": -100555, "type": "channel"}
    bot.chat.handle([as_group])
    bot.chat.handle([as_channel])
    assert len(bot.members.searches_of(member)) == 1
    said = bot.texts(GROUP)
    assert "Stopped 1" in said[0] and "Only this group's admins" in said[1]
