"""Benchmark the community's Telegram bot against the fake Bot API with Telegram's limits.

Run it from the repository root with the project's venv:

    python bench/telegram.py fanout --members 10000
    python bench/telegram.py typing --members 100
    python bench/telegram.py talking --members 100 --seconds 120

fanout: one job matching every member's search; each member is known only by their
Telegram chat (one search each, all the same query, so one fetch). A real cycle sends
through the bot's paced sender while the bot's loop runs; a member types /help every
few seconds meanwhile. Measured: from the start of the cycle that sees the job to the
last copy at the fake API (the physical minimum is members / 30 s), 429s (none should
come: the pacer keeps the limits), and how long the member typing waited for answers.
``--latency``: each send answers that many seconds late, as over a real network (the
fake is on loopback).

typing: that many members send a command in the same instant; measured: how long each
waited for the answer (the limit of 30 messages a second in all applies to replies).

talking: that many members in conversation with the bot at once for ``--seconds``, each
typing a command, reading the answer, and typing the next 2 to 10 s later (a person's
pace); measured: how long each answer took.

Markdown goes to stdout, progress to stderr. Nothing in ``alertd/`` is changed.
"""

from __future__ import annotations

import argparse
import platform
import random
import resource
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from alertd.api import OpenTrainClient
from alertd.community.config import CommunitySpec
from alertd.community.provider import MemberSearches
from alertd.config import parse_config
from alertd.deliver import sender_for, with_feeds
from alertd.feeds import Feeds
from alertd.market import Market
from alertd.members import ChatBook, Members, SearchDraft
from alertd.pipeline import run_once
from alertd.standin import StandInServer
from alertd.store import Store
from alertd.subscriptions import Subscriptions, of_config
from alertd.telegram.poll import Poller, serve_bot
from tests.fakebot import TOKEN, FakeBot, fake_bot

FIRST_CHAT = 1_000_000
WATCHER = 999  # the member who types during the fan-out


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def add_members(members: Members, count: int) -> None:
    """``count`` Telegram-only members with one search each, in one write."""

    def change(book: ChatBook) -> list[object]:
        for n in range(count):
            member_id = book.add_member(FIRST_CHAT + n, group=False)
            book.add_search(member_id, SearchDraft(title="Audio", q="audio"), limit=10)
        return []

    members.telegram_update(None, change)


def spec_for(url: str) -> CommunitySpec:
    return CommunitySpec.model_validate(
        {
            "name": "Bench Guild",
            "public_url": "https://alerts.example.org",
            "telegram": {"token": TOKEN, "api_url": url},
        }
    )


def start(members: Members, url: str) -> Poller:
    poller = serve_bot(spec_for(url), members, None, poll_timeout=1)
    assert poller is not None
    return poller


def fanout(count: int, latency: float) -> None:
    with tempfile.TemporaryDirectory() as tmp, fake_bot(latency=latency) as (fake, url):
        state = Path(tmp) / "state"
        market = Market(seed=7)
        standin = StandInServer(market, cache_ttl=0).start()
        members = Members.open(state)
        say(f"adding {count:,} members")
        add_members(members, count)
        poller = start(members, url)
        spec = spec_for(url)
        text = f"api_url: {standin.url}\nstate_dir: {state}\n"
        config = parse_config(text, str(Path(tmp) / "alerts.yaml"))
        provider = MemberSearches(members, spec)
        send = poller.wrap(with_feeds(sender_for(30.0, config.tz), Feeds.open(state)))

        def cycle() -> None:
            subs = Subscriptions.gather([of_config((), config.owner), provider])
            with Store.open(state) as store, OpenTrainClient(standin.url) as client:
                run_once(config, client, store, send, subscriptions=subs)

        say("priming")
        cycle()
        market.add_job(title="Spanish audio transcription")
        waits: list[float] = []
        done = threading.Event()
        typing = threading.Thread(target=watch, args=(fake, waits, done), daemon=True)
        say("fan-out")
        cpu = resource.getrusage(resource.RUSAGE_SELF)
        started = time.monotonic()
        typing.start()
        cycle()
        ended = time.monotonic()
        done.set()
        typing.join(10)
        used = resource.getrusage(resource.RUSAGE_SELF)
        copies = [s.at for chat, sent in fake.sent.items() if chat >= FIRST_CHAT for s in sent]
        last = max(copies) - started if copies else float("nan")
        first = min(copies) - started if copies else float("nan")
        poller.close()
        standin.stop()
        rss = used.ru_maxrss / 1024
        say(f"{len(copies):,} copies, last after {last:.1f} s")
        print(
            f"| {count:,} | {len(copies):,} | {first:.1f} s | {last:.1f} s "
            f"| {last - first:.1f} s | {count / 30:.1f} s "
            f"| {ended - started:.1f} s | {used.ru_utime - cpu.ru_utime:.1f} s "
            f"| {fake.limited} | {_spread(waits)} | {rss:.0f} MiB |"
        )


