"""The pace a target wants: at once, in batches, in digests, never in quiet hours."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from datetime import time as clock_time
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from alertd.config import Config
from alertd.market import Market
from alertd.models import Alert, Job, Pace
from alertd.plan import gathered_until, plan_messages, quiet_end, release_at
from tests.conftest import RunCli, StartDaemon, WriteConfig, wait_for
from tests.webhook import WebhookCollector
from tests.world import World

BERLIN = ZoneInfo("Europe/Berlin")
# 27 Nov 2026, 10:00 in Berlin (UTC+1)
NOON = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
INSTANT = Pace()
BATCH = Pace(batch=600)
DIGEST = Pace(digest=(clock_time(8, 0), clock_time(18, 0)))
QUIET = Pace(quiet=(clock_time(22, 0), clock_time(7, 0)))


def at(hour: int, minute: int = 0, day: int = 27) -> datetime:
    """A Berlin wall-clock time on a day of November 2026, as UTC."""
    return datetime(2026, 11, day, hour, minute, tzinfo=BERLIN).astimezone(UTC)


def alerts(target: str, *created: datetime) -> list[Alert]:
    return [Alert(target, Job(id=f"{target}-{i}"), ("s",), 0, c) for i, c in enumerate(created)]


def test_a_batch_goes_out_its_length_after_the_first_alert() -> None:
    assert gathered_until(BATCH, at(10, 0), BERLIN) == at(10, 10)


@pytest.mark.parametrize(
    ("oldest", "released"),
    [
        (at(7, 59), at(8, 0)),
        (at(8, 0), at(8, 0)),
        (at(8, 1), at(18, 0)),
        (at(18, 30), at(8, 0, day=28)),
    ],
)
def test_a_digest_goes_out_at_the_next_digest_time(oldest: datetime, released: datetime) -> None:
    assert gathered_until(DIGEST, oldest, BERLIN) == released


def test_a_digest_time_is_wall_clock_time_across_a_clock_change() -> None:
    # 25 Oct 2026: Berlin goes from UTC+2 to UTC+1; 08:00 is 07:00 UTC after it
    late = datetime(2026, 10, 24, 20, 0, tzinfo=UTC)
    assert gathered_until(DIGEST, late, BERLIN) == datetime(2026, 10, 25, 7, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("now", "ends"),
    [
        (at(21, 59), None),
        (at(22, 0), at(7, 0, day=28)),
        (at(3, 0), at(7, 0)),
        (at(7, 0), None),
        (at(12, 0), None),
    ],
)
def test_quiet_hours_across_midnight(now: datetime, ends: datetime | None) -> None:
    assert quiet_end(QUIET, now, BERLIN) == ends


def test_quiet_hours_within_a_day() -> None:
    lunch = Pace(quiet=(clock_time(12, 0), clock_time(13, 30)))
    assert quiet_end(lunch, at(12, 15), BERLIN) == at(13, 30)
    assert quiet_end(lunch, at(13, 30), BERLIN) is None


def test_a_digest_inside_quiet_hours_waits_for_their_end() -> None:
    pace = Pace(digest=(clock_time(6, 0),), quiet=(clock_time(22, 0), clock_time(7, 0)))
    assert release_at(pace, at(23, 0, day=26), BERLIN) == at(7, 0)


def test_an_instant_target_gets_a_message_per_job_oldest_first() -> None:
    due = alerts("t", at(10, 5), at(10, 1), at(10, 3))
    messages, expired = plan_messages(due, {"t": INSTANT}, at(10, 6), BERLIN)
    assert [[a.created_at for a in m] for m in messages] == [[at(10, 1)], [at(10, 3)], [at(10, 5)]]
    assert expired == []


def test_a_burst_over_the_cap_is_one_summary_not_a_trickle() -> None:
    due = alerts("t", *(at(10, 0) + timedelta(seconds=i) for i in range(21)))
    messages, _ = plan_messages(due, {"t": INSTANT}, at(10, 1), BERLIN, cap=20)
    assert [len(m) for m in messages] == [21]


def test_a_batch_waits_then_goes_as_one_message_without_holding_up_others() -> None:
    due = alerts("batched", at(10, 0), at(10, 7)) + alerts("instant", at(10, 7))
    paces = {"batched": BATCH, "instant": INSTANT}
    early, _ = plan_messages(due, paces, at(10, 8), BERLIN)
    assert [[a.target_key for a in m] for m in early] == [["instant"]]
    later, _ = plan_messages(due, paces, at(10, 10), BERLIN)
    assert [[a.job.id for a in m] for m in later] == [["batched-0", "batched-1"], ["instant-0"]]


def test_quiet_hours_hold_then_release_as_one_message() -> None:
    due = alerts("t", at(23, 0, day=26), at(2, 0), at(6, 59))
    held, _ = plan_messages(due, {"t": QUIET}, at(6, 59), BERLIN)
    assert held == []
    morning, _ = plan_messages(due, {"t": QUIET}, at(7, 0), BERLIN)
    assert [len(m) for m in morning] == [3]


def test_an_expired_job_is_withdrawn_not_gathered() -> None:
    gone = Alert("t", Job(id="old", valid_through=at(9, 0)), ("s",), 0, at(8, 0))
    messages, expired = plan_messages([gone], {"t": BATCH}, at(10, 0), BERLIN)
    assert messages == [] and expired == [gone]


# -- through the cycle: a clocked market, the stand-in, a recording sender -----------


@pytest.fixture
def clocked(tmp_path: Path) -> Iterator[World]:
    """A world whose clock starts at 10:00 UTC."""
    with World(tmp_path, seed=5, start=at(10, 0)) as made:
        yield made


def paced(world: World, channels: str) -> Config:
    """One search, 'all', notifying the channel 'paced' of ``channels``, in Berlin time."""
    return world.body(
        f"timezone: Europe/Berlin\nchannels:\n{channels}searches:\n  - name: all\n"
        "    notify: [paced]\n"
    )


def test_a_batched_channel_gets_one_message_when_the_batch_ends_across_restarts(
    clocked: World,
) -> None:
    paced(clocked, "  paced: {url: 'json://127.0.0.1:9/p', batch: 10m}\n")
    send = clocked.send
    clocked.cycle()  # primes
    for minute, title in ((1, "First"), (4, "Second"), (9, "Third")):
        clocked.clock.now = at(10, minute)
        clocked.market.add_job(title=title)
        clocked.cycle()  # each cycle a new process: a restart
    assert send.messages == []  # gathering since 10:01
    clocked.cycle_at(at(10, 11))
    assert send.to("paced") == [["First", "Second", "Third"]]  # oldest first, once
    clocked.cycle()
    assert len(send.messages) == 1


def test_a_digest_goes_at_its_hour_and_quiet_hours_hold_it(clocked: World) -> None:
    channel = "  paced: {url: 'json://127.0.0.1:9/p', digest: ['18:00', '23:00'], "
    paced(clocked, channel + "quiet_hours: '22:00-07:00'}\n")
    send = clocked.send
    clocked.cycle()
    clocked.market.add_job(title="Morning job")
    clocked.cycle_at(at(10, 5))
    clocked.cycle_at(at(17, 59))
    assert send.messages == []
    clocked.cycle_at(at(18, 0))
    assert send.to("paced") == [["Morning job"]]
    clocked.market.add_job(title="Evening job")  # its digest is 23:00, inside the quiet hours
    clocked.cycle_at(at(19, 0))
    clocked.cycle_at(at(23, 30))
    assert len(send.messages) == 1
    clocked.cycle_at(at(7, 0, day=28))
    assert send.to("paced") == [["Morning job"], ["Evening job"]]


def sent_times(world: World, channels: dict[str, str]) -> dict[str, list[float]]:
    """Publish three jobs to one search notifying ``channels``; when each got its messages."""
    lines = "".join(f"  {name}: {url}\n" for name, url in channels.items())
    world.body(f"channels:\n{lines}searches:\n  - name: all\n    notify: [{', '.join(channels)}]\n")
    world.cycle()
    for i in range(3):
        world.market.add_job(title=f"Job {i}")
    world.cycle(timedelta(minutes=1))
    one_each = [["Job 0"], ["Job 1"], ["Job 2"]]  # published at one instant: any order
    for name in channels:
        assert sorted(world.send.to(name)) == one_each, name
    return {name: [t for n, t, _ in world.send.messages if n == name] for name in channels}


def test_each_service_at_its_pace_without_holding_up_the_others(clocked: World) -> None:
    times = sent_times(
        clocked,
        {"chat": "tgram://123456789:ABCdefGHIjklMNOpqr/987654321/", "hook": "json://127.0.0.1:9/h"},
    )
    chat, hook = times["chat"], times["hook"]
    assert all(b - a >= 0.95 for a, b in itertools.pairwise(chat))  # Telegram: 1 a second
    assert max(hook) < chat[1]  # the webhook was not made to wait for the chat


@pytest.mark.slow  # an end-to-end run: .ci/run runs it with -m slow
def test_alertd_run_sends_a_batch_as_one_message(
    market: Market,
    write_config: WriteConfig,
    webhook: WebhookCollector,
    start_daemon: StartDaemon,
    state_dir: Path,
) -> None:
    config = write_config(
        f"channels:\n  paced: {{url: '{webhook.url}', batch: 4s}}\n"
        "searches:\n  - name: all\n    notify: [paced]\n"
    )
    daemon = start_daemon(config)
    wait_for(lambda: (state_dir / "heartbeat.json").exists())  # primed
    market.add_job(title="One")
    time.sleep(1.2)  # a cycle apart
    market.add_job(title="Two")
    wait_for(lambda: len(webhook.received) >= 1)
    time.sleep(2.5)  # a few more cycles: nothing else goes out
    daemon.terminate()
    assert daemon.wait(timeout=15) == 0
    (message,) = webhook.received
    assert message["title"].startswith("2 new OpenTrain jobs since ")
    assert "• One " in message["message"] and "• Two " in message["message"]


def test_slack_and_a_discord_webhook_are_paced_to_their_services(clocked: World) -> None:
    times = sent_times(
        clocked,
        {
            "slack": "slack://T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ",
            "discord": "discord://4174216298/JHMHI8qBe7bk2ZwO5U711o3dV_js",
        },
    )
    slack, discord = times["slack"], times["discord"]
    assert all(b - a >= 0.95 for a, b in itertools.pairwise(slack))  # one a second
    assert all(b - a >= 0.45 for a, b in itertools.pairwise(discord))  # one a half second
    assert discord[-1] < slack[-1]  # Discord was not held to Slack's pace


def test_a_gathered_alert_counts_as_owed_from_its_release_and_status_says_so(
    clocked: World, run_cli: RunCli
) -> None:
    config = paced(clocked, "  paced: {url: 'json://127.0.0.1:9/p', digest: ['18:00']}\n")
    clocked.cycle()
    clocked.market.add_job(title="Morning job")
    gathered = clocked.cycle_at(at(10, 5))
    assert gathered.owed == 1 and clocked.send.messages == []
    assert gathered.oldest_owed == at(18, 0)  # what health measures lateness from
    status = run_cli("status", "-c", config.source).output
    assert "(gathered for its channel's batch, digest or quiet hours)" in status
    assert "next 27 Nov 2026, 18:00" in status, status
