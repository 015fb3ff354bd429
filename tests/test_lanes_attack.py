"""A fan-out to members' chats beside the operator's own targets: a slow or failing
webhook, a stop, a member leaving mid-fan-out, and the cycle's CPU while it all waits."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from alertd.api import OpenTrainClient
from alertd.config import parse_config
from alertd.deliver import Outcome, sender_for, with_feeds
from alertd.feeds import Feeds
from alertd.market import Market
from alertd.members import SearchDraft
from alertd.models import FEED_PREFIX, DeliveryStatus, Target
from alertd.pipeline import CycleReport, run_once
from alertd.render import Message
from alertd.standin import StandInServer
from alertd.store import Store
from tests.botworld import BotWorld, bot_world
from tests.webhook import WebhookCollector


@contextmanager
def fan_out_world(
    standin: StandInServer,
    state_dir: Path,
    chats: range,
    operator: str = "",
    members: dict[int, tuple[str, str]] | None = None,
) -> Iterator[BotWorld]:
    """Members each with a feed, a chat with the bot and a search for audio jobs (into
    ``members``: chat -> member id, search id); ``operator``: the YAML's own searches."""
    with bot_world(standin, state_dir) as world:
        for chat in chats:
            member = world.page.members.add_feed_member(SearchDraft(title="Audio", q="audio"))
            if members is not None:
                members[chat] = (member.member.id, member.search.id)
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


@dataclass
class Send:
    """One send as the cycle made it: to what, when it began and ended (monotonic)."""

    key: str
    url: str
    began: float
    ended: float
    outcome: Outcome


SLACK = "slack://T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ"  # answered here, not by Slack


def cycle(world: BotWorld, stop: threading.Event | None = None) -> tuple[CycleReport, list[Send]]:
    """One real cycle as the daemon runs it (``stop`` reaching the senders too); its
    report and every send it made. Posts to ``SLACK`` are accepted without leaving."""
    sends: list[Send] = []
    lock = threading.Lock()
    subs = world.page.server.subscriptions(world.config)
    with (
        Store.open(world.config.state_dir) as store,
        OpenTrainClient(world.page.standin.url) as client,
    ):
        inner = with_feeds(
            sender_for(10.0, world.config.tz, stop), Feeds.open(world.config.state_dir)
        )
        inner = world.poller.wrap(inner, stop=stop)

        def send(target: Target, message: Message) -> Outcome:
            began = time.monotonic()
            outcome = Outcome(True) if target.url == SLACK else inner(target, message)
            with lock:
                sends.append(Send(target.key, target.url or "", began, time.monotonic(), outcome))
            return outcome

        report = run_once(world.config, client, store, send, subscriptions=subs, stop=stop)
    return report, sends


def last_copy(world: BotWorld, chats: range, began: float) -> float:
    times = [s.at - began for chat in chats for s in world.fake.messages(chat)]
    assert len(times) == len(chats)
    return max(times)


def operator_hook(url: str, searches: int = 1) -> str:
    """The YAML's searches for audio jobs, each notifying the webhook at ``url``."""
    return "searches:\n" + "".join(
        f"  - name: ops{n}\n    q: audio\n    notify: ['{url}']\n" for n in range(searches)
    )


def fan_out(
    standin: StandInServer, state_dir: Path, market: Market, chats: range, operator: str
) -> tuple[float, float, float]:
    """One new job to ``chats``: seconds from the cycle's start to the last chat copy,
    the cycle's wall seconds and the CPU seconds of the cycle's own thread."""
    with fan_out_world(standin, state_dir, chats, operator) as world:
        cycle(world)  # primes
        market.add_job(title=f"Audio transcription {state_dir.name}")
        began, cpu = time.monotonic(), time.thread_time()
        cycle(world)
        cpu, wall = time.thread_time() - cpu, time.monotonic() - began
        return last_copy(world, chats, began), wall, cpu


@pytest.mark.slow  # 300 copies at Telegram's pace, twice: 25 s
def test_a_webhook_5_s_late_costs_a_300_chat_fan_out_nothing(
    market: Market, standin: StandInServer, tmp_path: Path, webhook: WebhookCollector
) -> None:
    chats = range(1001, 1301)
    base, wall, cpu = fan_out(standin, tmp_path / "a", market, chats, "")
    print(f"\n300 chats + feeds: last copy {base:.2f} s, cycle {wall:.2f} s, CPU {cpu:.2f} s")
    webhook.delay = 5.0
    late, wall, cpu = fan_out(standin, tmp_path / "b", market, chats, operator_hook(webhook.url))
    print(f"+ a 5 s webhook: last copy {late:.2f} s, cycle {wall:.2f} s, CPU {cpu:.2f} s")
    assert webhook.attempts == 1
    assert late - base < 1.5  # not the webhook's 5 s
    assert cpu < wall / 3  # the cycle waits; it does not spin


