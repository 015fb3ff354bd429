"""Benchmark the community page at community scale, while the daemon cycles.

Run it from the repository root with the project's venv:

    python bench/page.py --members 10000

A members table of N members with one search each (N/10 distinct queries), the page
served by waitress on 127.0.0.1 as ``alertd run`` serves it, and a cycle through
``MemberSearches`` every second in another thread of the same process (one process, as
the daemon runs: the page and the cycle share its cores and its GIL). Measured with
httpx from the same machine, one request at a time: the sign-up form, the status page,
a member's manage page, and the one-click unsubscribe (a durable write of the whole
table). Markdown goes to stdout, progress to stderr. Nothing in ``alertd/`` is changed.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from alertd.api import OpenTrainClient
from alertd.community.config import CommunitySpec
from alertd.community.serve import serve_community
from alertd.config import parse_config
from alertd.deliver import sender_for
from alertd.market import Market
from alertd.members import Members
from alertd.pipeline import run_once
from alertd.standin import StandInServer
from alertd.store import Store


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def fill(members: Members, count: int) -> None:
    """``count`` confirmed members, one search each, ``count // 10`` distinct queries."""

    def change(data: dict[str, Any], now: datetime) -> None:
        for n in range(count):
            member = members._add_member(data, now, email=f"m{n}@example.org", feed=False)
            search = {
                "title": f"search {n}",
                "q": f"audio {n % max(1, count // 10)}",
                "category": None,
                "language": None,
                "country": None,
                "pay_type": None,
                "filters": {},
                "pace": "now",
                "digest_hour": None,
            }
            members._add_search(data, now, member, search, 10)

    members._write(change)


def timed(label: str, ask: Callable[[int], httpx.Response], n: int) -> dict[str, object]:
    times = []
    for i in range(n):
        started = time.perf_counter()
        answer = ask(i)
        times.append((time.perf_counter() - started) * 1000)
        assert answer.status_code in (200, 303), (label, answer.status_code)
    times.sort()
    return {"what": label, "n": n, "p50": times[n // 2], "p95": times[int(n * 0.95)]}


def run(count: int, work: Path) -> tuple[list[dict[str, object]], dict[str, float]]:
    market = Market(seed=5)
    for _ in range(500):
        market.add_job()
    server = StandInServer(market, cache_ttl=0, rate_limit=10_000).start()
    state = work / "state"
    members = Members.open(state)
    say(f"page: {count:,} members")
    fill(members, count)
    spec = CommunitySpec(
        name="Bench Guild",
        public_url="https://alerts.example.org",
        mail="mailto://127.0.0.1:9?from=alerts@example.org",
    )
    config = parse_config(
        f"api_url: {server.url}\nstate_dir: {state}\nrequests_per_minute: 120\n"
        "community: {name: Bench Guild, public_url: 'https://alerts.example.org'}\n",
        str(work / "alerts.yaml"),
    )
    page = serve_community(
        spec, members, api_url=server.url, state_dir=state, requests_per_minute=120, port=0
    )
    stop = threading.Event()
    cycles: list[float] = []
    before = 0

    def cycle_forever() -> None:
        send = sender_for(10.0, config.tz)
        with Store.open(state) as store, OpenTrainClient(server.url) as client:
            while not stop.is_set():
                started = time.process_time()
                run_once(config, client, store, send, subscriptions=page.subscriptions(config))
                cycles.append(time.process_time() - started)
                stop.wait(1.0)

    cycler = threading.Thread(target=cycle_forever, daemon=True)
    cycler.start()
    try:
        while len(cycles) < 2:  # primed: the quiet cycles run beside the page from here
            time.sleep(0.2)
        say("page: measuring while the daemon cycles")
        before = len(cycles)
        pairs = members.active()
        manage = [members.manage_token(pairs[i][0].id) for i in range(200)]
        unsub = [members.unsubscribe_token(pairs[i][1].id) for i in range(100)]
        with httpx.Client(base_url=page.url, timeout=30) as client:
            client.get("/")  # the facets, once (cached for 10 minutes)
            rows = [
                timed("GET / (sign-up form)", lambda i: client.get("/"), 300),
                timed("GET /status", lambda i: client.get("/status"), 300),
                timed("GET /m/<token> (manage page)", lambda i: client.get(f"/m/{manage[i]}"), 200),
                timed(
                    "POST /u/<token> (one-click: a durable write of the table)",
                    lambda i: client.post(f"/u/{unsub[i]}", data={"List-Unsubscribe": "One-Click"}),
                    100,
                ),
            ]
    finally:
        stop.set()
        cycler.join(30)
        page.close()
        server.stop()
    return rows, {
        "cycles": len(cycles) - before,
        "cycle_cpu_max": max(cycles[before:], default=0.0),
        "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "table_mb": (state / "members.json").stat().st_size / 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", type=int, default=10_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows, totals = run(args.members, Path(tmp))
    print(
        f"machine: {platform.platform()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}; {args.members:,} members, "
        f"members.json {totals['table_mb']:.1f} MB"
    )
    print("| request | n | p50 | p95 |")
    print("|---|---:|---:|---:|")
    for row in rows:
        print(f"| {row['what']} | {row['n']} | {row['p50']:.1f} ms | {row['p95']:.1f} ms |")
    print(
        f"\n{totals['cycles']} cycles ended while it measured (the longest took "
        f"{totals['cycle_cpu_max']:.2f} s CPU; a cycle still priming the 1,000 queries at "
        f"120 requests a minute may be running); peak RSS {totals['rss_mib']:.0f} MiB"
    )


if __name__ == "__main__":
    main()
