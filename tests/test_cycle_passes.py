"""A cycle delivers what is ready before its queries and what they found after them; the
per-target cap of 20 messages is per cycle, counted over all its deliveries."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from alertd import plan
from alertd.api import OpenTrainClient
from alertd.budget import LocalWindow
from alertd.config import load_config
from alertd.deliver import Outcome
from alertd.market import Market
from alertd.models import Alert, Job, Pace, Target
from alertd.pipeline import make_client, run_once
from alertd.plan import ask_window, plan_messages
from alertd.render import Message
from alertd.standin import Fault, StandInServer
from alertd.store import Store
from tests.conftest import WriteConfig

NOW = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)


def due(count: int) -> list[Alert]:
    return [
        Alert("t", Job(id=f"j{i}"), ("s",), 0, NOW - timedelta(seconds=count - i))
        for i in range(count)
    ]


def test_what_is_left_of_the_cap_decides_between_single_messages_and_a_summary() -> None:
    fits, _ = plan_messages(due(5), {"t": Pace()}, NOW, UTC, spent={"t": 15})
    assert [len(m) for m in fits] == [1] * 5
    burst, _ = plan_messages(due(6), {"t": Pace()}, NOW, UTC, spent={"t": 15})
    assert [len(m) for m in burst] == [6]
    spent, _ = plan_messages(due(3), {"t": Pace()}, NOW, UTC, spent={"t": 20})
    assert spent == []  # the next cycle's


def test_a_tiny_poll_interval_still_leaves_a_cycle_room_to_ask() -> None:
    assert ask_window(1) == 10 and ask_window(10) == 10 and ask_window(300) == 300


class Recorder:
    """Every message sent: how many jobs it lists."""

    def __init__(self) -> None:
        self.messages: list[int] = []

    def __call__(self, target: Target, message: Message) -> Outcome:
        self.messages.append(len(message.items))
        return Outcome(True)


def test_the_cap_counts_both_deliveries_of_a_cycle(
    market: Market, standin: StandInServer, write_config: WriteConfig, state_dir: Path
) -> None:
    first = "  - name: first\n    category: Audio Annotation\n    notify: [json://127.0.0.1:9/t]\n"
    second = (
        "  - name: second\n    category: RLHF\n    notify_existing: true\n"
        "    notify: [json://127.0.0.1:9/t]\n"
    )
    send = Recorder()

    def cycle(body: str) -> None:
        config = load_config(write_config("searches:\n" + body))
        with Store.open(state_dir) as store, OpenTrainClient(standin.url) as client:
            report = run_once(config, client, store, send)
        assert report.ok and report.owed == 0, report.summary()

    cycle(first)  # primes
    for i in range(15):  # matched from the feed: the first delivery, one message each
        market.add_job(title=f"audio {i}", category="Audio Annotation")
    for i in range(10):  # found by the new search's first query: the second delivery
        market.add_job(title=f"rlhf {i}", category="RLHF")
    cycle(first + second)
    # 15 single messages, then what is left of the cap (5) cannot carry 10: one summary.
    assert send.messages == [1] * 15 + [10]


@pytest.mark.slow
def test_a_query_whose_last_try_failed_waits_for_the_others(
    standin: StandInServer, write_config: WriteConfig, state_dir: Path
) -> None:
    # The broken query comes first (by its key) and costs more than the ask window
    # (10 s): a cycle has room for it alone. Once it has failed, the next cycle asks
    # the good search's query before it.
    standin.add_fault(Fault("trickle", path="/jobs?category=A-Slow&", delay=5, count=100))
    body = (
        "request_timeout: 11s\nsearches:\n  - name: broken\n    category: A-Slow\n"
        "  - name: good\n    category: Audio Annotation\n"
    )
    config = load_config(write_config(body))
    reports = []
    for _ in range(2):
        with Store.open(state_dir) as store, make_client(config) as client:
            reports.append(run_once(config, client, store, Recorder()))
    assert reports[0].failed_searches == ["broken"] and reports[0].left_queries == 1
    assert reports[1].primed == ["good"], reports[1].summary()


def test_a_wait_for_the_budget_before_the_feed_leaves_the_ask_window_whole(
    market: Market,
    standin: StandInServer,
    write_config: WriteConfig,
    state_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The window counts from the feed's answer: a minute's wait for a budget that other
    processes spent (or whose file counts as full) must not leave a changed job unread."""
    monkeypatch.setattr(plan, "MIN_ASK_WINDOW", 1.0)
    config = load_config(write_config("poll_interval: 1\nsearches:\n  - name: all\n"))
    send = Recorder()
    with Store.open(state_dir) as store, OpenTrainClient(standin.url) as client:
        run_once(config, client, store, send)  # primes
    market.add_job(title="after a wait")
    now = time.monotonic()
    spent = LocalWindow(ended=[now - 60.5 + 2.0] * 3)  # the next slot frees in 2 s
    with (
        Store.open(state_dir) as store,
        OpenTrainClient(standin.url, requests_per_minute=3, window=spent) as client,
    ):
        report = run_once(config, client, store, send)
    assert time.monotonic() - now >= 1.5  # the feed did wait past a 1 s window
    assert send.messages == [1], report.summary()