CHATS = range(201, 241)  # 40 chats: about a second and a half at Telegram's pace


@pytest.mark.slow  # a 3 s webhook beside a fan-out
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


def test_a_stop_mid_fan_out_records_every_send_in_flight_and_starts_none_after(
    market: Market, standin: StandInServer, state_dir: Path, webhook: WebhookCollector
) -> None:
    webhook.delay = 0.6  # the webhook's post is in flight when the stop comes
    with fan_out_world(standin, state_dir, CHATS, operator_hook(webhook.url)) as world:
        cycle(world)  # primes
        market.add_job(title="Audio transcription, Spanish")
        stop = threading.Event()
        stopped_at: list[float] = []

        def sigterm() -> None:
            stopped_at.append(time.monotonic())
            stop.set()

        threading.Timer(0.3, sigterm).start()  # within the first second's 30 copies
        report, sends = cycle(world, stop)
        assert report.stopped
        assert not [s for s in sends if s.began > stopped_at[0] + 0.05]  # none began after
        copies = sum(len(world.fake.messages(chat)) for chat in CHATS)
        assert 0 < copies < len(CHATS)
        with Store.open(world.config.state_dir) as store:
            rows = list(store.owed_rows())
            assert not [r for r in rows if r.status is DeliveryStatus.SENDING]  # all recorded
            # The rest wait, pending: the chats not reached and the feeds not yet written
            # (behind the webhook's slow answer).
            accepted = [s for s in sends if s.outcome.accepted]
            assert len(rows) == 2 * len(CHATS) + 1 - len(accepted)
            assert {r.status for r in rows} == {DeliveryStatus.PENDING}
        report, _ = cycle(world)  # after the restart: the rest, one copy each
        assert not report.stopped
        assert {c: len(world.fake.messages(c)) for c in CHATS} == dict.fromkeys(CHATS, 1)
        assert len(webhook.received) == 1 and world.fake.limited == 0


@pytest.mark.slow  # a bot world with 40 members: the file's default part stays < 10 s
def test_a_failing_webhook_gets_one_try_and_the_chats_all_theirs(
    market: Market, standin: StandInServer, state_dir: Path, webhook: WebhookCollector
) -> None:
    with fan_out_world(standin, state_dir, CHATS, operator_hook(webhook.url, 3)) as world:
        cycle(world)  # primes
        webhook.up.clear()  # 503 to every post
        for n in range(3):
            market.add_job(title=f"Audio transcription {n}")
        report, sends = cycle(world)
        hook = [s for s in sends if s.url.startswith("json://")]
        assert len(hook) == 1 and not hook[0].outcome.accepted  # the rest wait
        assert webhook.attempts == 1
        assert all(world.fake.messages(c) for c in CHATS) and report.failed_sends == 1


@pytest.mark.slow  # a bot world with 40 members: the file's default part stays < 10 s
def test_the_operators_webhook_is_not_held_up_by_a_storm_of_429s(
    market: Market, standin: StandInServer, state_dir: Path, webhook: WebhookCollector
) -> None:
    with fan_out_world(standin, state_dir, CHATS, operator_hook(webhook.url)) as world:
        cycle(world)  # primes
        market.add_job(title="Audio transcription, Spanish")
        world.fake.storm(2.0, retry_after=2)
        began = time.monotonic()
        _, sends = cycle(world)
        [hook] = [s for s in sends if s.url.startswith("json://")]
        assert hook.outcome.accepted and hook.ended - began < 1.5
        assert world.fake.limited == 0


