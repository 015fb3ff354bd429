"""What members type that no bot should stumble on: stickers, files, edited and
forwarded commands, malformed updates, markup, 4,096 characters, another language; and
the bot's token, which must never reach a log."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from alertd.market import Market
from alertd.members import SearchDraft
from alertd.standin import StandInServer
from alertd.telegram.chat import parse_update
from tests.botworld import ANA, BotWorld, bot_world
from tests.fakebot import TOKEN


@pytest.fixture
def world(market: Market, standin: StandInServer, state_dir: Path) -> Iterator[BotWorld]:
    with bot_world(standin, state_dir) as world:
        yield world


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


@pytest.mark.slow
def test_odd_updates_get_a_hint_or_nothing_and_the_loop_goes_on(world: BotWorld) -> None:
    kept = world.page.members.add_feed_member(SearchDraft(title="Keep me", q="x"))
    world.page.members.telegram_update(None, lambda book: book.attach(kept.member.id, ANA))
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
    caplog.set_level("DEBUG", logger="httpx")  # alertd itself keeps httpx at WARNING
    world.say(ANA, "/help")
    assert TOKEN not in caplog.text
    assert "/bot<token>/getUpdates" in caplog.text  # httpx's own line, masked
    with httpx.Client() as client:  # the fake refuses a wrong token, as Telegram does
        assert (
            client.get(world.poller.bot.client.base_url.join("/botWRONG/getMe")).status_code == 401
        )


@pytest.mark.slow  # a chat's one reply a second, a dozen times
def test_a_command_typed_on_two_lines_or_with_odd_digits_is_understood(world: BotWorld) -> None:
    world.watch(ANA, "audio")
    world.watch(ANA, "video")
    [odd] = world.say(ANA, "/stop ²")  # a digit Python's int() cannot read
    assert "Which one?" in odd.text
    assert len(world.fake.messages(ANA)) and "/watch" in world.say(ANA, "/help")[-1].text
    [stopped] = world.say(ANA, "/stop\n1")  # a phone's keyboard put a newline in
    assert "Which one?" not in stopped.text
    [listed] = world.say(ANA, "/list")
    assert "video" in listed.text and "audio" not in listed.text
    [hour] = world.say(ANA, "/digest\t8")
    assert "08:00" in hour.text or "8:00" in hour.text
    [marked] = world.say(ANA, "/stop\u200b 1\u200f")  # zero-width space, right-to-left mark
    assert "Which one?" not in marked.text and "I do not know" not in marked.text
    [empty] = world.say(ANA, "/list")
    assert "video" not in empty.text


@pytest.mark.parametrize(
    ("typed", "command", "args"),
    [
        ("/stop\n1", "/stop", "1"),  # a phone's keyboard put a newline in
        ("/stop\u200b 1\u200f", "/stop", "1"),  # zero-width space, right-to-left mark
        ("/digest\t8", "/digest", "8"),
        ("/Stop@guild_bot  all \n", "/stop", "all"),
        ("/", "/", ""),
    ],
)
def test_a_command_is_read_whatever_whitespace_and_invisible_marks_a_keyboard_adds(
    typed: str, command: str, args: str
) -> None:
    chat = {"id": ANA, "type": "private"}
    read = parse_update({"update_id": 1, "message": {"chat": chat, "text": typed}}, "guild_bot")
    assert read is not None and (read.command, read.args) == (command, args)
