"""A fan-out to members' chats beside the operator's own targets: a slow or failing
webhook, a stop, a member leaving mid-fan-out, and the cycle's CPU while it all waits."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from alertd.config import parse_config
from alertd.market import Market
from alertd.members import SearchDraft
from alertd.standin import StandInServer
from tests.botworld import BotWorld, bot_world
from tests.webhook import WebhookCollector


@contextmanager
def fan_out_world(
    standin: StandInServer, state_dir: Path, chats: range, operator: str = ""
) -> Iterator[BotWorld]:
    """Members each with a chat with the bot and a search for audio jobs; ``operator``:
    the YAML's own searches (appended to the bot world's config)."""
    with bot_world(standin, state_dir) as world:
        for chat in chats:
            member = world.page.members.add_feed_member(SearchDraft(title="Audio", q="audio"))
            world.page.members.telegram_update(
                None, lambda book, m=member.member.id, c=chat: book.attach(m, c)
            )
        if operator:
            text = f"api_url: {standin.url}\nstate_dir: {state_dir}\n{operator}"
            own = parse_config(text, str(state_dir.parent / "alerts.yaml"))
            world.config = replace(
                world.config,
                searches=world.config.searches + own.searches,
                targets={**world.config.targets, **own.targets},
            )
        yield world


def last_copy(world: BotWorld, chats: range, began: float) -> float:
    times = [s.at - began for chat in chats for s in world.fake.messages(chat)]
    assert len(times) == len(chats)
    return max(times)


def operator_hook(url: str, searches: int = 1) -> str:
    """The YAML's searches for audio jobs, each notifying the webhook at ``url``."""
    return "searches:\n" + "".join(
        f"  - name: ops{n}\n    q: audio\n    notify: ['{url}']\n" for n in range(searches)
    )


def fan_out_seconds(
    standin: StandInServer, state_dir: Path, market: Market, chats: range, operator: str
) -> float:
    """Seconds from the cycle's start to the last chat copy of one new job."""
    with fan_out_world(standin, state_dir, chats, operator) as world:
        world.cycle()  # primes
        market.add_job(title="Audio transcription, Spanish")
        began = time.monotonic()
        world.cycle()
        return last_copy(world, chats, began)


def test_measure_slow_webhook(market: Market, standin: StandInServer, tmp_path: Path) -> None:
    chats = range(1001, 1301)
    hook = WebhookCollector()
    try:
        base = fan_out_seconds(standin, tmp_path / "a", market, chats, "")
        hook.delay = 5.0
        slow = fan_out_seconds(standin, tmp_path / "b", market, chats, operator_hook(hook.url))
        print(f"\nwithout: {base:.2f}s  with a 5 s webhook: {slow:.2f}s  hook got {hook.attempts}")
    finally:
        hook.stop()


CHATS = range(201, 241)  # 40 chats: about a second and a half at Telegram's pace


def test_a_webhook_that_answers_late_does_not_hold_up_the_chats(
    market: Market, standin: StandInServer, state_dir: Path, webhook: WebhookCollector
) -> None:
    webhook.delay = 3.0  # the operator's webhook takes 3 s to answer each post
    with fan_out_world(standin, state_dir, CHATS, operator_hook(webhook.url)) as world:
        world.cycle()  # primes
        market.add_job(title="Audio transcription, Spanish")
        began = time.monotonic()
        world.cycle()
        assert webhook.messages() and "Audio transcription" in webhook.messages()[0]
        # 40 copies at Telegram's 30 a second: the last leaves after a second and a
        # bit; not 3 s later, when the webhook has answered.
        assert last_copy(world, CHATS, began) < 2.8
        assert world.fake.limited == 0