def watch(fake: FakeBot, waits: list[float], done: threading.Event) -> None:
    """A member typing /help every 5 s during the fan-out; how long each answer took."""
    while not done.wait(5.0):
        before = len(fake.messages(WATCHER))
        asked = time.monotonic()
        fake.say(WATCHER, "/help")
        if fake.wait_for(WATCHER, 1, timeout=30, after=before):
            waits.append(time.monotonic() - asked)


@contextmanager
def polling_bot(count: int) -> Iterator[FakeBot]:
    """The fake Bot API and the bot polling it, with ``count`` members, until the end."""
    with tempfile.TemporaryDirectory() as tmp, fake_bot() as (fake, url):
        members = Members.open(Path(tmp) / "state")
        add_members(members, count)
        poller = start(members, url)
        while not fake.offsets:
            time.sleep(0.01)
        try:
            yield fake
        finally:
            poller.close()


def typing(count: int) -> None:
    with polling_bot(count) as fake:
        time.sleep(0.2)
        asked = time.monotonic()
        for n in range(count):
            fake.say(FIRST_CHAT + n, "/list")
        waits = []
        for n in range(count):
            [reply] = fake.wait_for(FIRST_CHAT + n, 1, timeout=30)
            waits.append(reply.at - asked)
        within = sum(1 for w in waits if w <= 2.0)
        print(f"| {count} | {_spread(waits)} | {within} of {count} | {fake.limited} |")


COMMANDS = ("/list", "/help", "/digest 8", "/digest off", "/pause", "/resume", "/link")


def talking(count: int, seconds: float) -> None:
    with polling_bot(count) as fake:
        waits: list[float] = []
        lost = [0]
        lock = threading.Lock()
        until = time.monotonic() + seconds

        def member(chat: int, rng: random.Random) -> None:
            time.sleep(rng.uniform(0, 10))  # they did not all start in the same second
            while time.monotonic() < until:
                before = len(fake.messages(chat))
                asked = time.monotonic()
                fake.say(chat, rng.choice(COMMANDS))
                replies = fake.wait_for(chat, 1, timeout=30, after=before)
                with lock:
                    if replies:
                        waits.append(replies[0].at - asked)
                    else:
                        lost[0] += 1
                time.sleep(rng.uniform(2, 10))

        people = [
            threading.Thread(target=member, args=(FIRST_CHAT + n, random.Random(n)))
            for n in range(count)
        ]
        for person in people:
            person.start()
        for person in people:
            person.join()
        within = sum(1 for w in waits if w <= 2.0)
        print(
            f"| {count} | {seconds:.0f} s | {len(waits):,} | {len(waits) / seconds:.1f} a second "
            f"| {_spread(waits, 3)} | {within:,} of {len(waits):,} | {lost[0]} | {fake.limited} |"
        )


def _spread(waits: list[float], digits: int = 2) -> str:
    if not waits:
        return "—"
    waits = sorted(waits)
    p95 = waits[min(len(waits) - 1, round(0.95 * (len(waits) - 1)))]
    p50 = statistics.median(waits)
    return f"p50 {p50:.{digits}f} s, p95 {p95:.{digits}f} s, max {waits[-1]:.{digits}f} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=("fanout", "typing", "talking"))
    parser.add_argument("--members", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=120.0, help="talking: for how long")
    parser.add_argument(
        "--latency", type=float, default=0.0, help="seconds each send takes (a real RTT)"
    )
    args = parser.parse_args()
    say(f"{platform.python_version()} on {platform.machine()}")
    if args.mode == "fanout":
        print(
            "| members | copies | first copy | last copy | first to last | minimum (N/30) "
            "| cycle | cycle CPU | 429s "
            "| a member's /help meanwhile | peak RSS |\n"
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|"
        )
        fanout(args.members, args.latency)
    elif args.mode == "typing":
        print("| members typing | answered after | within 2 s | 429s |\n|---:|---|---:|---:|")
        typing(args.members)
    else:
        print(
            "| members talking | for | commands | rate | answered after | within 2 s "
            "| unanswered | 429s |\n|---:|---:|---:|---:|---|---:|---:|---:|"
        )
        talking(args.members, args.seconds)


if __name__ == "__main__":
    main()