def test_members_who_leave_mid_fan_out_get_nothing_more_in_either_lane(
    market: Market, standin: StandInServer, state_dir: Path, webhook: WebhookCollector
) -> None:
    webhook.delay = 1.0  # the feeds are written after the webhook answers
    members: dict[int, tuple[str, str]] = {}
    with fan_out_world(standin, state_dir, CHATS, operator_hook(webhook.url), members) as world:
        cycle(world)  # primes
        market.add_job(title="Audio transcription, Spanish")
        leaving: list[int] = []
        left: list[float] = []

        def unsubscribe() -> None:  # ten members not sent their copy yet leave
            leaving.extend([c for c in CHATS if not world.fake.messages(c)][:10])
            for chat in leaving:
                assert world.page.members.unsubscribe(members[chat][1])
            left.append(time.monotonic())

        threading.Timer(0.3, unsubscribe).start()
        report, sends = cycle(world)
        assert len(leaving) == 10
        gone = {members[chat][0] for chat in leaving}
        theirs = [s for s in sends if any(m in s.key for m in gone)]
        assert not [s for s in theirs if s.began > left[0] + 0.05]  # nothing after
        assert not [s for s in theirs if s.key.startswith(FEED_PREFIX)]  # behind the webhook
        assert all(world.fake.messages(c) for c in CHATS if c not in leaving)
        assert report.withdrawn == 2 * len(leaving) - len(theirs)


@pytest.mark.slow  # a bot world with 40 members: the file's default part stays < 10 s
def test_members_mail_goes_before_any_feed_is_written_beside_the_chats(
    market: Market, standin: StandInServer, state_dir: Path
) -> None:
    with fan_out_world(standin, state_dir, CHATS) as world:
        for n in range(5):  # members by mail, who signed up after the chats' members
            _, token = world.page.members.start_signup(
                f"reader{n}@example.org", SearchDraft(title="Audio", q="audio")
            )
            world.page.members.confirm(token, 10)
        cycle(world)  # primes
        market.add_job(title="Audio transcription, Spanish")
        _, sends = cycle(world)
        mails = [s for s in sends if s.url.startswith("mailto")]
        feeds = [s for s in sends if s.key.startswith(FEED_PREFIX)]
        assert len(mails) == 5 and len(feeds) >= len(CHATS)
        assert max(s.ended for s in mails) <= min(s.began for s in feeds)
        assert len(world.page.mails_to(None, 5)) >= 5
        assert all(world.fake.messages(c) for c in CHATS)


@pytest.mark.slow  # a bot world with 40 members: the file's default part stays < 10 s
def test_a_stop_while_slack_waits_its_turn_ends_the_cycle_at_once_and_nothing_spins(
    market: Market, standin: StandInServer, state_dir: Path
) -> None:
    with fan_out_world(standin, state_dir, CHATS, operator_hook(SLACK, 3)) as world:
        cycle(world)  # primes
        for n in range(3):
            market.add_job(title=f"Audio transcription {n}")
        began, cpu = time.monotonic(), time.thread_time()
        _, sends = cycle(world)  # three posts to Slack a second apart, beside the chats
        wall, cpu = time.monotonic() - began, time.thread_time() - cpu
        posts = sorted(s.began for s in sends if s.url == SLACK)
        assert len(posts) == 3 and posts[2] - posts[0] >= 2.0  # Slack's one a second
        assert cpu < wall / 3  # waiting for Slack's turn, the cycle does not spin
        for n in range(3):
            market.add_job(title=f"Audio dictation {n}")
        stop = threading.Event()
        threading.Timer(0.6, stop.set).start()  # the second post waits its turn
        began = time.monotonic()
        report, sends = cycle(world, stop)
        assert report.stopped and time.monotonic() - began < 0.6 + 0.5
        assert len([s for s in sends if s.url == SLACK]) == 1


def test_a_sender_that_raises_is_a_failed_send_with_its_traceback_logged(
    market: Market,
    standin: StandInServer,
    state_dir: Path,
    webhook: WebhookCollector,
    caplog: pytest.LogCaptureFixture,
) -> None:
    chats = range(1401, 1411)
    with fan_out_world(standin, state_dir, chats, operator_hook(webhook.url)) as world:
        cycle(world)  # primes
        market.add_job(title="Audio transcription, Catalan")
        inner = world.poller.wrap(sender_for(10.0, world.config.tz))

        def send(target: Target, message: Message) -> Outcome:
            if (target.url or "").startswith("json://"):
                raise RuntimeError("a bug in a sender")
            return inner(target, message)

        subs = world.page.server.subscriptions(world.config)
        with (
            Store.open(world.config.state_dir) as store,
            OpenTrainClient(standin.url) as client,
        ):
            report = run_once(world.config, client, store, send, subscriptions=subs)
            owed = [r for r in store.owed.values() if r.target in world.config.targets]
        assert report.failed_sends == 1 and webhook.attempts == 0
        assert all(len(world.fake.messages(chat)) == 1 for chat in chats)
    assert "a send failed unexpectedly" in caplog.text and "a bug in a sender" in caplog.text
    assert [(r.status, r.attempts) for r in owed] == [(DeliveryStatus.PENDING, 1)]  # retried
